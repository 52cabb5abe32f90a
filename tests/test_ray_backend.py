"""The ``ray`` backend: jobs really submitted to a local Ray head on loopback.

The head (``ray start --head --block`` in its own process group, one CPU,
dashboard on 127.0.0.1) is started once per module and its process group is
ended at the end. Fast tests cover the errors that need no cluster; the
cluster tests are marked ``slow`` (the head alone takes 10-20 s to start on
two cores): a real mini train/eval through ``cbdsl submit`` recorded in the
ledger, a failing job, a job past its timeout, a job that writes no metrics.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.loop.backends.base import BackendError, Job
from cbdsl.pipelines.loop.backends import make_backend
from cbdsl.pipelines.loop.backends.ray_job import RayBackend, metrics_from_log, wrap
from cbdsl.pipelines.data.demo import make_demo
from test_loop import ledger_rows

METRICS_SCRIPT = """\
import json, sys, polars as pl
sel = pl.read_parquet(sys.argv[1])
print(f"read {sel.height} selected rows", flush=True)
json.dump({"benchmarks": {"rows": sel.height / 1000, "top_rank": int(sel["rank"].min())}}, open(sys.argv[2], "w"))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on loopback: its dashboard address; the head's process group is ended afterwards."""
    from ray.job_submission import JobSubmissionClient

    ray = Path(sys.executable).with_name("ray")
    temp = tempfile.mkdtemp(prefix="cbray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    dashboard = _free_port()
    log = open(Path(temp) / "head.log", "wb")
    proc = subprocess.Popen([str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                             "--port", str(_free_port()), "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(dashboard), "--num-cpus", "1", "--include-dashboard", "true",
                             "--disable-usage-stats", "--temp-dir", temp],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                JobSubmissionClient(address)
                break
            except ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the Ray head did not start: " + (Path(temp) / "head.log").read_text()[-2000:])
                time.sleep(1)
        yield address
    finally:
        proc.terminate()  # `ray start --block` ends the head's processes when it is terminated
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left (a hung shutdown)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pools")
    make_demo(root / "demo", rows=600, seed=0)
    return root


def job_for(tmp_path: Path, rows: int = 3) -> Job:
    """A Job whose export folder holds a real selection.parquet."""
    import polars as pl

    export = tmp_path / "export"
    export.mkdir()
    pl.DataFrame({"id": [f"d{i:06d}" for i in range(rows)], "rank": list(range(1, rows + 1))}).write_parquet(
        export / "selection.parquet")
    work = tmp_path / "work"
    work.mkdir()
    return Job(pool=None, selection=None, export_dir=export, workdir=work, log=lambda m: None)


def sandbox(root: Path, pools: Path, monkeypatch, address: str, entrypoint: str, timeout: float = 300) -> Path:
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    result = CliRunner().invoke(cli, ["init", str(root), "--backend", "ray", "--budget", "100", "--iterations", "3"])
    assert result.exit_code == 0, result.output
    cfg = (root / "cbdsl.toml").read_text()
    head, _sep, _rest = cfg.partition("[backend.ray]")
    (root / "cbdsl.toml").write_text(head + "[backend.ray]\n" + f"address = {json.dumps(address)}\n"
                                     f"entrypoint = {json.dumps(entrypoint)}\ntimeout = {timeout}\n")
    (root / "policy.cur").write_text('policy "p"\npool "demo"\nfilter words(text) > 2\nbudget 100\n'
                                     "select random(seed=4)\n")
    monkeypatch.chdir(root)
    return root


def submit(*args: str) -> tuple[int, str]:
    assert CliRunner().invoke(cli, ["compile", "policy.cur"]).exit_code == 0
    result = CliRunner().invoke(cli, ["submit", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


# ---------------------------------------------------------------- no cluster needed


def test_settings_and_template_errors_are_clear(tmp_path):
    with pytest.raises(BackendError, match=r"unknown setting\(s\) command; its settings are address, entrypoint"):
        make_backend("ray", {"command": "python train.py"})
    job = job_for(tmp_path)
    with pytest.raises(BackendError, match=r"\[backend.ray\] in cbdsl.toml has no command"):
        RayBackend(address="http://127.0.0.1:1", entrypoint=" ").run(job)
    with pytest.raises(BackendError, match=r"unknown placeholder \{exprot\}; the placeholders are \{export\}"):
        RayBackend(address="http://127.0.0.1:1", entrypoint="train {exprot}").run(job)
    with pytest.raises(BackendError, match="unknown export format 'csv'"):
        RayBackend(address="http://127.0.0.1:1", entrypoint="train {export}", format="csv").run(job)
    with pytest.raises(BackendError, match="`timeout` must be a positive number of seconds, not 'soon'"):
        RayBackend(address="http://127.0.0.1:1", entrypoint="train {export}", timeout="soon").run(job)
    with pytest.raises(BackendError, match="`runtime_env` must be a table"):
        RayBackend(address="http://127.0.0.1:1", entrypoint="train {export}", runtime_env="pip").run(job)
    with pytest.raises(BackendError, match="runtime_env.working_dir is the export folder cbdsl uploads"):
        RayBackend(address="http://127.0.0.1:1", entrypoint="train {export}", runtime_env={"working_dir": "."}).run(job)


def test_no_address_unreachable_cluster_and_missing_ray(tmp_path, monkeypatch):
    job = job_for(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(BackendError, match=r"no Ray cluster address: set `address` in \[backend.ray\]"):
        RayBackend(entrypoint="train {export}").run(job)
    port = _free_port()  # nothing listens there
    with pytest.raises(BackendError, match=f"cannot reach the Ray cluster at http://127.0.0.1:{port}.*ray start --head"):
        RayBackend(address=f"http://127.0.0.1:{port}", entrypoint="train {export}").run(job)
    monkeypatch.setitem(sys.modules, "ray.job_submission", None)  # as if Ray were not installed
    with pytest.raises(BackendError, match=r"pip install 'cbdsl\[ray\]'"):
        RayBackend(address="http://127.0.0.1:1", entrypoint="train {export}").run(job)


def test_metrics_block_is_found_by_whole_marker_lines(tmp_path):
    token = "t0k"
    entry = wrap("python train.py", "metrics.json", token)
    echoed = f"Running entrypoint for job x: {entry}\n"  # Ray echoes the entrypoint, markers included
    log = echoed + "training\n\n@@cbdsl-metrics-begin-t0k@@\n{\"benchmarks\": {\"a\": 0.5}}\n@@cbdsl-metrics-end-t0k@@\n"
    assert metrics_from_log(log, token, "metrics.json", "x", tmp_path / "log") == {
        "benchmarks": {"a": 0.5}, "aggregate": 0.5}
    with pytest.raises(BackendError, match="no metrics block"):
        metrics_from_log(echoed, token, "metrics.json", "x", tmp_path / "log")
    with pytest.raises(BackendError, match=r"wrote no metrics file: it must write \{workdir\}/metrics.json"):
        metrics_from_log(echoed + "@@cbdsl-metrics-missing-t0k@@\n", token, "metrics.json", "x", tmp_path / "log")
    bad = echoed + "@@cbdsl-metrics-begin-t0k@@\n{not json\n@@cbdsl-metrics-end-t0k@@\n"
    with pytest.raises(BackendError, match="not valid JSON"):
        metrics_from_log(bad, token, "metrics.json", "x", tmp_path / "log")


# ---------------------------------------------------------------- a real cluster


@pytest.mark.slow
def test_mini_train_eval_as_a_ray_job_is_scored_in_the_ledger(ray_head, pools, tmp_path, monkeypatch):
    """`cbdsl submit` with the ray backend: the mini recipe (tiny) really trains on the cluster."""
    entry = (f"{sys.executable} -m cbdsl.pipelines.loop.backends.mini {{export}} --pool {pools / 'demo'} "
             "--metrics {workdir}/metrics.json --steps 3 --batch-size 32 --eval-rows 64 --threads 1")
    root = sandbox(tmp_path / "sb", pools, monkeypatch, ray_head, entry)
    code, out = submit("--json", "-m", "words filter on ray")
    assert code == 0, out
    fb = json.loads(out[out.index("\n{") + 1:])  # the feedback follows the streamed log lines
    assert fb["status"] == "scored" and fb["iteration"] == 1
    assert set(fb["benchmarks"]) == {"zeroshot_shape", "zeroshot_color", "zeroshot_size", "zeroshot_position",
                                     "zeroshot_texture", "retrieval_image_to_text_r1", "retrieval_text_to_image_r1"}
    rows = ledger_rows(root)
    assert [r["status"] for r in rows] == ["scored", "scored"] and rows[1]["backend"] == "ray"
    assert json.loads(rows[1]["metrics"])["train_rows"] == 100
    log = (root / ".cbdsl" / "runs" / "0001" / "work" / "ray-job.log").read_text()
    assert "mini: training a small CLIP on 100 pairs" in log and "ray|" in out  # the log was streamed too


@pytest.mark.slow
def test_failing_timed_out_and_metricless_jobs_fail_cleanly(ray_head, pools, tmp_path, monkeypatch):
    script = tmp_path / "metrics.py"
    script.write_text(METRICS_SCRIPT)
    root = sandbox(tmp_path / "sb", pools, monkeypatch, ray_head,
                   f"{sys.executable} {script} {{export}} {{workdir}}/metrics.json")
    code, out = submit()
    assert code == 0, out  # the baseline and iteration 1 both scored through the cluster
    assert [r["status"] for r in ledger_rows(root)] == ["scored", "scored"]
    assert json.loads(ledger_rows(root)[1]["metrics"])["benchmarks"] == {"rows": 0.1, "top_rank": 1.0}

    def reconfigure(entrypoint: str, timeout: float = 300) -> None:
        cfg = (root / "cbdsl.toml").read_text()
        head, _sep, _rest = cfg.partition("[backend.ray]")
        (root / "cbdsl.toml").write_text(head + "[backend.ray]\n" + f"address = {json.dumps(ray_head)}\n"
                                         f"entrypoint = {json.dumps(entrypoint)}\ntimeout = {timeout}\n")
        accepted = CliRunner().invoke(cli, ["verify", "--accept-settings"])  # the researcher changed them on purpose
        assert accepted.exit_code == 0, accepted.output

    reconfigure(f"{sys.executable} -c \"import sys; print('out of memory', file=sys.stderr); sys.exit(3)\"")
    code, out = submit()
    assert code == 1 and "failed" in out and "exit code 3" in out and "out of memory" in out, out
    assert "ray-job.log" in out
    reconfigure("sleep 60", timeout=3)
    start = time.monotonic()
    code, out = submit()
    assert code == 1 and "ran past its timeout of 3 s and was stopped" in out, out
    assert time.monotonic() - start < 45
    reconfigure("true")
    code, out = submit()
    assert code == 1 and "wrote no metrics file" in out, out
    rows = ledger_rows(root)
    assert [r["status"] for r in rows] == ["scored", "scored", "failed", "failed", "failed"]
    assert "timeout" in rows[3]["error"]
    assert "hash chain verified" in CliRunner().invoke(cli, ["verify"]).output

    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_head)
    stopped = [j for j in client.list_jobs() if j.entrypoint and "sleep 60" in j.entrypoint]
    assert stopped and all(j.status == JobStatus.STOPPED for j in stopped)  # the timed-out job is not left running
