"""A snapshot of every compiler stage for every example (PRQL's snapshots per stage; Polars' ``explain()``).

For each ``examples/<name>.cur``, compiled stage by stage through the public API
(``cbdsl.parse``, ``resolve``, ``plan``, ``optimize``, ``lower``):

- ``tests/golden/typed/<name>.txt``: the typed AST (:func:`cbdsl.compiler.typed.typed_text`);
- ``tests/golden/plan/<name>.txt``: the plan before the optimizer
  (:func:`cbdsl.pipelines.engine.execute.plan_text`: the lines ``cbdsl compile`` prints, each step with its expressions);
- ``tests/golden/optimized/<name>.txt``: the plan after :func:`cbdsl.optimize`;
- ``tests/golden/lowered/<name>.txt``: ``LazyFrame.explain()`` of the query a run collects
  (:func:`cbdsl.pipelines.engine.execute.query`) over an empty frame of the pool's columns and dtypes, each model
  score a typed null column: no scorer runs and no file is read, so the text depends only on the policy,
  the schema and the Polars version (lines are kept without Polars' trailing spaces).

The pool: the one the example tests build (``conftest_pools.pools_dir``: ``demo``, ``datacomp-small``,
``llava-665k``, ``demo-it``) when the example checks against it; else a stand-in, the columns the policy reads typed by
:data:`STAND_IN` (the other pools are not available offline, and the test pools lack some columns, such as
DataComp's images). The first line of each snapshot says which. After an intended change, regenerate with

    CBDSL_UPDATE_GOLDENS=1 .venv/bin/python -m pytest -q tests/test_stage_goldens.py

and review the diff like code.
"""

from __future__ import annotations

import dataclasses
import doctest
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl
import pytest

import cbdsl
from cbdsl.compiler.typed import typed_text
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import PolicyError
from cbdsl.pipelines.data.columns import type_name
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.roots import resolve_pool
from cbdsl.pipelines.engine.execute import plan_text, query
from cbdsl.scorers.registry import Registry, registry
from conftest_pools import ROOT, asset_reader, pools_dir  # noqa: F401 (fixtures)

EXAMPLES = sorted((ROOT / "examples").glob("*.cur"))
GOLDEN = ROOT / "tests" / "golden"
STAGES = ("typed", "plan", "optimized", "lowered")
UPDATE = os.environ.get("CBDSL_UPDATE_GOLDENS") == "1"

#: Column dtypes of the stand-in pools (a column the examples read, as its usual pool stores it).
STAND_IN: dict[str, pl.DataType] = {
    "id": pl.String(), "text": pl.String(), "question": pl.String(), "answer": pl.String(), "image": pl.Binary(),
    "width": pl.Int64(), "height": pl.Int64(), "source": pl.String(), "label": pl.Int64(), "emb": pl.Array(pl.Float32, 512),
    "l14_img": pl.Array(pl.Float32, 768), "clip_l14_similarity_score": pl.Float64(),
}
#: The dtype of a model score's stand-in column, by the scorer's output type.
SCORE_DTYPES: dict[str, pl.DataType] = {
    "float": pl.Float64(), "int": pl.Int64(), "str": pl.String(), "bool": pl.Boolean(),
    "embedding": pl.Array(pl.Float32, 512),
}


@dataclass(frozen=True)
class Context:
    """What a stage needs to know about the example's pool."""

    note: str  # the snapshot's first line
    dtypes: dict[str, pl.DataType]
    schema: dict[str, str] | None
    assets: dict[str, str] | None
    id_column: str = "id"
    asset_ids: Callable[[str], list[str]] | None = None


def _context(policy: ast.Policy, text: str, name: str, pools: Path) -> Context:
    pool_name = policy.of_kind(ast.PoolClause)[0].name.value
    if (pools / pool_name).is_dir():
        pool = Pool.open(resolve_pool(pool_name, search=[pools]))
        assets = {a: info.kind for a, info in pool.card.assets.items()}
        _p, diags = cbdsl.check_source(text, name, pool.schema, assets)
        if not any(d.is_error for d in diags):
            return Context(f"# {name} on pool `{pool_name}` (tests/conftest_pools.py, {pool.card.rows} rows)",
                           dict(pool.scan().collect_schema()), pool.schema, assets, pool.id_column,
                           asset_reader(pool))
        why = f"the test pool `{pool_name}` lacks what it reads: {', '.join(sorted({d.code for d in diags}))}"
    else:
        why = f"pool `{pool_name}` is not available offline"
    columns = sorted({"id", *cbdsl.resolve(policy).columns})
    dtypes = {c: STAND_IN[c] for c in columns}
    return Context(f"# {name} on a stand-in schema ({why})", dtypes, {c: type_name(t) for c, t in dtypes.items()},
                   None)


