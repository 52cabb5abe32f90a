"""Shared pools and helpers for the compiler and evaluator tests (issue 3).

Not a ``conftest.py``: a test module imports what it uses, so the pools a
module needs are visible in its imports::

    from conftest_pools import demo_pool, run_policy  # noqa: F401 (fixtures)

Pools:

- ``demo_pool``: the generated demo pool, 2,000 rows (session-scoped), with
  its ``demo-defects`` ground-truth asset; ``demo_frame`` / ``demo_defects``
  are its rows and labels as frames.
- ``pools_dir``: a folder of named pools for the CLI and the examples
  (``$CBDSL_POOLS``): ``demo`` (6,000 rows: the demo examples ask for
  budgets of 5,000), ``datacomp-small`` (imported from generated DataComp
  metadata parquet), ``llava-665k`` (imported from generated LLaVA JSON,
  12,000 records, with the ``icons-133k`` and ``ards-selected`` id-list
  assets registered) and ``demo-it`` (the demo instruction pool, 5,000 rows:
  its examples ask for budgets of 4,000).
- :func:`make_pool`: a small hand-made frame written with ``write_pool``,
  where exact values matter.

Helpers run a policy through the public API, stage by stage:
``compile_source`` -> ``lower`` -> ``execute``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from cbdsl.stages import compile_source
from cbdsl.stages import lower
from cbdsl.pipelines.data.demo import make_demo
from cbdsl.pipelines.data.demo_it import make_demo_it
from cbdsl.pipelines.engine.execute import execute
from cbdsl.pipelines.data.importers import import_pool
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.writing import add_asset, write_pool
from cbdsl.scorers.api import asset_ids

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "data"))
from pool_fixtures import LLAVA_CASES, write_datacomp  # noqa: E402

_BUILT: dict[str, object] = {}  # one build per session, whichever module's fixture asks first

DEMO_ROWS = 2000
EXAMPLE_DEMO_ROWS = 6000
LLAVA_ROWS = 12_000
DEMO_IT_ROWS = 5000


# --- running policies -------------------------------------------------------------------


def asset_reader(pool: Pool):
    """The ``asset_ids`` callback of :func:`lower`, as `cbdsl run` passes it."""
    return lambda name: asset_ids(pool, name)


def run_policy(text: str, pool: Pool, *, explain: bool = False, name: str = "policy.cur", score_columns=None):
    """Compile, lower and execute ``text`` on ``pool``: (compiled, RunResult)."""
    compiled = compile_source(text, name, pool)
    low = lower(compiled.plan, pool.schema, asset_reader(pool))
    return compiled, execute(low, pool, explain=explain, score_columns=score_columns)


def selected(text: str, pool: Pool, **kw) -> list[str]:
    """The selected ids, in rank order."""
    _compiled, result = run_policy(text, pool, **kw)
    return result.selection.get_column(pool.id_column).to_list()


def policy(*clauses: str, pool: str = "t") -> str:
    """A policy text from clause lines (a `pool` clause first)."""
    return "\n".join([f'pool "{pool}"', *clauses]) + "\n"


def make_pool(path: Path, frame: pl.DataFrame | dict, name: str = "t", **kw) -> Pool:
    """``write_pool`` of a small hand-made frame (a dict is made a frame first)."""
    if isinstance(frame, dict):
        frame = pl.DataFrame(frame)
    return write_pool(frame, path, name=name, **kw)


# --- session pools ------------------------------------------------------------------------


def _once(key: str, build):
    """Build a session resource once: fixtures imported into several modules share the result."""
    if key not in _BUILT:
        _BUILT[key] = build()
    return _BUILT[key]


@pytest.fixture(scope="session")
def demo_pool(tmp_path_factory) -> Pool:
    """The demo pool, 2,000 rows, with its `demo-defects` asset."""

    def build() -> Pool:
        path = tmp_path_factory.mktemp("demo") / "demo"
        make_demo(path, rows=DEMO_ROWS)
        return Pool.open(path)

    return _once("demo", build)


@pytest.fixture(scope="session")
def demo_frame(demo_pool) -> pl.DataFrame:
    """The demo pool's rows, without the image bytes."""
    return demo_pool.scan([c for c in demo_pool.schema if c != "image"]).collect()


@pytest.fixture(scope="session")
def demo_defects(demo_pool) -> pl.DataFrame:
    return demo_pool.read_asset("demo-defects")


def llava_records(n: int) -> list[dict]:
    """``n`` LLaVA-665K-style records: the fixture cases, repeated with fresh ids (deterministic)."""
    base = [json.loads(json.dumps(rec)) for rec, _source in LLAVA_CASES]
    out = []
    for i in range(n):
        rec = dict(base[i % len(base)])
        rec["id"] = f"r{i:06d}"
        out.append(rec)
    return out


def write_llava_pool(dest: Path, n: int, src_dir: Path, name: str = "llava-665k") -> Pool:
    """A LLaVA pool at ``dest``, imported from ``n`` generated records written under ``src_dir``."""
    src_dir.mkdir(parents=True, exist_ok=True)
    src = src_dir / f"{name}.json"
    src.write_text(json.dumps(llava_records(n)), encoding="utf-8")
    return import_pool("llava", src, dest, name=name)


def write_datacomp_pool(dest: Path, n: int, src_dir: Path, name: str = "datacomp-small", seed: int = 0) -> Pool:
    """A DataComp pool at ``dest``, imported from generated metadata parquet (2 shards) under ``src_dir``."""
    src = write_datacomp(src_dir / f"{name}-parquet", n=n, files=2, seed=seed)
    return import_pool("datacomp", src, dest, name=name)


def write_ids(path: Path, ids: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


LLAVA_IDS = [f"r{i:06d}" for i in range(LLAVA_ROWS)]
ICONS_IDS = LLAVA_IDS[:11_000]  # ICONS-133K is 20% of LLaVA-665K; here enough ids for the 10k budget
ARDS_IDS = LLAVA_IDS[1_000:11_500]


@pytest.fixture(scope="session")
def pools_dir(tmp_path_factory) -> Path:
    """A `$CBDSL_POOLS` folder: demo (6k rows), datacomp-small, llava-665k with its id-list assets, demo-it (5k)."""

    def build() -> Path:
        root = tmp_path_factory.mktemp("pools")
        src = tmp_path_factory.mktemp("pool-sources")
        make_demo(root / "demo", rows=EXAMPLE_DEMO_ROWS)
        write_datacomp_pool(root / "datacomp-small", 200, src)
        write_llava_pool(root / "llava-665k", LLAVA_ROWS, src)
        add_asset(root / "llava-665k", "icons-133k", write_ids(src / "icons-133k.txt", ICONS_IDS), kind="ids")
        add_asset(root / "llava-665k", "ards-selected", write_ids(src / "ards-selected.txt", ARDS_IDS), kind="ids")
        make_demo_it(root / "demo-it", rows=DEMO_IT_ROWS)
        return root

    return _once("pools_dir", build)
