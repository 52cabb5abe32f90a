"""The ``command`` backend: any external train/eval, as a command template.

``command`` may use ``{export}`` (the exported selection), ``{format}``,
``{workdir}`` and ``{test_metrics}``; it runs with a timeout, its stdout and stderr are kept in the
run directory, and it must write a metrics JSON (``metrics``, relative to
``{workdir}``) of the form ``{"benchmarks": {...}, "aggregate": x}``; or,
with ``metrics_format = "vlmevalkit"``, VLMEvalKit's results (``metrics``
names its ``--work-dir`` or the model folder in it; ``benchmarks`` lists the
datasets that must be there, :mod:`~cbdsl.pipelines.loop.backends.vlmevalkit`).
A train/eval with a held-out test part writes its scores, in the same
form, to ``{test_metrics}``: a file outside the sandbox that cbdsl records
for the researcher and removes; they must not appear in ``metrics``, stdout
or stderr, which stay in the sandbox where the agent reads them.
DataComp's ``train.py``/``evaluate.py``, the LLaVA trainer or
Curation-Bench's backend plug in through a small wrapper script
(``recipes/llava15/train_eval.sh`` is LLaVA-1.5's). The templating and
metrics reading here are shared with the ``ray`` backend.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbdsl.pipelines.loop.backends.base import BackendError, Job, check_metrics
from cbdsl.pipelines.loop.backends.vlmevalkit import read_results
from cbdsl.pipelines.data.exports import FORMATS

PLACEHOLDERS = ("export", "format", "workdir", "test_metrics")
METRICS_FORMATS = ("json", "vlmevalkit")
"""How a backend's ``metrics`` is read: a metrics JSON file, or a VLMEvalKit results folder."""


def export_name(fmt: str, section: str) -> str:
    """The file (or folder) name the export of ``fmt`` has; a clear error for an unknown format."""
    if fmt not in FORMATS:
        raise BackendError(f"unknown export format {fmt!r} in {section} of cbdsl.toml; "
                           f"choose one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def render(template: str, section: str, *, export: str, format: str, workdir: str,
           test_metrics: str | None = None) -> str:
    """Fill a command template's placeholders (shell-quoted); a bad placeholder is a clear error, not a traceback.
    ``test_metrics`` None: this backend has no place for a test part, and a template naming it is refused."""
    if not template.strip():
        raise BackendError(f"{section} in cbdsl.toml has no command: write the train/eval command, "
                           "with {export}, {format} and {workdir} where it takes them")
    if test_metrics is None and "{test_metrics}" in template:
        raise BackendError(f"{section}: the command names {{test_metrics}}, but here is no place outside the sandbox "
                           "for test scores (the ray backend keeps the job's log in the sandbox, and a submit "
                           "outside `cbdsl submit` has no researcher's record): remove it")
    try:
        return template.format(export=shlex.quote(export), format=shlex.quote(format),
                               workdir=shlex.quote(workdir), test_metrics=shlex.quote(test_metrics or ""))
    except KeyError as err:
        raise BackendError(f"{section}: the command has an unknown placeholder {{{err.args[0]}}}; the placeholders "
                           "are " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                           + " (write {{ and }} for literal braces)") from None
    except (ValueError, IndexError) as err:
        raise BackendError(f"{section}: the command's braces do not parse ({err}); the placeholders are "
                           + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                           + " (write {{ and }} for literal braces)") from None


def suite_of(prefix: str, template: str, suite_name: str, metrics_format: str = "json",
             benchmarks: Sequence[str] = ()) -> str:
    """A template identifies its suite (or an explicit ``suite_name``): a changed command is another suite, and
    so is another set of VLMEvalKit benchmarks (the aggregate is their mean)."""
    if metrics_format != "json":
        template += f"\n{metrics_format}:{','.join(benchmarks)}"
    return suite_name or f"{prefix}-" + hashlib.sha256(template.encode()).hexdigest()[:12]


