"""What every backend shares: the job it gets, the error it raises, the metrics it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol


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


class RecipeSettings:
    """What the embedded backends (mini, mini-vlm) share: ``[backend.NAME]`` settings are their recipe's
    fields, flat (``seed = 1``, ``steps = 500``), then the backend's other fields; the dataclass using it has
    a ``recipe`` field and names its default recipe in ``RECIPE``."""

    RECIPE: ClassVar[Any]
    #: The aggregate's seed std of the default recipe (what the validity benchmark measured, pooled over its
    #: arms), and where it was measured; None: not calibrated.
    SEED_STD: ClassVar[float | None] = None
    SEED_STD_SOURCE: ClassVar[str] = ""

    @property
    def seed_std(self) -> float | None:
        """The calibrated seed std when this backend runs the default recipe (any seed), else None: a changed
        recipe has a noise nobody measured."""
        calibrated = type(self).from_settings(seed=self.recipe.seed, format=self.format)  # type: ignore[attr-defined]
        return self.SEED_STD if self == calibrated else None

    @classmethod
    def settings(cls) -> dict[str, Any]:
        """The settings and their defaults: the recipe's fields, then the others but ``recipe`` and ``name``."""
        own = {f.name: f.default for f in fields(cls) if f.name not in ("recipe", "name")}  # type: ignore[arg-type]
        return {**asdict(cls.RECIPE), **own}

    @classmethod
    def from_settings(cls, **settings: Any):
        """The backend of flat settings: ``Backend.from_settings(seed=1, eval_rows=200)``."""
        recipe = {k: settings.pop(k) for k in [f.name for f in fields(cls.RECIPE)] if k in settings}
        return cls(replace(cls.RECIPE, **recipe), **settings)  # type: ignore[call-arg]

