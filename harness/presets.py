"""The agents ``cbdsl agent run --agent`` knows by name, and how any agent command is filled in.

An agent is a shell command template run in the sandbox with these placeholders (shell-quoted):
``{prompt_file}`` (the turn's prompt: the protocol, the latest feedback, what to do now), ``{sandbox}``,
``{iteration}`` (the next iteration's number), ``{submissions}`` (how many submissions this process is to
make: 1 a turn, or all that are left in one session), ``{max_turns}`` (the agent's own turn limit),
``{seed}`` (the run's seed: an experiment cell's), ``{python}`` (this interpreter, so
``{python} -m cbdsl`` is the cbdsl that runs the harness), and ``{cbdsl_home}`` and ``{witness_dir}``
(the folders outside the sandbox that ``cbdsl submit`` writes: caches and models, the ledger's witness and
the test scores; an agent that confines its commands' writes must allow these).

The presets' flags are those of the agents' headless documentation (looked up in December 2026):

- Claude Code (2.1.337): ``claude -p PROMPT --output-format stream-json --verbose`` streams one JSON event per
  message, then a ``result`` event with ``usage``, ``total_cost_usd`` and ``num_turns``; ``--max-turns``
  bounds its turns and ``--permission-mode acceptEdits --allowedTools`` lets it edit and run cbdsl without
  asking.
- Codex (0.171): ``codex exec --json`` streams JSONL events (``turn.completed`` carries ``usage``);
  ``--sandbox workspace-write`` lets its commands write only in the workspace (``-C``) and /tmp, so
  ``--add-dir`` adds the two folders ``cbdsl submit`` writes outside it (which the agent's own commands may
  then write too: run it as a user that owns nothing else there); ``-c allow_login_shell=false`` keeps the
  runner's ``PATH`` (a login shell resets it and ``cbdsl`` is not found); ``-`` reads the prompt from stdin.
  ``--full-auto`` of earlier versions is gone: 0.171 refuses it.
- OpenHands: ``openhands --headless --json -f FILE`` runs a task file with JSONL events (headless mode
  always approves its actions).
- ``search``: cbdsl's own search baseline (:mod:`cbdsl.research.search`), as one more agent.
- ``scripted``: :mod:`cbdsl.harness.scripted_agent`, a fixed plan of published methods, no model.

``scripts/install_agents.sh`` installs Claude Code and Codex from npm into ``$CBDSL_HOME/agents`` (pinned
versions), which the runner puts on the agent's ``PATH``. Both run in the tests against a local stand-in
for their model APIs (tests/agents/model_api.py, tests/test_agent_run.py); OpenHands (not on this
machine's package index) is exercised as a command line only, and the programs under ``tests/agents/``
stand in for agents.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from cbdsl.home import home
from cbdsl.pipelines.loop.witness import witness_dir

PLACEHOLDERS = ("prompt_file", "sandbox", "iteration", "submissions", "max_turns", "seed", "python", "cbdsl_home",
                "witness_dir")


class AgentError(Exception):
    """The agent cannot be started as given (an unknown name, a bad template); the message says the fix."""


@dataclass(frozen=True)
class Agent:
    """An agent: its name, its command template, and how its stdout reports usage (:mod:`.usage`)."""

    name: str
    template: str
    events: str = "generic"  # "claude", "codex", "openhands", "generic" (a final `result` event) or "none"
    program: str | None = None  # the executable a preset needs on PATH, checked before the first turn
    install: str = ""  # how to get it


PRESETS: dict[str, Agent] = {
    "claude": Agent("claude", 'claude -p "$(cat {prompt_file})" --output-format stream-json --verbose '
                              '--max-turns {max_turns} --permission-mode acceptEdits '
                              '--allowedTools "Bash(cbdsl:*)" Read Edit Write', "claude", "claude",
                    "scripts/install_agents.sh (or npm install -g @anthropic-ai/claude-code)"),
    "codex": Agent("codex", "codex exec --json --sandbox workspace-write --add-dir {witness_dir} "
                            "--add-dir {cbdsl_home} -c allow_login_shell=false --skip-git-repo-check -C {sandbox} "
                            "- < {prompt_file}",
                   "codex", "codex", "scripts/install_agents.sh (or npm install -g @openai/codex)"),
    "openhands": Agent("openhands", "openhands --headless --json -f {prompt_file}", "openhands", "openhands",
                       "OpenHands' CLI (docs.openhands.dev: uv tool install openhands)"),
    # search draws from (seed, strategy, ledger position): one seed for the whole run, as one `cbdsl search` would
    "search": Agent("search", "{python} -m cbdsl search --iterations {submissions} --seed {seed}", "none"),
    "scripted": Agent("scripted", "{python} -m cbdsl.harness.scripted_agent {prompt_file}", "generic"),
}


def agents_bin() -> Path:
    """Where ``scripts/install_agents.sh`` puts the agent CLIs' executables."""
    return home() / "agents" / "node_modules" / ".bin"


def agent_path() -> str:
    """The agent's ``PATH``: this cbdsl's interpreter folder first, then the installed agent CLIs, then the rest."""
    return os.pathsep.join([str(Path(sys.executable).parent), str(agents_bin()), os.environ.get("PATH", "")])


def outside_folders() -> tuple[Path, Path]:
    """``{cbdsl_home}`` and ``{witness_dir}``: where ``cbdsl submit`` writes outside the sandbox."""
    return home(), witness_dir()


def check_installed(agent: Agent) -> None:
    """AgentError with the install command when a preset's program is not on the agent's ``PATH``."""
    if agent.program and shutil.which(agent.program, path=agent_path()) is None:
        raise AgentError(f"the {agent.name} preset runs `{agent.program}`, which is not installed (not on PATH "
                         f"nor in {agents_bin()}): install it with {agent.install}, or give --agent a command")


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
    for name, folder in zip(("cbdsl_home", "witness_dir"), outside_folders()):
        quoted.setdefault(name, shlex.quote(str(folder)))
    try:
        return agent.template.format(**quoted)
    except KeyError as err:
        raise AgentError(f"the agent command has an unknown placeholder {{{err.args[0]}}}; the placeholders are "
                         + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS) + " (write {{ and }} for literal braces)") \
            from None
    except (ValueError, IndexError) as err:
        raise AgentError(f"the agent command's braces do not parse ({err}); write {{{{ and }}}} for literal "
                         "braces") from None
