"""What every backend shares: the job it gets, the error it raises, the metrics it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol


class BackendError(Exception):
    """The backend failed (a crash, a timeout, unreadable metrics); the message says where to look."""


@dataclass(frozen=True)
class Job:
    """What a backend gets: the selection, where it was exported, where to work, and where a program it runs
    writes the suite's test part (``test_metrics``: a file outside the sandbox; None: no test part wanted)."""

    pool: Any  # cbdsl.pipelines.data.pool.Pool
    selection: Any  # polars DataFrame: id, group, score, rank
    export_dir: Path
    workdir: Path
    log: Callable[[str], None] = print
    test_metrics: Path | None = None


class Backend(Protocol):
    name: str
    format: str  # the export format it reads

    @property
    def suite(self) -> str: ...

    @property
    def has_test_part(self) -> bool: ...  # whether run() returns a ``test`` part (or its program writes one)

    def run(self, job: Job) -> dict[str, Any]: ...


def check_metrics(metrics: Any, where: str) -> dict[str, Any]:
    """Metrics as the ledger stores them; a clear error naming ``where`` otherwise. An optional ``test``
    object (the suite's test part, :func:`split_test`) has the same shape and is checked the same way."""
    metrics = _checked_scores(metrics, where)
    if "test" in metrics:
        metrics["test"] = _checked_scores(metrics["test"], f"{where} (its `test` object)")
    return metrics


def _checked_scores(metrics: Any, where: str) -> dict[str, Any]:
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
    elif not isinstance(aggregate, (int, float)) or isinstance(aggregate, bool):
        raise BackendError(f"{where}: the aggregate {aggregate!r} is not a number")
    return {**metrics, "benchmarks": benchmarks, "aggregate": float(aggregate)}


def split_test(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the dev metrics the ledger and the agent see, the test part's scores or None): the test scores go to
    the researcher's record (:mod:`~cbdsl.pipelines.loop.test_scores`) and nowhere in the sandbox."""
    dev = dict(metrics)
    return dev, dev.pop("test", None)


def scores(benchmarks: dict[str, float]) -> dict[str, Any]:
    """A suite part's metrics: its benchmarks and their mean (numpy's, as the embedded backends always took it)."""
    import numpy as np

    return {"benchmarks": benchmarks, "aggregate": float(np.mean(list(benchmarks.values())))}


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
    def has_test_part(self) -> bool:
        return self.test_rows > 0  # type: ignore[attr-defined]

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

