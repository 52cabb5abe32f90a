"""The ``ray`` backend: the train/eval handed to a Ray cluster as a Ray job (Ray Jobs API).

Why: a real train/eval (DataComp's ``train.py``, a LLaVA fine-tune) runs on a
cluster, not in the agent's sandbox. The backend submits the command
template (``entrypoint``, with the ``command`` backend's ``{export}``,
``{format}`` and ``{workdir}`` placeholders) through
``ray.job_submission.JobSubmissionClient`` to the cluster's dashboard
(``address``). The export folder is uploaded as the job's working directory
(``runtime_env.working_dir``), so on the cluster ``{export}`` is a path
relative to the job's directory and ``{workdir}`` a fresh folder beside it,
named per job: Ray unpacks an unchanged upload once and lets jobs share the
folder, so a fixed name would show a later job an earlier job's metrics.
The folder is removed once its metrics are printed; a trainer keeps what
should outlive the job (checkpoints) on the cluster's shared storage.
The job's log is streamed as progress and kept in the run's ``work/ray-job.log``.

The metrics come back through the log: the entrypoint is wrapped so that,
after the command succeeds, the metrics file it wrote (``metrics``, relative
to ``{workdir}``) is printed between two marker lines carrying a per-job
token, which the backend finds in the job's final log. With
``metrics_format = "vlmevalkit"`` the score files of VLMEvalKit's results
folder (``metrics``) are printed so, each under its path; the backend puts
them back in ``work/vlmevalkit/`` and reads them there. Nothing but the Jobs
API is needed between the sandbox and the cluster (no shared disk), and the
cluster needs no cbdsl.

Settings (``[backend.ray]`` in cbdsl.toml): ``address`` (the dashboard,
``http://HOST:8265``; empty: ``$RAY_ADDRESS``), ``entrypoint``, ``format``,
``timeout`` (seconds; the job is stopped past it), ``metrics``,
``metrics_format`` and ``benchmarks`` (as the command backend's),
``entrypoint_num_gpus`` (GPUs the entrypoint needs: Ray then runs it on a
node that has them, not on the head), ``runtime_env`` (a TOML table merged into the job's runtime environment, e.g.
``pip`` or ``env_vars``), ``suite_name``. Needs ``pip install 'cbdsl[ray]'``.
"""

from __future__ import annotations

import os
import shlex
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbdsl.pipelines.loop.backends.base import BackendError, Job
from cbdsl.pipelines.loop.backends.command import (
    check_reading, export_name, parse_metrics, read_metrics, refuse_test_in_sandbox, render, suite_of,
)
from cbdsl.pipelines.loop.backends.vlmevalkit import SCORE_FILES

