"""What every backend shares: the job it gets, the error it raises, the metrics it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol


class BackendError(Exception):
    """The backend failed (a crash, a timeout, unreadable metrics); the message says where to look."""


@dataclass(frozen=True)
class Job:
    """What a backend gets: the selection, where it was exported, where to work."""

    pool: Any  # cbdsl.pipelines.data.pool.Pool
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
