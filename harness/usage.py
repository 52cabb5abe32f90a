"""What an agent says about its own use: turns, tokens and cost, read from the JSON events it prints.

Each agent reports differently, so each has a reader; all feed one :class:`Usage`, updated event by event
so that the runner can stop an agent the moment it passes a turn or token limit:

- ``claude`` (stream-json): every ``assistant`` event is a model turn with ``message.usage``; the final
  ``result`` event gives the totals (``usage``, ``total_cost_usd``, ``num_turns``), which replace the
  running sums.
- ``codex`` (``exec --json``): each ``turn.completed`` event carries that turn's ``usage``
  (``input_tokens``, ``cached_input_tokens``, ``output_tokens``).
- ``openhands`` (``--json``): events may carry cumulative ``llm_metrics`` (``accumulated_cost``,
  ``accumulated_token_usage`` with ``prompt_tokens``/``completion_tokens``); the last one is the total.
- ``generic``: a ``result`` event as Claude Code's (what :mod:`.scripted_agent` prints).
- ``none``: the agent reports nothing (``cbdsl search``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Usage:
    """Totals so far; None where the agent has not said."""

    turns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    events: int = 0

    @property
    def tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tokens": self.tokens}

    def update(self, kind: str, event: Any) -> None:
        """Read one JSON event of an agent whose events are of ``kind``."""
        if not isinstance(event, dict):
            return
        self.events += 1
        READERS.get(kind, _nothing)(self, event)

    def _add(self, usage: Any, input_keys=("input_tokens",), output_keys=("output_tokens",)) -> None:
        if not isinstance(usage, dict):
            return
        self.input_tokens = (self.input_tokens or 0) + sum(_int(usage.get(k)) for k in input_keys)
        self.output_tokens = (self.output_tokens or 0) + _int(next((usage[k] for k in output_keys if k in usage), 0))

    def _set(self, usage: Any, input_keys, output_keys) -> None:
        if isinstance(usage, dict):
            self.input_tokens = self.output_tokens = None
            self._add(usage, input_keys, output_keys)


CLAUDE_INPUT = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _claude(u: Usage, event: dict) -> None:
    if event.get("type") == "assistant":
        u.turns = (u.turns or 0) + 1
        u._add((event.get("message") or {}).get("usage"), CLAUDE_INPUT)
    elif event.get("type") == "result":
        _result(u, event, CLAUDE_INPUT)


def _codex(u: Usage, event: dict) -> None:
    if event.get("type") == "turn.completed":
        u.turns = (u.turns or 0) + 1
        u._add(event.get("usage"), ("input_tokens",))  # cached_input_tokens are part of input_tokens


def _openhands(u: Usage, event: dict) -> None:
    metrics = event.get("llm_metrics") or (event.get("metrics") if isinstance(event.get("metrics"), dict) else None)
    if not isinstance(metrics, dict):
        return
    if isinstance(metrics.get("accumulated_cost"), (int, float)):
        u.cost_usd = float(metrics["accumulated_cost"])
    u._set(metrics.get("accumulated_token_usage"), ("prompt_tokens",), ("completion_tokens",))


def _generic(u: Usage, event: dict) -> None:
    if event.get("type") == "result":
        _result(u, event, ("input_tokens",))


def _result(u: Usage, event: dict, input_keys) -> None:
    if isinstance(event.get("num_turns"), int):
        u.turns = event["num_turns"]
    if isinstance(event.get("total_cost_usd"), (int, float)):
        u.cost_usd = float(event["total_cost_usd"])
    u._set(event.get("usage"), input_keys, ("output_tokens",))


def _nothing(u: Usage, event: dict) -> None:
    pass


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


READERS = {"claude": _claude, "codex": _codex, "openhands": _openhands, "generic": _generic, "none": _nothing}