SECTION = "[backend.ray]"
WORKDIR = "cbdsl-work-{token}"  # the job's {workdir}: made fresh in its working directory, removed after
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class RayBackend:
    address: str = ""
    entrypoint: str = ""
    format: str = "parquet"
    timeout: float = 3600
    metrics: str = "metrics.json"
    metrics_format: str = "json"
    benchmarks: list[str] = field(default_factory=list)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    entrypoint_num_gpus: float = 0
    poll: float = 1.0  # seconds between log reads
    suite_name: str = ""
    name: str = "ray"

    @property
    def suite(self) -> str:
        return suite_of("ray", self.entrypoint, self.suite_name, self.metrics_format, self.benchmarks)

    has_test_part = False  # no place outside the sandbox: the job's log is kept in it

    def run(self, job: Job) -> dict[str, Any]:
        check_reading(SECTION, self.metrics_format, self.benchmarks)
        token = uuid.uuid4().hex
        command = render(self.entrypoint, SECTION, export=export_name(self.format, SECTION), format=self.format,
                         workdir=WORKDIR.format(token=token[:12]))
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            raise BackendError(f"{SECTION}: `timeout` must be a positive number of seconds, not {self.timeout!r}")
        if not isinstance(self.runtime_env, dict):
            raise BackendError(f"{SECTION}: `runtime_env` must be a table (e.g. runtime_env = {{ pip = [\"polars\"] }}), "
                               f"not {self.runtime_env!r}")
        if isinstance(self.entrypoint_num_gpus, bool) or not isinstance(self.entrypoint_num_gpus, (int, float)) \
                or self.entrypoint_num_gpus < 0:
            raise BackendError(f"{SECTION}: `entrypoint_num_gpus` must be a number of GPUs (0: none), not "
                               f"{self.entrypoint_num_gpus!r}")
        if "working_dir" in self.runtime_env:
            raise BackendError(f"{SECTION}: runtime_env.working_dir is the export folder cbdsl uploads; remove it")
        client, address = _client(self.address)
        runtime_env = {**self.runtime_env, "working_dir": str(job.export_dir)}
        submission_id = f"cbdsl-{job.workdir.parent.name}-{token[:8]}"
        try:
            job_id = client.submit_job(entrypoint=wrap(command, self.metrics, token, self.metrics_format),
                                       runtime_env=runtime_env, submission_id=submission_id,
                                       **({"entrypoint_num_gpus": self.entrypoint_num_gpus}
                                          if self.entrypoint_num_gpus else {}),
                                       metadata={"cbdsl_suite": self.suite, "cbdsl_run": str(job.workdir.parent)})
        except Exception as err:  # noqa: BLE001 - Ray raises RuntimeError, ValueError or its own; all mean "not submitted"
            raise BackendError(f"the Ray cluster at {address} refused the job: {_short(err)}; check "
                               f"{SECTION} (runtime_env) and the export's size ({job.export_dir})") from None
        job.log(f"ray: submitted job {job_id} to {address}: {command}")
        log_path = job.workdir / "ray-job.log"
        try:
            status, logs = self._follow(client, job_id, job)
        except Exception as err:  # noqa: BLE001 - the cluster went away or answered nonsense mid-job
            _stop(client, job_id)
            raise BackendError(f"lost track of Ray job {job_id} at {address}: {_short(err)}; check the cluster "
                               f"(`ray job status {job_id} --address {address}`) and submit again") from None
        except BaseException:
            _stop(client, job_id)  # an interrupted submit must not leave the job running on the cluster
            raise
        log_path.write_text(logs)
        if status == "TIMEOUT":
            raise BackendError(f"the Ray job {job_id} ran past its timeout of {self.timeout:g} s and was stopped; "
                               f"its log is in {log_path}; raise `timeout` in {SECTION} if the train/eval needs longer")
        if status != "SUCCEEDED":
            info = _info(client, job_id)
            raise BackendError(f"the Ray job {job_id} {status.lower()}: {info}; its log is in {log_path}:\n"
                               + logs[-800:])
        if self.metrics_format == "vlmevalkit":
            folder = files_from_log(logs, token, job.workdir / "vlmevalkit", self.metrics, job_id, log_path)
            return read_metrics(folder, self.metrics_format, self.benchmarks, f"Ray job {job_id}")
        metrics = metrics_from_log(logs, token, self.metrics, job_id, log_path)
        if "test" in metrics:
            refuse_test_in_sandbox(log_path, "nothing: the ray backend has no test part (its log stays in the sandbox)")
        return metrics

    def _follow(self, client, job_id: str, job: Job) -> tuple[str, str]:
        """Stream the job's new log lines until it ends or times out: (final status or TIMEOUT, the whole log)."""
        deadline = time.monotonic() + self.timeout
        shown = 0
        pending = ""
        while True:
            status = str(client.get_job_status(job_id).value)
            logs = client.get_job_logs(job_id)
            pending += logs[shown:]
            shown = len(logs)
            *lines, pending = pending.split("\n")
            for line in lines:
                job.log(f"ray| {line}")
            if status in _TERMINAL:
                if pending:
                    job.log(f"ray| {pending}")
                return status, logs
            if time.monotonic() > deadline:
                _stop(client, job_id)
                return "TIMEOUT", client.get_job_logs(job_id)
            time.sleep(self.poll)


def wrap(command: str, metrics: str, token: str, metrics_format: str = "json") -> str:
    """The job's shell entrypoint: make {workdir}, run the command, then print the metrics file between markers
    (``vlmevalkit``: each score file under the results folder, after a marker line with its path)."""
    workdir = shlex.quote(WORKDIR.format(token=token[:12]))
    path = shlex.quote(f"{WORKDIR.format(token=token[:12])}/{metrics}")
    begin, end, missing = (f"@@cbdsl-metrics-{kind}-{token}@@" for kind in ("begin", "end", "missing"))
    if metrics_format == "vlmevalkit":
        names = " -o ".join(f"-name {shlex.quote(n)}" for n in SCORE_FILES)
        show = (f"if [ -d {path} ]; then echo; echo {begin}; ( cd {path} && find -L . -maxdepth 3 -type f "
                f"\\( {names} \\) | sort | while IFS= read -r f; do echo \"@@cbdsl-file-{token}@@ $f\"; "
                f"cat \"$f\"; echo; done ); echo {end}; else echo {missing}; fi")
    else:
        show = f"if [ -f {path} ]; then echo; echo {begin}; cat {path}; echo; echo {end}; else echo {missing}; fi"
    return (f"rm -rf {workdir} && mkdir -p {workdir} && ( {command} ) && {show}; status=$?; rm -rf {workdir}; "
            "exit $status")


