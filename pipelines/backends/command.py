"""The ``command`` backend: any external train/eval, as a command template.

``command`` may use ``{export}`` (the exported selection), ``{format}`` and
``{workdir}``; it runs with a timeout, its stdout and stderr are kept in the
run directory, and it must write a metrics JSON (``metrics``, relative to
``{workdir}``) of the form ``{"benchmarks": {...}, "aggregate": x}``.
DataComp's ``train.py``/``evaluate.py``, the LLaVA trainer or
Curation-Bench's backend plug in through a small wrapper script.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbdsl.pipelines.backends import BackendError, Job, check_metrics
from cbdsl.pipelines.exports import FORMATS


@dataclass
class CommandBackend:
    command: str = ""
    format: str = "parquet"
    timeout: float = 3600
    metrics: str = "metrics.json"
    suite_name: str = ""
    name: str = "command"

    @property
    def suite(self) -> str:
        """The command itself identifies the suite (or an explicit ``suite_name``)."""
        return self.suite_name or "command-" + hashlib.sha256(self.command.encode()).hexdigest()[:12]

    def run(self, job: Job) -> dict[str, Any]:
        if not self.command.strip():
            raise BackendError("the command backend has no `command` in cbdsl.toml ([backend.command])")
        if self.format not in FORMATS:
            raise BackendError(f"unknown export format {self.format!r} in [backend.command]")
        export = job.export_dir / FORMATS[self.format]
        cmd = self.command.format(export=shlex.quote(str(export)), format=self.format,
                                  workdir=shlex.quote(str(job.workdir)))
        stdout, stderr = job.workdir / "stdout.txt", job.workdir / "stderr.txt"
        job.log(f"backend: {cmd}")
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            try:
                proc = subprocess.run(cmd, shell=True, stdout=out, stderr=err, timeout=self.timeout,
                                      cwd=job.workdir)
            except subprocess.TimeoutExpired:
                raise BackendError(f"the backend command ran past its timeout of {self.timeout:g} s; "
                                   f"its output is in {stdout} and {stderr}") from None
        if proc.returncode != 0:
            tail = stderr.read_text(errors="replace")[-800:]
            raise BackendError(f"the backend command failed with exit code {proc.returncode}; "
                               f"its output is in {stdout} and {stderr}:\n{tail}")
        path = job.workdir / self.metrics
        try:
            metrics = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise BackendError(f"the backend command wrote no metrics file at {path}") from None
        except json.JSONDecodeError as e:
            raise BackendError(f"{path} is not valid JSON: {e}") from None
        return check_metrics(metrics, str(path))
