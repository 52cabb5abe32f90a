"""What an agent is told each turn: the protocol, what to do now, and the latest feedback.

The prompt holds nothing the sandbox does not: PROTOCOL.md as ``cbdsl init`` wrote it (the rules of the
scaffold), the number of submissions this process is to make, and the feedback of the ledger's latest
finished entry as ``cbdsl submit --json`` gives it (dev scores only: the test part never reaches an agent).
"""

from __future__ import annotations

import json
from typing import Any

PROTECTED = ("cbdsl.toml", "PROTOCOL.md", "POOL.md", "METHODS.md", "AGENTS.md", "CLAUDE.md")
"""The files (and the ``skills/`` folder) an agent must not change: the runner restores them after a turn."""


def submit_line(scaffold: str) -> str:
    if scaffold == "research":
        return ('cbdsl submit --observation "what the feedback shows" --hypothesis "what you expect and why" '
                '--change "the minimal change that tests it"')
    return 'cbdsl submit -m "what you changed and why"'


def compose(cfg, *, turn: int, submissions: int, left: int, protocol: str, feedback: dict[str, Any] | None) -> str:
    """The prompt of ``turn``: ``submissions`` to make now, ``left`` iterations in all."""
    plural = "submission" if submissions == 1 else "submissions"
    lines = [
        f"# Turn {turn} of a cbdsl curation run", "",
        f"You work in the sandbox {cfg.root} (your working directory). Its protocol follows; AGENTS.md, "
        "METHODS.md, POOL.md and skills/ say more.", "",
        "## What to do now", "",
        f"Make **{submissions} {plural}** now, then stop: edit `policy.cur`, check it (`cbdsl check policy.cur`), "
        f"`cbdsl compile policy.cur`, then `{submit_line(cfg.scaffold)}`. {left} scored iterations are left in "
        "this run. A refused submission uses none: read its message, fix the policy and submit again.", "",
        "Do not edit cbdsl.toml, PROTOCOL.md, POOL.md, METHODS.md, AGENTS.md, CLAUDE.md, skills/ or anything "
        "under .cbdsl/: the runner restores those files and records the change against this run.", "",
        "## Latest feedback", "",
    ]
    if feedback is None:
        lines += ["No submission yet: your first submit also scores the baseline (a random selection of the "
                  "budget), iteration 0.", ""]
    else:
        lines += ["```json", json.dumps(feedback, indent=2, default=str), "```", ""]
    return "\n".join(lines) + "\n" + protocol