def check_reading(section: str, metrics_format: Any, benchmarks: Any) -> None:
    """The ``metrics_format`` and ``benchmarks`` settings, or a BackendError saying what they may be."""
    if metrics_format not in METRICS_FORMATS:
        raise BackendError(f"{section}: metrics_format = {metrics_format!r}; choose one of "
                           f"{', '.join(METRICS_FORMATS)} (vlmevalkit: `metrics` names VLMEvalKit's results folder)")
    if not isinstance(benchmarks, list | tuple) or not all(isinstance(b, str) and b for b in benchmarks):
        raise BackendError(f"{section}: benchmarks must be a list of VLMEvalKit dataset names, e.g. "
                           f'benchmarks = ["MME", "POPE"], not {benchmarks!r}')
    if benchmarks and metrics_format != "vlmevalkit":
        raise BackendError(f"{section}: benchmarks names VLMEvalKit datasets: set metrics_format = \"vlmevalkit\" "
                           "too, or remove it")


def read_metrics(path: Path, metrics_format: str, benchmarks: Sequence[str], what: str) -> dict[str, Any]:
    """The metrics at ``path``: a metrics JSON file, or (``vlmevalkit``) VLMEvalKit's results folder."""
    if metrics_format == "vlmevalkit":
        return read_results(path, benchmarks)
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, IsADirectoryError):
        raise BackendError(f"{what} wrote no metrics file at {path}") from None
    return parse_metrics(text, str(path))


def parse_metrics(text: str, where: str) -> dict[str, Any]:
    """Metrics JSON text -> checked metrics; ``where`` names the file in the error."""
    try:
        return check_metrics(json.loads(text), where)
    except json.JSONDecodeError as err:
        raise BackendError(f"{where} is not valid JSON: {err}") from None


@dataclass
class CommandBackend:
    command: str = ""
    format: str = "parquet"
    timeout: float = 3600
    metrics: str = "metrics.json"
    metrics_format: str = "json"
    benchmarks: list[str] = field(default_factory=list)
    suite_name: str = ""
    name: str = "command"

    @property
    def suite(self) -> str:
        return suite_of("command", self.command, self.suite_name, self.metrics_format, self.benchmarks)

    @property
    def has_test_part(self) -> bool:
        return "{test_metrics}" in self.command

    def run(self, job: Job) -> dict[str, Any]:
        section = "[backend.command]"
        check_reading(section, self.metrics_format, self.benchmarks)
        export = job.export_dir / export_name(self.format, section)
        test_file = job.test_metrics
        if test_file is not None:
            test_file.unlink(missing_ok=True)  # a file left by an interrupted run is not this run's
        cmd = render(self.command, section, export=str(export), format=self.format, workdir=str(job.workdir),
                     test_metrics=None if test_file is None else str(test_file))
        stdout, stderr = job.workdir / "stdout.txt", job.workdir / "stderr.txt"
        shown = cmd if test_file is None else cmd.replace(shlex.quote(str(test_file)), "{test_metrics}")
        job.log(f"backend: {shown}")  # the agent reads this: where the test scores go stays unsaid
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
        metrics = read_metrics(job.workdir / self.metrics, self.metrics_format, self.benchmarks, "the backend command")
        if "test" in metrics:
            refuse_test_in_sandbox(job.workdir / self.metrics, "{test_metrics}")
        if test_file is not None and test_file.is_file():
            try:
                metrics["test"] = parse_metrics(test_file.read_text(), f"the test scores {{test_metrics}}")
            finally:
                test_file.unlink(missing_ok=True)
        return metrics


def refuse_test_in_sandbox(path: Path, where: str) -> None:
    """A metrics file in the sandbox carries a ``test`` part: remove the file (the agent must not read it) and
    say where test scores go instead."""
    Path(path).unlink(missing_ok=True)
    raise BackendError(f"{path} holds test scores, in the sandbox where the agent reads them; it was removed: "
                       f"write the test part to {where} instead")