def files_from_log(logs: str, token: str, into: Path, metrics: str, job_id: str, log_path: Path) -> Path:
    """The files the wrapped entrypoint printed (``vlmevalkit``), written under ``into``; returns the folder."""
    lines = _block(logs, token, metrics, job_id, log_path, "no VLMEvalKit results folder")
    marker = f"@@cbdsl-file-{token}@@ "
    files: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.startswith(marker):
            current = line[len(marker):].strip().removeprefix("./")
            if not current or current.startswith("/") or ".." in Path(current).parts:
                raise BackendError(f"the log of Ray job {job_id} names a file {current!r} outside the results "
                                   f"folder; see {log_path}")
            files[current] = []
        elif current is not None:
            files[current].append(line)
    into.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_text("\n".join(text).strip("\n") + "\n", encoding="utf-8")
    return into


def metrics_from_log(logs: str, token: str, metrics: str, job_id: str, log_path: Path) -> dict[str, Any]:
    """The metrics JSON the wrapped entrypoint printed between its markers."""
    lines = _block(logs, token, metrics, job_id, log_path, "no metrics file")
    return parse_metrics("\n".join(lines), f"{metrics} of Ray job {job_id}")


def _block(logs: str, token: str, metrics: str, job_id: str, log_path: Path, nothing: str) -> list[str]:
    """The lines between the last begin marker and the end marker after it."""
    lines = [line.strip() for line in logs.splitlines()]  # markers count as whole lines (Ray echoes the entrypoint)
    begin, end, missing = (f"@@cbdsl-metrics-{kind}-{token}@@" for kind in ("begin", "end", "missing"))
    if missing in lines:
        raise BackendError(f"the Ray job {job_id} succeeded but its command wrote {nothing}: it must write "
                           f"{{workdir}}/{metrics} (`metrics` in {SECTION}); its log is in {log_path}")
    if begin not in lines or end not in lines[lines.index(begin):]:
        raise BackendError(f"the log of Ray job {job_id} has no metrics block (was it cut?); see {log_path}")
    start = len(lines) - 1 - lines[::-1].index(begin)
    stop = start + lines[start:].index(end)
    return lines[start + 1:stop]


def _client(address: str):
    """A JobSubmissionClient for ``address`` (or $RAY_ADDRESS), with clear errors for every way this fails."""
    address = address or os.environ.get("RAY_ADDRESS", "")
    if not address:
        raise BackendError(f"no Ray cluster address: set `address` in {SECTION} of cbdsl.toml to the cluster's "
                           "dashboard (e.g. http://127.0.0.1:8265), or set $RAY_ADDRESS")
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise BackendError("the ray backend needs Ray's job client: pip install 'cbdsl[ray]' "
                           "(installs ray[default])") from None
    try:
        return JobSubmissionClient(address), address
    except Exception as err:  # noqa: BLE001 - ConnectionError, ValueError for a bad address, Ray's own errors
        raise BackendError(f"cannot reach the Ray cluster at {address}: {_short(err)}; start one "
                           f"(`ray start --head --dashboard-host 127.0.0.1`) or fix `address` in {SECTION} "
                           "(the dashboard's http://HOST:PORT, default port 8265)") from None


def _stop(client, job_id: str) -> None:
    """Stop the job and wait a little for it to end (best effort: the cluster may be gone)."""
    try:
        client.stop_job(job_id)
        for _ in range(20):
            if str(client.get_job_status(job_id).value) in _TERMINAL:
                return
            time.sleep(0.5)
    except Exception:  # noqa: BLE001 - stopping is a courtesy; the error that got us here is what matters
        pass


def _info(client, job_id: str) -> str:
    try:
        info = client.get_job_info(job_id)
    except Exception as err:  # noqa: BLE001
        return f"(no job info: {_short(err)})"
    code = getattr(info, "driver_exit_code", None)
    return (info.message or "no message") + (f" (exit code {code})" if code is not None else "")


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