def null_scores(frame: pl.LazyFrame, steps) -> pl.LazyFrame:
    """The score provider of the lowered snapshot: each model score a null column of its output type."""
    def dtype(step) -> pl.DataType:
        return SCORE_DTYPES[str(registry().get(step.scorer, "expr").output_type(()))]

    return frame.with_columns([pl.lit(None, dtype=dtype(s)).alias(s.column) for s in steps])


_STAGES: dict[str, dict[str, str]] = {}


@pytest.fixture
def stages(pools_dir) -> Callable[[Path], dict[str, str]]:
    """The four snapshot texts of an example (computed once per session)."""

    def compute(path: Path) -> dict[str, str]:
        if path.stem not in _STAGES:
            text, name = path.read_text(encoding="utf-8"), f"examples/{path.name}"
            policy = cbdsl.parse(text, name)
            ctx = _context(policy, text, name, pools_dir)
            typed = cbdsl.resolve(policy, ctx.schema, assets=ctx.assets)
            planned = cbdsl.plan(typed, id_column=ctx.id_column)
            optimized = cbdsl.optimize(planned)
            lowered = cbdsl.lower(optimized, ctx.schema, asset_ids=ctx.asset_ids)
            frame = pl.LazyFrame(schema=ctx.dtypes).select(list(optimized.scan.columns))
            explain = query(lowered, frame, null_scores).explain()
            head = ctx.note + "\n"
            _STAGES[path.stem] = {
                "typed": head + typed_text(typed),
                "plan": head + plan_text(planned),
                "optimized": head + plan_text(optimized),
                "lowered": head + "".join(f"{line.rstrip()}\n" for line in explain.splitlines()),
            }
        return _STAGES[path.stem]

    return compute


def snapshot(path: Path, actual: str) -> None:
    """Compare with the snapshot, or (CBDSL_UPDATE_GOLDENS=1) write it."""
    shown = path.relative_to(ROOT).as_posix()
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"no snapshot {shown}; run with CBDSL_UPDATE_GOLDENS=1 to create it")
    assert actual == path.read_text(encoding="utf-8"), f"{shown} differs from the snapshot"


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_stage_snapshot(path: Path, stage: str, stages) -> None:
    snapshot(GOLDEN / stage / f"{path.stem}.txt", stages(path)[stage])


@pytest.mark.parametrize("stage", STAGES)
def test_every_snapshot_has_an_example(stage: str) -> None:
    """A snapshot of a deleted or renamed example is removed with it."""
    assert sorted(p.stem for p in (GOLDEN / stage).glob("*.txt")) == sorted(p.stem for p in EXAMPLES)


def test_compile_chains_the_public_stages(pools_dir) -> None:
    """``cbdsl.compile`` is ``parse | resolve | plan | optimize`` against the pool; every stage is public."""
    text = (ROOT / "examples" / "demo_basic_quality.cur").read_text(encoding="utf-8")
    pool = Pool.open(resolve_pool("demo", search=[pools_dir]))
    assets = {a: info.kind for a, info in pool.card.assets.items()}
    chained = cbdsl.optimize(cbdsl.plan(cbdsl.resolve(cbdsl.parse(text, "p.cur"), pool.schema, assets=assets),
                                        id_column=pool.id_column))
    assert cbdsl.compile(text, "p.cur", pool).plan == chained
    for name in ("parse", "resolve", "plan", "optimize", "lower", "execute", "compile", "format_policy",
                 "check", "check_source"):
        assert callable(getattr(cbdsl, name)) and name in cbdsl.__all__


def test_each_stage_uses_the_registry_it_is_given() -> None:
    """A stage's registry is an argument (the process registry by default), never a global it reaches for."""
    custom = Registry()
    for e in registry().entries():
        if e.id == "words" and e.space == "expr":
            e = dataclasses.replace(e, cost="gpu_model")  # a model scorer: the planner makes it a score step
        elif e.id == "len" and e.space == "expr":
            e = dataclasses.replace(e, lower=lambda ctx, text: pl.lit(99))
        custom.add(e)
    schema = {"id": "str", "text": "str"}
    with pytest.raises(PolicyError, match="words"):
        cbdsl.resolve(cbdsl.parse("filter words(text) > 2"), schema, registry=Registry())
    typed = cbdsl.resolve(cbdsl.parse("filter words(text) > 2"), schema, registry=custom)
    assert [s.step for s in cbdsl.plan(typed).steps] == ["scan", "filter", "select"]
    assert [s.step for s in cbdsl.plan(typed, registry=custom).steps] == ["scan", "score", "filter", "select"]
    planned = cbdsl.plan(cbdsl.resolve(cbdsl.parse("filter len(text) > 50"), schema))
    frame = pl.DataFrame({"id": ["a"], "text": ["xy"]})
    for reg, rows in ((None, 0), (custom, 1)):
        low = cbdsl.lower(planned, schema, registry=reg)
        assert frame.filter(low.predicate(low.late_filters)).height == rows


def test_public_api_doctest() -> None:
    result = doctest.testmod(cbdsl)
    assert result.attempted >= 1 and result.failed == 0
