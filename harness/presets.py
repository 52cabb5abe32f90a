"""The agents ``cbdsl agent run --agent`` knows by name, and how any agent command is filled in.

An agent is a shell command template run in the sandbox with these placeholders (shell-quoted):
``{prompt_file}`` (the turn's prompt: the protocol, the latest feedback, what to do now), ``{sandbox}``,
``{iteration}`` (the next iteration's number), ``{submissions}`` (how many submissions this process is to
make: 1 a turn, or all that are left in one session), ``{max_turns}`` (the agent's own turn limit),
``{seed}`` (the run's seed: an experiment cell's) and ``{python}`` (this interpreter, so
``{python} -m cbdsl`` is the cbdsl that runs the harness).

The presets' flags are those of the agents' headless documentation (looked up in December 2026):

- Claude Code: ``claude -p PROMPT --output-format stream-json --verbose`` streams one JSON event per
  message, then a ``result`` event with ``usage``, ``total_cost_usd`` and ``num_turns``; ``--max-turns``
  bounds its turns and ``--permission-mode acceptEdits --allowedTools`` lets it edit and run cbdsl without
  asking.
- Codex: ``codex exec --json`` streams JSONL events (``turn.completed`` carries ``usage``);
  ``--full-auto`` allows edits in the workspace; ``-C`` sets it; ``-`` reads the prompt from stdin.
- OpenHands: ``openhands --headless --json -f FILE`` runs a task file with JSONL events (headless mode
  always approves its actions).
- ``search``: cbdsl's own search baseline (:mod:`cbdsl.research.search`), as one more agent.
- ``scripted``: :mod:`cbdsl.harness.scripted_agent`, a fixed plan of published methods, no model.

None of the three agent CLIs is installed where cbdsl is tested; their presets are exercised only as
command lines (tests/test_agent_run.py), and the programs under ``tests/agents/`` stand in for agents.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass

PLACEHOLDERS = ("prompt_file", "sandbox", "iteration", "submissions", "max_turns", "seed", "python")


class AgentError(Exception):
    """The agent cannot be started as given (an unknown name, a bad template); the message says the fix."""


@dataclass(frozen=True)
class Agent:
    """An agent: its name, its command template, and how its stdout reports usage (:mod:`.usage`)."""

    name: str
    template: str
    events: str = "generic"  # "claude", "codex", "openhands", "generic" (a final `result` event) or "none"


PRESETS: dict[str, Agent] = {
    "claude": Agent("claude", 'claude -p "$(cat {prompt_file})" --output-format stream-json --verbose '
                              '--max-turns {max_turns} --permission-mode acceptEdits '
                              '--allowedTools "Bash(cbdsl:*)" Read Edit Write', "claude"),
    "codex": Agent("codex", "codex exec --json --full-auto --skip-git-repo-check -C {sandbox} - < {prompt_file}",
                   "codex"),
    "openhands": Agent("openhands", "openhands --headless --json -f {prompt_file}", "openhands"),
    # search draws from (seed, strategy, ledger position): one seed for the whole run, as one `cbdsl search` would
    "search": Agent("search", "{python} -m cbdsl search --iterations {submissions} --seed {seed}", "none"),
    "scripted": Agent("scripted", "{python} -m cbdsl.harness.scripted_agent {prompt_file}", "generic"),
}


def resolve(agent: str) -> Agent:
    """A preset by name, else ``agent`` itself as a command template (its events read generically)."""
    if agent in PRESETS:
        return PRESETS[agent]
    if not agent.strip():
        raise AgentError("--agent is empty: name a preset (" + ", ".join(PRESETS) + ") or give a command")
    if " " not in agent.strip() and "{" not in agent:
        raise AgentError(f"unknown agent {agent!r}: name a preset ({', '.join(PRESETS)}) or give a command "
                         "template, e.g. --agent \"my-agent --task {prompt_file}\"")
    return Agent("command", agent)


def render(agent: Agent, **values: object) -> str:
    """The agent's command line with every placeholder filled (shell-quoted); a clear error for a bad one."""
    quoted = {k: shlex.quote(str(v)) for k, v in values.items()}
    quoted.setdefault("python", shlex.quote(sys.executable))
    try:
        return agent.template.format(**quoted)
    except KeyError as err:
        raise AgentError(f"the agent command has an unknown placeholder {{{err.args[0]}}}; the placeholders are "
                         + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS) + " (write {{ and }} for literal braces)") \
            from None
    except (ValueError, IndexError) as err:
        raise AgentError(f"the agent command's braces do not parse ({err}); write {{{{ and }}}} for literal "
                         "braces") from None
