"""The mini backend as a command (what the ray and command backends run), and the demo's defect-rate knob.

The real train/eval runs with a tiny recipe (a few steps, a small suite) on a
small demo pool, in a subprocess, as a Ray job would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from cbdsl.pipelines.data import demo
from cbdsl.pipelines.data.demo import make_demo
from cbdsl.pipelines.loop.backends.base import BackendError

MINI = [sys.executable, "-m", "cbdsl.pipelines.loop.backends.mini"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("pools") / "demo", rows=400, seed=0)


def selection(pool: Path, path: Path, rows: int = 120, rank: bool = True) -> Path:
    ids = pl.read_parquet(next((pool / "shards").glob("*.parquet")), columns=["id"]).head(rows)
    (ids.with_columns(pl.int_range(1, rows + 1).alias("rank")) if rank else ids).write_parquet(path)
    return path


def test_mini_command_trains_evaluates_and_writes_metrics(pool, tmp_path):
    sel = selection(pool, tmp_path / "selection.parquet")
    out = tmp_path / "work" / "metrics.json"
    proc = subprocess.run([*MINI, str(sel), "--pool", str(pool), "--metrics", str(out), "--steps", "2",
                           "--batch-size", "32", "--eval-rows", "64", "--threads", "1", "--seed", "3"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "CBDSL_DEVICE": "cpu"})
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    assert metrics["train_rows"] == 120 and metrics["suite"].startswith("mini-v9-")
    assert len(metrics["benchmarks"]) == 7 and all(0 <= v <= 1 for v in metrics["benchmarks"].values())
    assert metrics["aggregate"] == pytest.approx(sum(metrics["benchmarks"].values()) / 7)
    assert "mini: training small CLIP 1/2 (seed 3) on 120 pairs (2 steps x 32)" in proc.stdout
    assert "mini: training small CLIP 2/2 (seed 1003)" in proc.stdout


def test_mini_command_errors_say_what_to_fix(pool, tmp_path):
    sel = selection(pool, tmp_path / "selection.parquet", rank=False)
    out = tmp_path / "metrics.json"
    proc = subprocess.run([*MINI, str(sel), "--pool", str(tmp_path / "nowhere"), "--metrics", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "mini: no pool directory at" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*MINI, str(sel), "--pool", str(pool), "--metrics", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "has no `rank` column" in proc.stderr and not out.exists()


def test_a_submission_averages_its_models_each_trained_as_alone(pool, tmp_path):
    """Two models side by side (threads on the CPU) give each model's bytes alone: the averaged scores are the
    mean of two one-model runs at seeds s and s + MODEL_SEEDS, exactly."""
    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.loop.backends.base import Job
    from cbdsl.pipelines.loop.backends.mini import MODEL_SEEDS, MiniBackend

    opened = Pool.open(pool)
    sel = pl.read_parquet(selection(pool, tmp_path / "selection.parquet"))
    job = Job(pool=opened, selection=sel, export_dir=tmp_path, workdir=tmp_path, log=lambda m: None)
    settings = {"steps": 6, "batch_size": 32, "eval_rows": 64, "test_rows": 64}
    both = MiniBackend.from_settings(seed=5, **settings).run(job)
    alone = [MiniBackend.from_settings(seed=seed, models=1, **settings).run(job) for seed in (5, 5 + MODEL_SEEDS)]
    for part in (lambda m: m, lambda m: m["test"]):
        assert part(both)["benchmarks"] == {name: (part(alone[0])["benchmarks"][name] + part(alone[1])["benchmarks"][name]) / 2
                                            for name in part(both)["benchmarks"]}
    assert alone[0]["benchmarks"] != alone[1]["benchmarks"]  # the seeds differ, so the mean is not one model's
    assert MiniBackend.from_settings(models=1).suite != MiniBackend.from_settings().suite
    assert MiniBackend.from_settings(prompts=64).suite != MiniBackend.from_settings().suite
    with pytest.raises(BackendError, match="models = 0: the number of trainings averaged must be at least 1 \\(the default is 2\\)"):
        MiniBackend.from_settings(models=0, **settings).run(job)
    with pytest.raises(BackendError, match="prompts = 0: the captions per zero-shot prototype must be at least 1"):
        MiniBackend.from_settings(prompts=0, **settings).run(job)


def test_side_by_side_keeps_the_order_and_runs_in_turn_without_threads():
    from cbdsl.scorers.models.training import side_by_side

    seen = []
    assert side_by_side(lambda i: seen.append(i) or i * i, range(4), threads=None) == [0, 1, 4, 9]
    assert seen == [0, 1, 2, 3]
    assert side_by_side(lambda i: i + 1, range(3), threads=1) == [1, 2, 3]


def test_with_rates_changes_only_what_it_names_and_checks_it():
    rates = demo.with_rates({"laion": {"spam": 0.1}})
    assert rates["laion"]["spam"] == 0.1 and demo.DEFECT_RATES["laion"]["spam"] != 0.1
    assert {s: r for s, r in rates.items() if s != "laion"} == {s: r for s, r in demo.DEFECT_RATES.items()
                                                                  if s != "laion"}
    with pytest.raises(ValueError, match="unknown source 'reddit'"):
        demo.with_rates({"reddit": {"spam": 0.1}})
    with pytest.raises(ValueError, match="unknown defect 'blurry'"):
        demo.with_rates({"coco": {"blurry": 0.1}})
    with pytest.raises(ValueError, match="between 0 and 1"):
        demo.with_rates({"coco": {"spam": 1.5}})
    with pytest.raises(ValueError, match="mismatched, spam, foreign_language sum above 1"):
        demo.with_rates({"laion": {"mismatched": 0.9}})


def test_rates_shape_the_pool_and_its_lineage():
    rates = demo.with_rates({"coco": {"mismatched": 0.5}})
    generated = demo.generate_demo(2000, seed=1, rates=rates)
    truth = generated.defects.join(generated.pool.select("id", "source"), on="id")
    coco = truth.filter(pl.col("source") == "coco")
    assert coco["mismatched"].mean() == pytest.approx(0.5, abs=1.5 / coco.height)
    assert generated.lineage["defect_rates"] == rates
    assert generated.lineage["defect_rates_overall"] == demo.expected_rates(rates)
