"""VLMEvalKit's result files read as cbdsl metrics, by the reader and by the command and ray backends.

The files are written as VLMEvalKit writes them (tests/data/vlmevalkit_files.py:
its headers, scales and run-folder links, read at open-compass/VLMEvalKit @e8e78f05).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cbdsl.pipelines.loop.backends import make_backend
from cbdsl.pipelines.loop.backends.base import BackendError, Job
from cbdsl.pipelines.loop.backends.ray_job import files_from_log, wrap
from cbdsl.pipelines.loop.backends.vlmevalkit import main, read_results

sys.path.insert(0, str(Path(__file__).parent / "data"))
from vlmevalkit_files import dump_csv, write_run  # noqa: E402

EIGHT = ["MME", "MMBench_DEV_EN", "SEEDBench_IMG", "POPE", "GQA_TestDev_Balanced", "TextVQA_VAL", "ScienceQA_TEST",
         "VizWiz"]
SCORES = {"MME": 130.0, "MMBench_DEV_EN": 0.64, "SEEDBench_IMG": 0.58, "POPE": 85.9, "GQA_TestDev_Balanced": 61.9,
          "TextVQA_VAL": 58.2, "ScienceQA_TEST": 0.695, "VizWiz": 50.0}


@pytest.fixture
def results(tmp_path) -> Path:
    return write_run(tmp_path / "eval", "llava_cbdsl", SCORES)


def test_the_eight_benchmarks_in_percent_and_their_mean(results):
    metrics = read_results(results, EIGHT)
    b = metrics["benchmarks"]
    assert list(b) == EIGHT and metrics["scale"] == "percent" and metrics["model"] == "llava_cbdsl"
    assert b["MME"] == pytest.approx(130 * 14 / 2800 * 100)  # (perception + reasoning) / 2800
    assert metrics["details"]["MME"]["perception"] == pytest.approx(1300) and metrics["details"]["MME"]["sum"] == 1820
    assert b["MMBench_DEV_EN"] == pytest.approx(64.0) and b["ScienceQA_TEST"] == pytest.approx(69.5)
    assert metrics["details"]["MMBench_DEV_EN"] == {"split": "dev", "fraction": 0.64,
                                                    "file": str(results / "llava_cbdsl_MMBench_DEV_EN_acc.csv")}
    assert b["POPE"] == 85.9 and metrics["details"]["POPE"]["precision"] == pytest.approx(83.9)
    assert b["TextVQA_VAL"] == 58.2 and b["GQA_TestDev_Balanced"] == 61.9 and b["VizWiz"] == 50.0
    assert metrics["aggregate"] == pytest.approx(sum(b.values()) / 8)
    assert (results / "llava_cbdsl_MME_score.csv").read_text().startswith('"perception","reasoning","OCR"')


def test_every_file_found_and_the_work_dir_or_its_model_folder(results):
    write_run(results.parent, "llava_cbdsl", {"MMVet": 31.1}, run="T20260801-130000", judge="gpt-4-turbo")
    (results.parent / "logs").mkdir()
    found = read_results(results.parent)  # OUT: its one model folder
    assert sorted(found["benchmarks"]) == sorted([*EIGHT, "MMVet"])
    assert found["benchmarks"]["MMVet"] == 31.1 and found["details"]["MMVet"]["judge"] == "gpt-4-turbo"


def test_a_missing_benchmark_is_named_with_the_file_it_looked_for(results):
    (results / "llava_cbdsl_POPE_score.csv").unlink()
    (results / "T20260801-120000" / "llava_cbdsl_POPE_score.csv").unlink()
    with pytest.raises(BackendError, match=r"benchmark POPE: VLMEvalKit wrote no .*llava_cbdsl_POPE_score\.csv; its "
                                           r"evaluation failed or did not run"):
        read_results(results, EIGHT)
    assert "POPE" not in read_results(results)["benchmarks"]  # without a list: what is there


def test_a_missing_link_falls_back_to_the_latest_run_folder_and_a_broken_one_is_named(results):
    (results / "llava_cbdsl_VizWiz_acc.csv").unlink()
    assert read_results(results, ["VizWiz"])["benchmarks"]["VizWiz"] == 50.0
    (results / "T20260801-120000" / "llava_cbdsl_GQA_TestDev_Balanced_acc.csv").unlink()
    with pytest.raises(BackendError, match="llava_cbdsl_GQA_TestDev_Balanced_acc.csv is a broken link"):
        read_results(results, ["GQA_TestDev_Balanced"])


@pytest.mark.parametrize("name, columns, rows, expected", [
    ("MME_score", ["perception", "reasoning"], [], "a header and no rows"),
    ("MME_score", ["perceptio", "reasoning"], [[1.0, 2.0]], r"no `perception` column \(its columns: perceptio, "),
    ("MME_score", ["perception", "reasoning"], [["n/a", 2.0]], "`perception` is 'n/a', not a number"),
    ("MME_score", ["perception", "reasoning"], [[2100.0, 2.0]], "`perception` is 2100.0, outside 0-2000"),
    ("MMBench_DEV_EN_acc", ["split", "Overall"], [["dev", 64.0]], "outside 0-1; a fraction is expected"),
    ("MMBench_DEV_EN_acc", ["split", "Overall"], [["dev", 0.6], ["test", 0.7]], r"2 rows, one per split \(dev, test\)"),
    ("POPE_score", ["split", "Overall"], [["random", 80.0]], "no row with split = Overall"),
    ("VizWiz_acc", ["Overall"], [[float("nan")]], "`Overall` is nan, outside 0-100"),
    ("VizWiz_acc", ["Overall"], [[50.0, 3.0]], "more values than the header has columns"),
])
def test_garbled_files_are_named(tmp_path, name, columns, rows, expected):
    folder = tmp_path / "m"
    folder.mkdir()
    dump_csv(folder / f"m_{name}.csv", columns, rows)
    benchmark = name.rsplit("_", 1)[0]
    with pytest.raises(BackendError, match=expected) as err:
        read_results(folder, [benchmark])
    assert str(folder / f"m_{name}.csv") in str(err.value)


def test_no_results_at_all(tmp_path):
    with pytest.raises(BackendError, match="no VLMEvalKit results folder at"):
        read_results(tmp_path / "nowhere")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(BackendError, match=r"the folders of 2 models \(a, b\): name one"):
        read_results(tmp_path)
    with pytest.raises(BackendError, match="no VLMEvalKit result files in .*a: expected files of model `a`"):
        read_results(tmp_path / "a")
    dump_csv(tmp_path / "a" / "a_MME_score.csv", ["perception", "reasoning"], [[1000.0, 300.0]])
    with pytest.raises(BackendError, match="MME, POPE and MMVet score files, not MME-RealWorld's"):
        read_results(tmp_path / "a", ["MME-RealWorld"])


def test_the_reader_as_a_program(results, tmp_path, capsys):
    assert main([str(results), "--benchmarks", "MME,POPE", "--out", str(tmp_path / "m.json")]) == 0
    assert sorted(json.loads((tmp_path / "m.json").read_text())["benchmarks"]) == ["MME", "POPE"]
    assert main([str(tmp_path / "nowhere")]) == 2 and "no VLMEvalKit results folder" in capsys.readouterr().err


def _job(tmp_path: Path) -> Job:
    (tmp_path / "export").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    return Job(pool=None, selection=None, export_dir=tmp_path / "export", workdir=tmp_path / "work", log=lambda m: None)


def test_the_command_backend_reads_a_vlmevalkit_folder(tmp_path):
    job = _job(tmp_path)
    writer = Path(__file__).parent / "data"
    script = (f"import sys; sys.path.insert(0, {str(writer)!r}); from vlmevalkit_files import write_run; "
              f"write_run(__import__('pathlib').Path(sys.argv[1]) / 'eval', 'llava_cbdsl', {SCORES!r})")
    (tmp_path / "eval.py").write_text(script)
    settings = {"command": f"{sys.executable} {tmp_path / 'eval.py'} {{workdir}}", "format": "parquet",
                "metrics": "eval", "metrics_format": "vlmevalkit", "benchmarks": EIGHT}
    backend = make_backend("command", settings)
    metrics = backend.run(job)
    assert list(metrics["benchmarks"]) == EIGHT and metrics["aggregate"] == pytest.approx(
        read_results(job.workdir / "eval", EIGHT)["aggregate"])
    assert backend.suite != make_backend("command", {**settings, "benchmarks": EIGHT[:7]}).suite
    plain = make_backend("command", {"command": settings["command"], "metrics": "eval"})
    assert plain.suite == make_backend("command", {"command": settings["command"]}).suite  # json: as before
    lacking = make_backend("command", {**settings, "benchmarks": [*EIGHT, "MMVet"]})
    with pytest.raises(BackendError, match=r"benchmark MMVet: VLMEvalKit wrote no .*llava_cbdsl_MMVet_\*_score\.csv"):
        lacking.run(job)


@pytest.mark.parametrize("settings, expected", [
    ({"metrics_format": "csv"}, r"metrics_format = 'csv'; choose one of json, vlmevalkit"),
    ({"metrics_format": "vlmevalkit", "benchmarks": "MME"}, "benchmarks must be a list of VLMEvalKit dataset names"),
    ({"benchmarks": ["MME"]}, 'set metrics_format = "vlmevalkit" too'),
])
def test_reading_settings_are_checked(tmp_path, settings, expected):
    for name, base in (("command", {"command": "true"}),
                       ("ray", {"entrypoint": "true", "address": "http://127.0.0.1:1"})):
        backend = make_backend(name, {**base, **settings})
        with pytest.raises(BackendError, match=expected):
            backend.run(_job(tmp_path / name))


def test_the_ray_entrypoint_ships_the_score_files_back_through_its_log(tmp_path):
    """The wrapped entrypoint, run by a shell as a Ray job runs it; its output is the job's log."""
    writer = Path(__file__).parent / "data"
    (tmp_path / "eval.py").write_text(
        f"import sys, pathlib; sys.path.insert(0, {str(writer)!r}); from vlmevalkit_files import write_run; "
        "write_run(pathlib.Path(sys.argv[1]), 'llava_cbdsl', {'MME': 120.0, 'POPE': 80.0, 'MMBench_DEV_EN': 0.5})")
    command = f"{sys.executable} {tmp_path / 'eval.py'} {{workdir}}/eval"
    token = "0123456789abcdef0123456789abcdef"
    from cbdsl.pipelines.loop.backends.command import render

    entry = wrap(render(command, "[backend.ray]", export="e", format="parquet",
                        workdir=f"cbdsl-work-{token[:12]}"), "eval", token, "vlmevalkit")
    log = subprocess.run(["bash", "-c", entry], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert not (tmp_path / f"cbdsl-work-{token[:12]}").exists()  # the job's folder is gone
    folder = files_from_log(log, token, tmp_path / "local", "eval", "job", tmp_path / "job.log")
    metrics = read_results(folder, ["MME", "POPE", "MMBench_DEV_EN"])
    assert metrics["benchmarks"]["MMBench_DEV_EN"] == 50.0 and metrics["benchmarks"]["POPE"] == 80.0
    entry = wrap("true", "eval", token, "vlmevalkit")
    log = subprocess.run(["bash", "-c", entry], cwd=tmp_path, capture_output=True, text=True).stdout
    with pytest.raises(BackendError, match="wrote no VLMEvalKit results folder"):
        files_from_log(log, token, tmp_path / "x", "eval", "job", tmp_path / "job.log")
