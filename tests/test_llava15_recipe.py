"""recipes/llava15: the LLaVA-1.5-7B recipe through a real sandbox `cbdsl submit`, with stand-ins for the GPU programs.

`train_eval.sh` runs as the command backend runs it, configured by the
documented `recipes/llava15/command.toml`; `deepspeed` and VLMEvalKit's
`run.py` are small real programs (tests/data/llava15_standins) that check the
arguments the recipe gives them (finetune.sh's flags for 7B, VLMEvalKit's
config and judge) and write what the real ones write; cbdsl reads VLMEvalKit's
result files back. What this cannot show: that LLaVA trains or VLMEvalKit
scores (no GPU, no LLaVA here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.data.importers import import_pool
from cbdsl.pipelines.loop.backends import make_backend

sys.path.insert(0, str(Path(__file__).parent / "data"))
from pool_fixtures import write_llava, write_llava_images  # noqa: E402
from test_loop import ledger_rows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "llava15"
STANDINS = Path(__file__).parent / "data" / "llava15_standins"
EIGHT = ["MME", "MMBench_DEV_EN", "SEEDBench_IMG", "POPE", "GQA_TestDev_Balanced", "TextVQA_VAL", "ScienceQA_TEST",
         "VizWiz"]


@pytest.fixture
def gpu_machine(tmp_path, monkeypatch) -> Path:
    """The environment train_eval.sh reads, with the stand-ins on PATH; returns the image folder."""
    folder = write_llava_images(tmp_path / "playground" / "data")
    projector = tmp_path / "checkpoints" / "llava-v1.5-7b-pretrain" / "mm_projector.bin"
    projector.parent.mkdir(parents=True)
    projector.write_bytes(b"projector")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)  # the stand-ins' `#!/usr/bin/env python3`
    monkeypatch.setenv("PATH", f"{STANDINS / 'bin'}:{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("LLAVA_DIR", str(STANDINS / "llava"))
    monkeypatch.setenv("VLMEVALKIT_DIR", str(STANDINS / "vlmevalkit"))
    monkeypatch.setenv("LLAVA15_IMAGE_FOLDER", str(folder))
    monkeypatch.setenv("LLAVA15_PROJECTOR", str(projector))
    monkeypatch.setenv("LLAVA15_GPUS", "0")
    monkeypatch.setenv("LLAVA15_PYTHON", sys.executable)
    monkeypatch.delenv("FAKE_VLMEVALKIT_SKIP", raising=False)
    return folder


@pytest.fixture
def sandbox(tmp_path, gpu_machine, monkeypatch) -> Path:
    """A sandbox on a LLaVA pool imported with its image folder, its backend the documented command.toml."""
    pools = tmp_path / "pools"
    import_pool("llava", write_llava(tmp_path / "mix.json"), pools / "llava-mini", image_folder=gpu_machine)
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    root = tmp_path / "sb"
    result = CliRunner().invoke(cli, ["init", str(root), "--pool", "llava-mini", "--backend", "command",
                                      "--budget", "10", "--iterations", "2"])
    assert result.exit_code == 0, result.output
    config = (root / "cbdsl.toml").read_text()
    head, _sep, _rest = config.partition("[backend.command]")
    snippet = (RECIPE / "command.toml").read_text().replace("/path/to/cbdsl", str(ROOT))
    (root / "cbdsl.toml").write_text(head + snippet)
    monkeypatch.chdir(root)
    (root / "policy.cur").write_text('policy "longest answers"\npool "llava-mini"\nbudget 10\nselect top gpt_chars\n')
    return root


def submit(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_a_submission_trains_evaluates_and_is_scored_on_the_eight(sandbox):
    assert submit("compile", "policy.cur")[0] == 0
    code, out = submit("submit", "--json", "-m", "longest answers")
    assert code == 0, out
    feedback = json.loads(out[out.index("{"):])
    assert feedback["status"] == "scored" and sorted(feedback["benchmarks"]) == sorted(EIGHT)
    rows = ledger_rows(sandbox)
    assert [r["status"] for r in rows] == ["scored", "scored"]  # the random baseline, then the policy
    metrics = json.loads(rows[1]["metrics"])
    assert metrics["scale"] == "percent" and metrics["model"] == "llava-v1.5-7b-cbdsl"
    assert rows[1]["suite"] == "llava15-7b-vlmevalkit8-v1"
    work = sandbox / ".cbdsl" / "runs" / "0001" / "work"
    config = json.loads((work / "vlmevalkit.json").read_text())
    assert list(config["data"]) == EIGHT and config["model"]["llava-v1.5-7b-cbdsl"]["class"] == "LLaVA"
    assert not any((work / "checkpoints").iterdir())  # removed once evaluated
    stdout = (work / "stdout.txt").read_text()
    assert "trained on 10 records" in stdout and "evaluated llava-v1.5-7b-cbdsl on 8 datasets" in stdout
    exported = json.loads((sandbox / ".cbdsl" / "runs" / "0001" / "export" / "llava.json").read_text())
    assert len(exported) == 10  # the selection's LLaVA records, as train_mem.py reads them
    # the scores follow the data: the stand-in scores the share of records with an image
    share = sum("image" in r for r in exported) / 10
    assert metrics["benchmarks"]["POPE"] == pytest.approx(70 + 15 * share)


def test_a_benchmark_vlmevalkit_skipped_fails_the_submission_naming_its_file(sandbox, monkeypatch):
    monkeypatch.setenv("FAKE_VLMEVALKIT_SKIP", "POPE")
    assert submit("compile", "policy.cur")[0] == 0
    code, out = submit("submit")
    assert code == 1 and "benchmark POPE: VLMEvalKit wrote no" in out and "llava-v1.5-7b-cbdsl_POPE_score.csv" in out
    assert [r["status"] for r in ledger_rows(sandbox)] == ["failed"]  # the baseline failed: nothing else ran


def test_a_failed_training_fails_the_submission_with_its_output(sandbox, monkeypatch):
    monkeypatch.setenv("FAKE_DEEPSPEED_FAIL", "1")
    assert submit("compile", "policy.cur")[0] == 0
    code, out = submit("submit")
    assert code == 1 and "exit code 1" in out and "CUDA out of memory (simulated)" in out


@pytest.mark.parametrize("change, expected", [
    ({"LLAVA_DIR": None}, "set LLAVA_DIR to a checkout of haotian-liu/LLaVA"),
    ({"LLAVA15_GPUS": "0,1,2"}, "names 3 GPUs; the global batch of 128 (16 a GPU) needs 1, 2, 4 or 8"),
    ({"LLAVA15_IMAGE_FOLDER": "/nonexistent"}, "LLAVA15_IMAGE_FOLDER=/nonexistent is not a directory"),
    ({"LLAVA15_PROJECTOR": "/nonexistent/mm_projector.bin"}, "no stage-1 projector at /nonexistent/mm_projector.bin"),
    ({"LLAVA15_BENCHMARKS": "MME HallusionBench"}, "LLAVA15_BENCHMARKS names HallusionBench"),
])
def test_the_script_says_what_is_missing_before_any_gpu_time(gpu_machine, tmp_path, monkeypatch, change, expected):
    records = tmp_path / "llava.json"
    records.write_text(json.dumps([{"id": "1", "conversations": [{"from": "human", "value": "Hi"},
                                                                  {"from": "gpt", "value": "Hello"}]}]))
    for key, value in change.items():
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    run = subprocess.run([str(RECIPE / "train_eval.sh"), str(records), str(tmp_path / "work")], capture_output=True,
                         text=True)
    assert run.returncode != 0 and expected in run.stderr, run.stderr


def test_the_script_runs_on_two_gpus_with_half_the_accumulation(gpu_machine, tmp_path, monkeypatch):
    records = tmp_path / "llava.json"
    records.write_text(json.dumps([{"id": "1", "image": "gqa/images/2354786.jpg", "conversations": [
        {"from": "human", "value": "<image>\nIs the sky dark?"}, {"from": "gpt", "value": "Yes"}]}]))
    monkeypatch.setenv("LLAVA15_GPUS", "0,1")
    monkeypatch.setenv("LLAVA15_KEEP_CHECKPOINT", "1")
    monkeypatch.setenv("LLAVA15_PYTHON", str(tmp_path / "bin" / "python3"))
    # two GPUs: VLMEvalKit under torch.distributed.run; a stand-in python that runs run.py as one process
    (tmp_path / "bin" / "python3").unlink()
    (tmp_path / "bin" / "python3").write_text(
        f"#!/bin/sh\nif [ \"$1\" = -m ]; then shift 3; fi\nexec {sys.executable} \"$@\"\n")
    (tmp_path / "bin" / "python3").chmod(0o755)
    run = subprocess.run([str(RECIPE / "train_eval.sh"), str(records), str(tmp_path / "work")], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert "gradient accumulation 4" in run.stdout and "on GPUs 0,1" in run.stdout
    kept = list((tmp_path / "work" / "checkpoints").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("llava-v1.5-7b-cbdsl-")


def test_the_ray_snippet_builds_a_ray_backend():
    settings = tomllib.loads((RECIPE / "ray.toml").read_text())["backend"]["ray"]
    backend = make_backend("ray", settings)
    assert backend.metrics_format == "vlmevalkit" and backend.benchmarks == EIGHT
    assert backend.entrypoint_num_gpus == 8 and backend.runtime_env["env_vars"]["LLAVA15_GPUS"].count(",") == 7
    command = tomllib.loads((RECIPE / "command.toml").read_text())["backend"]["command"]
    assert backend.suite == make_backend("command", command).suite == "llava15-7b-vlmevalkit8-v1"
