"""The harness around the loop: ``cbdsl agent run`` drives a coding agent through a sandbox's iterations
(:mod:`.runner`, its agents in :mod:`.presets`, what an agent reports in :mod:`.usage`, what it is told in
:mod:`.prompt`), and :mod:`.scripted_agent` is an agent without a model that follows a fixed plan."""
