"""The validity benchmark's summary (tests/benchmarks/bench_validity.py): what it says of arms, seeds and ties.

The benchmark itself trains for minutes; its summary is plain arithmetic over the runs' aggregates, checked
here on the instruction track's recorded per-seed values (README, "Validity of the mini-vlm backend").
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).parent / "benchmarks" / "bench_validity.py"
_SPEC = importlib.util.spec_from_file_location("bench_validity", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_validity"] = bench
_SPEC.loader.exec_module(bench)

#: Aggregates per seed (0-5), mini-vlm on the CPU: two cleaning arms that tie, two arms far from them.
IT = {"random": [0.597, 0.603, 0.579, 0.593, 0.573, 0.587],
      "it_metadata": [0.617, 0.616, 0.618, 0.612, 0.612, 0.622],
      "demo_it_clean": [0.641, 0.642, 0.654, 0.675, 0.650, 0.641],
      "demo_it_clean_loss": [0.645, 0.650, 0.674, 0.648, 0.649, 0.667],
      "it_loss_top_p95": [0.175, 0.173, 0.184, 0.176, 0.191, 0.184]}


def runs(values: dict[str, list[float]]) -> dict[str, list[dict]]:
    return {arm: [{"aggregate": v, "benchmarks": {"b": v}, "seconds": 1.0} for v in per_seed]
            for arm, per_seed in values.items()}


def test_pairs_tell_a_tie_from_a_separated_pair():
    """The two cleaning arms trade places (4 of 6 seeds) and are not separated; every other pair is, and
    keeps its sign on every seed, although one order of all four curated arms holds on 4 of 6 seeds only."""
    out = bench.summarize(runs(IT), list(range(6)))
    pairs = {tuple(p["pair"]): p for p in out["pairs"]}
    tie = pairs[("demo_it_clean_loss", "demo_it_clean")]
    assert tie["difference"] == pytest.approx(0.005, abs=1e-4) and tie["seeds_ahead"] == 4 and not tie["separated"]
    assert abs(tie["t"]) < 1
    separated = [p for p in out["pairs"] if p["separated"]]
    assert len(separated) == 5 and all(p["seeds_ahead"] == 6 and p["t"] >= bench.SEPARATED_T for p in separated)
    assert len(out["pairs"]) == 6  # every pair of the four curated arms, random left out
    assert out["seeds_in_separated_order"] == "6 of 6"
    assert out["seeds_in_curated_order"] == "4 of 6"


def test_a_separated_pair_that_flips_on_a_seed_is_counted():
    """A pair separated on average but reversed on one seed leaves that seed out of the separated order."""
    values = {"random": [0.1] * 6, "a": [0.60, 0.61, 0.62, 0.60, 0.61, 0.45],
              "b": [0.50, 0.51, 0.52, 0.50, 0.51, 0.55]}
    out = bench.pairs({arm: np.array(v) for arm, v in values.items()})
    (pair,) = out["pairs"]
    assert pair["pair"] == ["a", "b"] and pair["seeds_ahead"] == 5
    # mean 0.0667, seed std 0.0816: t = 2.0, short of the threshold, so nothing is separated
    assert pair["t"] == pytest.approx(2.0, abs=0.01) and not pair["separated"]
    assert out["seeds_in_separated_order"] == "6 of 6"
    values["a"][5] = 0.54  # a smaller reversal: t 4.45, separated, and seed 5 breaks its order
    out = bench.pairs({arm: np.array(v) for arm, v in values.items()})
    assert out["pairs"][0]["t"] == pytest.approx(4.45, abs=0.01) and out["pairs"][0]["separated"]
    assert out["seeds_in_separated_order"] == "5 of 6"


def test_runs_are_recorded_as_they_end_and_a_cut_line_is_run_again(tmp_path):
    """--out appends each run as it ends; --resume keeps what the record holds. The last line of a killed
    benchmark may be cut: that run is not kept, so it runs again."""
    log = bench.runs_file(str(tmp_path / "v.json"))
    assert log == tmp_path / "v.json.runs.jsonl" and bench.runs_file(None) is None
    assert bench.finished_runs(log) == {}
    first = {"aggregate": 0.5, "benchmarks": {"b": 0.5}, "suite": "mini-v9-x", "seconds": 80.0}
    bench.record_run(log, ("", "lr=0.001", "random", 0), first)
    bench.record_run(log, ("", "lr=0.001", "random", 1), {**first, "aggregate": 0.6})
    with log.open("a") as f:
        f.write('{"task": ["", "lr=0.001", "random", 2], "result": {"aggr')  # a kill mid-write
    assert bench.finished_runs(log) == {("", "lr=0.001", "random", 0): first,
                                        ("", "lr=0.001", "random", 1): {**first, "aggregate": 0.6}}
    bench.record_run(log, ("", "lr=0.001", "random", 2), {**first, "aggregate": 0.7})  # the resumed run
    runs = bench.finished_runs(log)
    assert len(runs) == 3 and runs[("", "lr=0.001", "random", 2)]["aggregate"] == 0.7


def test_resume_needs_the_out_whose_record_it_keeps():
    with pytest.raises(SystemExit, match="--resume: name the --out"):
        bench.main(["--resume"])
