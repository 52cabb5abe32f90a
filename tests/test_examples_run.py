"""Every example in ``examples/`` that checks without pending scorers runs on a pool of its kind.

Pools (``conftest_pools.pools_dir``, found by the name in the policy's
``pool`` clause): ``demo`` (the demo pool, 6,000 rows), ``datacomp-small``
(generated DataComp metadata, imported), ``llava-665k`` (12,000
generated LLaVA records, imported, with the ``icons-133k`` and
``ards-selected`` id lists registered as assets) and ``demo-it`` (the demo
instruction pool, 5,000 rows).

Each run is pinned by a golden file ``tests/golden/runs/<example>.json``: the
selection hash, the counts, the filter funnel, the resolved statistics, the
mix quotas and the warnings. After an intended change, regenerate them with

    CBDSL_UPDATE_GOLDENS=1 /work/venv/bin/python -m pytest -q tests/test_examples_run.py

and review the diff like code. Examples whose scorers are not implemented yet
(``cbdsl check`` reports E103) are skipped, and named in the skip reason.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from cbdsl.stages import compile_source
from cbdsl.stages import check_source
from cbdsl.compiler.ir import BudgetStep
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.roots import resolve_pool
from conftest_pools import ROOT, pools_dir, run_policy  # noqa: F401 (fixtures)

EXAMPLES = sorted((ROOT / "examples").glob("*.cur"))
GOLDEN = ROOT / "tests" / "golden" / "runs"
UPDATE = os.environ.get("CBDSL_UPDATE_GOLDENS") == "1"


def _codes(path: Path) -> set[str]:
    _policy, diags = check_source(path.read_text(encoding="utf-8"), path.name, None)
    return {d.code for d in diags if d.is_error}


CODES = {p.stem: _codes(p) for p in EXAMPLES}
PENDING = sorted(stem for stem, codes in CODES.items() if "E103" in codes)
METADATA_ONLY = ["ards_released_ids", "curation_bench_random_10k", "datacomp_no_filter", "demo_basic_quality",
                 "icons_released_ids", "it_random", "minhash_dedup_text"]  # need no scorer at all: always runnable
KNOWN_BUGS: dict[str, str] = {}  # example stem -> "BUG: ..." (strict xfail) while a bug is open
FUNNEL_BUGS: dict[str, str] = {}


def _param(path: Path, bugs: dict[str, str]):
    marks = [pytest.mark.xfail(strict=True, reason=bugs[path.stem])] if path.stem in bugs else []
    return pytest.param(path, id=path.stem, marks=marks)


def _pool_name(text: str) -> str:
    return re.search(r'^pool\s+"([^"]+)"', text, re.MULTILINE).group(1)


def _run(path: Path, pools_dir: Path, explain: bool):
    """(compiled, result, pool), or a skip when the example waits for scorer code or needs model scores."""
    if path.stem in PENDING:
        pytest.skip(f"pending scorer code (E103); skipped examples: {', '.join(PENDING)}")
    if CODES[path.stem]:
        pytest.skip(f"does not check: {sorted(CODES[path.stem])} (see test_example_checks_or_waits_for_a_scorer)")
    text = path.read_text(encoding="utf-8")
    required = compile_source(text, path.name).plan.required_scorers  # no pool needed to know the scorers
    if required:
        scorers = ", ".join(s["scorer"] for s in required)
        pytest.skip(f"needs model scores ({scorers}); these tests run metadata-only examples")
    pool = Pool.open(resolve_pool(_pool_name(text), search=[pools_dir]))
    compiled, result = run_policy(text, pool, explain=explain, name=f"examples/{path.name}")
    return compiled, result, pool


def _golden(stem: str) -> dict:
    path = GOLDEN / f"{stem}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _check_golden(stem: str, part: str, actual: dict) -> None:
    """Compare (or, with CBDSL_UPDATE_GOLDENS=1, write) one part of the example's golden file."""
    actual = json.loads(json.dumps(actual, default=str))
    golden = _golden(stem)
    if UPDATE:
        golden[part] = actual
        GOLDEN.mkdir(parents=True, exist_ok=True)
        (GOLDEN / f"{stem}.json").write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return
    if part not in golden:
        pytest.fail(f"no `{part}` in tests/golden/runs/{stem}.json; run with CBDSL_UPDATE_GOLDENS=1 to create it")
    assert actual == golden[part], f"tests/golden/runs/{stem}.json: `{part}` differs"


CHECK_BUGS: dict[str, str] = {}  # examples that stopped checking: stem -> "BUG: ..." (strict xfail)


@pytest.mark.parametrize("path", [_param(p, CHECK_BUGS) for p in EXAMPLES])
def test_example_checks_or_waits_for_a_scorer(path: Path):
    """Every example checks cleanly, or its only errors are scorers whose code is pending (E103)."""
    assert CODES[path.stem] <= {"E103"}, f"{path.name}: {sorted(CODES[path.stem])}"


def test_metadata_examples_are_runnable():
    assert not set(METADATA_ONLY) & set(PENDING)
    assert set(METADATA_ONLY) <= {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("path", [_param(p, KNOWN_BUGS) for p in EXAMPLES])
def test_example_runs(path: Path, pools_dir):
    """The selection: exact budget, and a golden of its hash, counts, mix quotas and warnings."""
    compiled, result, pool = _run(path, pools_dir, explain=False)
    budget = compiled.plan.of(BudgetStep)
    if budget and budget[0].unit == "rows":
        assert result.selection.height == int(budget[0].amount)
    elif not budget:
        assert result.selection.height == result.after_dedup
    _check_golden(path.stem, "selection", {
        "pool": pool.name,
        "pool_rows": result.pool_rows,
        "survivors": result.survivors,
        "after_dedup": result.after_dedup,
        "selected": result.selection.height,
        "selection_hash": result.selection_hash(),
        "first_ids": result.selection["id"].head(5).to_list(),
        "groups": result.quotas,
        "warnings": result.warnings,
    })


@pytest.mark.parametrize("path", [_param(p, {**KNOWN_BUGS, **FUNNEL_BUGS}) for p in EXAMPLES])
def test_example_funnel(path: Path, pools_dir):
    """`explain --run`: the filter funnel and the resolved statistics; the selection is the same as a plain run."""
    _compiled, result, _pool = _run(path, pools_dir, explain=True)
    _c, _plain, _p = _run(path, pools_dir, explain=False)
    assert result.selection_hash() == _plain.selection_hash()
    _check_golden(path.stem, "funnel", {
        "filters": [vars(f) for f in result.funnel or []],
        "thresholds": result.thresholds,
        "after_dedup": result.after_dedup,
    })
