"""Train/eval backends: one protocol, chosen in ``cbdsl.toml``.

A backend takes a selection (exported in the format it reads) and returns
metrics: ``{"benchmarks": {name: score, ...}, "aggregate": float}``, higher
is better. ``suite`` names the versioned recipe and evaluation suite:
results of different suites are never compared.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Protocol


class BackendError(Exception):
    """The backend failed (a crash, a timeout, unreadable metrics); the message says where to look."""


@dataclass(frozen=True)
class Job:
    """What a backend gets: the selection, where it was exported, where to work."""

    pool: Any  # cbdsl.pipelines.pool.Pool
    selection: Any  # polars DataFrame: id, group, score, rank
    export_dir: Path
    workdir: Path
    log: Callable[[str], None] = print


class Backend(Protocol):
    name: str
    format: str  # the export format it reads

    @property
    def suite(self) -> str: ...

    def run(self, job: Job) -> dict[str, Any]: ...


def make_backend(name: str, settings: dict[str, Any]) -> Backend:
    """The backend ``name`` with its ``[backend.NAME]`` settings; an unknown setting is a clear error."""
    if name == "mini":
        from cbdsl.pipelines.backends.mini import MiniBackend as cls
    elif name == "command":
        from cbdsl.pipelines.backends.command import CommandBackend as cls
    elif name == "ray":
        from cbdsl.pipelines.backends.ray_job import RayBackend as cls
    else:
        raise BackendError(f"unknown backend {name!r}: choose mini, command or ray in cbdsl.toml")
    known = [f.name for f in fields(cls) if f.name != "name"]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise BackendError(f"[backend.{name}] in cbdsl.toml has unknown setting(s) {', '.join(unknown)}; "
                           f"its settings are {', '.join(known)}")
    return cls(**settings)


def check_metrics(metrics: Any, where: str) -> dict[str, Any]:
    """Metrics as the ledger stores them; a clear error naming ``where`` otherwise."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("benchmarks"), dict):
        raise BackendError(f"{where}: metrics must be a JSON object with a `benchmarks` object of name -> number")
    benchmarks = {}
    for k, v in metrics["benchmarks"].items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise BackendError(f"{where}: benchmark {k!r} has a non-numeric score {v!r}")
        benchmarks[str(k)] = float(v)
    if not benchmarks:
        raise BackendError(f"{where}: no benchmark scores")
    aggregate = metrics.get("aggregate")
    if aggregate is None:
        aggregate = sum(benchmarks.values()) / len(benchmarks)
    return {**metrics, "benchmarks": benchmarks, "aggregate": float(aggregate)}
