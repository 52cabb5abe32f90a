"""``cbdsl submit``: the last compiled policy -> run, budget check, scaffold check, audit, backend, ledger, feedback.

Each step fails with a message that says what to do, and the ledger stays
consistent: the entry is inserted as ``running`` before the work and
finished in one transaction as ``scored``, ``refused`` (budget, scaffold,
audit: the agent's to fix; no iteration used) or ``failed`` (a run or backend
error, or an interruption). Iteration 0 is the random baseline at the
budget, run before the first real submission, as Curation-Bench does.
Nothing is written before the ledger verifies against its witness (outside
the sandbox, :mod:`cbdsl.pipelines.loop.witness`): a tampered ledger blocks submit.
The test part of the backend's scores goes to the researcher's record beside
the witness (:mod:`cbdsl.pipelines.loop.test_scores`), never to the ledger,
the feedback or any file in the sandbox.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbdsl.pipelines.data.exports import export
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.engine.audit import AuditPolicy, audit
from cbdsl.pipelines.engine.engines import run_plan
from cbdsl.pipelines.loop.artifacts import is_stale, read_last
from cbdsl.pipelines.loop.backends import make_backend
from cbdsl.pipelines.loop import test_scores
from cbdsl.pipelines.loop.backends.base import BackendError, Job, split_test
from cbdsl.pipelines.loop.ledger import BASELINE_MESSAGE, Entry, Ledger, LedgerError
from cbdsl.pipelines.loop.sandbox import policy_pool, pool_dir
from cbdsl.pipelines.loop.witness import Witness
from cbdsl.scaffolds.modes import check_submission
from cbdsl.scorers.api import RunError, asset_ids
from cbdsl.stages import compile_source, lower


class Refused(Exception):
    """The submission breaks a rule the agent can fix; nothing is trained."""

    def __init__(self, step: str, message: str, details: Any = None):
        super().__init__(message)
        self.step, self.message, self.details = step, message, details


class SubmitError(Exception):
    """Nothing was submitted (no compiled policy, stale compile, no iterations left); the ledger is unchanged."""


@dataclass
class Feedback:
    entry: Entry
    benchmarks: dict[str, float] = field(default_factory=dict)
    aggregate: float | None = None
    delta_best: float | None = None
    delta_baseline: float | None = None
    rank: int | None = None
    of: int = 0
    iterations_left: int = 0
    warnings: list[str] = field(default_factory=list)
    seed_std: float | None = None  # the aggregate's noise over training seeds, when the recipe is calibrated
    seed_std_source: str = ""

    def to_json(self) -> dict[str, Any]:
        e = self.entry
        return {
            "iteration": e.n, "status": e.status, "message": e.message, "policy_hash": e.policy_hash,
            "selection_hash": e.selection_hash, "selected": e.selected, "audit": e.audit,
            "benchmarks": self.benchmarks, "aggregate": self.aggregate, "delta_best": self.delta_best,
            "delta_baseline": self.delta_baseline, "rank": self.rank, "of": self.of,
            "iterations_left": self.iterations_left, "error": e.error, "warnings": self.warnings,
            "seed_std": self.seed_std, "seed_std_source": self.seed_std_source or None,
        }


BASELINE = """\
policy "baseline"
pool "{pool}"
budget {budget}
select random(seed=0)
"""


def ledger_for(cfg) -> Ledger:
    """The sandbox's ledger, checked against its witness (outside the sandbox)."""
    return Ledger(cfg.state / "ledger.sqlite", witness=Witness.of(cfg))


def _open_pool(cfg):
    return Pool.open(pool_dir(cfg))


def submit(cfg, *, message: str = "", wait: bool = False, log: Callable[[str], None] = print,
           backend=None) -> Feedback:
    """Submit the last compiled policy of the sandbox ``cfg``; returns the feedback."""
    artifact = read_last(cfg.state)
    if artifact is None:
        raise SubmitError("no compiled policy: run `cbdsl compile policy.cur` first")
    source_path = Path(artifact.get("source_path") or cfg.root / artifact["source"])
    if not source_path.is_file():
        raise SubmitError(f"the compiled policy's source {source_path} is gone: compile again")
    try:
        text = source_path.read_bytes().decode("utf-8")  # as `cbdsl compile` read it: no newline translation
    except UnicodeDecodeError as err:
        raise SubmitError(f"{source_path} is no longer UTF-8 text ({err.reason} at byte {err.start}): fix it and "
                          "compile again") from None
    pool = _open_pool(cfg)
    stale = is_stale(artifact, text, pool)
    if stale:
        raise SubmitError(f"{stale}: run `cbdsl compile {source_path.name}` again before submitting")
    backend = backend or make_backend(cfg.backend, cfg.backend_settings)
    ledger = ledger_for(cfg)
    try:
        with ledger.submit_lock(wait=wait, log=log):
            scored = ledger.scored(backend.suite)
            if not any(e.is_baseline for e in scored):
                log(f"iteration {ledger.next_number()}: the baseline (random {cfg.budget} rows)")
                base_text = BASELINE.format(pool=policy_pool(cfg, pool), budget=cfg.budget)
                base = _submit_one(cfg, ledger, pool, backend, base_text, "<baseline>", BASELINE_MESSAGE, log)
                if base.status == "failed":  # the run or the backend is broken: the policy would fail the same way
                    raise SubmitError(f"the baseline (iteration {base.n}) failed: {base.error}; your policy was not "
                                      "submitted and no iteration was used: fix the cause and submit again")
                if base.status == "refused":
                    log(f"the baseline was refused ({base.error}); deltas to the baseline stay empty "
                        "until a later submission scores it")
            used = len([e for e in ledger.scored(backend.suite) if not e.is_baseline])
            if used >= cfg.iterations:
                raise SubmitError(f"no iterations left: all {cfg.iterations} are used "
                                  "(`cbdsl leaderboard` shows your best)")
            entry = _submit_one(cfg, ledger, pool, backend, text, str(source_path), message, log)
            return with_noise(feedback(cfg, ledger, entry, backend.suite), backend)
    finally:
        ledger.close()


def _submit_one(cfg, ledger: Ledger, pool, backend, text: str, name: str, message: str,
                log: Callable[[str], None]) -> Entry:
    compiled = compile_source(text, name, pool)
    n = ledger.start(policy_text=compiled.artifact["canonical_text"], policy_ast=json.dumps(compiled.artifact["ast"]),
                     policy_hash=compiled.artifact["policy_hash"], pool_hash=pool.content_hash,
                     backend=backend.name, suite=backend.suite, message=message)
    timings: dict[str, float] = {}
    run_dir = cfg.state / "runs" / f"{n:04d}"
    try:
        t = time.perf_counter()
        low = lower(compiled.plan, pool.schema, lambda a: asset_ids(pool, a))
        result = run_plan(low, pool, cfg.engine)
        timings["run_s"] = time.perf_counter() - t
        selected = result.selection.height
        fields: dict[str, Any] = {"selection_hash": result.selection_hash(), "selected": selected,
                                  "timings": timings}
        if selected != cfg.budget:
            raise Refused("budget", f"the policy selected {selected} rows; the sandbox's budget is exactly "
                          f"{cfg.budget}: write `budget {cfg.budget}` in the policy")
        if message != BASELINE_MESSAGE:  # the baseline is the scaffold's reference, not an iteration it judges

            reasons = check_submission(cfg.scaffold, compiled.policy, [e for e in ledger.entries() if e.n < n],
                                       message)
            if reasons:
                raise Refused("scaffold", f"scaffold `{cfg.scaffold}` refuses this policy: " + " ".join(reasons))
        t = time.perf_counter()
        verdict = audit(pool, result.selection, AuditPolicy(**cfg.audit))
        timings["audit_s"] = time.perf_counter() - t
        fields["audit"] = verdict.to_json()
        if verdict.verdict == "high risk":
            rows = ", ".join(f"{x['id']} ({x['reason']}, {x['asset']})" for x in verdict.examples)
            raise Refused("audit", f"the audit found {verdict.flagged} of {verdict.rows} selected rows in the "
                          f"evaluation sets (high risk): {rows}; filter them out", verdict.to_json())
        if run_dir.exists():
            shutil.rmtree(run_dir)
        export_dir, workdir = run_dir / "export", run_dir / "work"
        workdir.mkdir(parents=True)
        manifest = export(pool, result.selection, export_dir, "parquet", check=False)  # the executor's ids: see run
        fields["manifest"] = str(manifest)
        if backend.format != "parquet":
            export(pool, result.selection, export_dir, backend.format, check=False)
        t = time.perf_counter()
        scratch = ledger.witness.test_scratch(n) if ledger.witness is not None else None
        metrics, test = split_test(backend.run(Job(pool=pool, selection=result.selection, export_dir=export_dir,
                                                   workdir=workdir, log=log, test_metrics=scratch)))
        timings["backend_s"] = time.perf_counter() - t
        fields["timings"] = timings
        if test is not None and ledger.witness is not None:  # before the entry is finished: never lost
            test_scores.record(ledger.witness, n, fields["selection_hash"], backend.suite, test)
        return ledger.finish(n, "scored", metrics=metrics, aggregate=metrics["aggregate"], **fields)
    except Refused as err:
        return ledger.finish(n, "refused", error=f"{err.step}: {err.message}", **_safe(locals().get("fields")))
    except (RunError, BackendError) as err:
        return ledger.finish(n, "failed", error=getattr(err, "message", str(err)), **_safe(locals().get("fields")))
    except BaseException as err:  # an interruption or a bug: never leave the entry running
        ledger.finish(n, "failed", error=f"{type(err).__name__}: {err}")
        raise


def _safe(fields: dict | None) -> dict:
    return dict(fields or {})


def feedback(cfg, ledger: Ledger, entry: Entry, suite: str) -> Feedback:
    scored = [e for e in ledger.scored(suite)]
    baseline = next((e for e in scored if e.is_baseline), None)
    others = [e for e in scored if e.n != entry.n]
    best_before = max((e.aggregate for e in others if e.n < entry.n), default=None)
    fb = Feedback(entry=entry, of=len(scored),
                  iterations_left=max(0, cfg.iterations - len([e for e in scored if not e.is_baseline])))
    if entry.status == "scored":
        fb.benchmarks = dict(entry.metrics.get("benchmarks", {}))
        fb.aggregate = entry.aggregate
        fb.delta_best = None if best_before is None else entry.aggregate - best_before
        fb.delta_baseline = None if baseline is None or entry.is_baseline else entry.aggregate - baseline.aggregate
        fb.rank = 1 + sum(1 for e in others if e.aggregate > entry.aggregate)
    return fb


def with_noise(fb: Feedback, backend) -> Feedback:
    """The feedback with the backend's calibrated seed std (external backends and changed recipes: none)."""
    fb.seed_std = getattr(backend, "seed_std", None)
    fb.seed_std_source = getattr(backend, "SEED_STD_SOURCE", "") if fb.seed_std is not None else ""
    return fb


def render_feedback(fb: Feedback) -> str:
    e = fb.entry
    head = f"iteration {e.n}: {e.status}" + (f" ({e.message})" if e.message else "")
    if e.status != "scored":
        return f"{head}\n  {e.error}\n  nothing was trained; {fb.iterations_left} iterations left"
    lines = [head]
    for name, score in sorted(fb.benchmarks.items()):
        lines.append(f"  {name:<28} {score:8.4f}")
    noise = f" ± {fb.seed_std:.4f} (seed std of this recipe)" if fb.seed_std else ""
    lines.append(f"  {'aggregate':<28} {fb.aggregate:8.4f}{noise}")
    for label, delta in (("vs best so far ", fb.delta_best), ("vs baseline    ", fb.delta_baseline)):
        if delta is not None:
            stds = f" ({delta / fb.seed_std:+.1f} seed stds)" if fb.seed_std else ""
            lines.append(f"  {label} {delta:+.4f}{stds}")
    lines.append(f"  rank {fb.rank} of {fb.of}; {fb.iterations_left} iterations left")
    if e.audit and e.audit.get("verdict") == "warning":
        lines.append(f"  audit: warning, {e.audit['flagged']} rows overlap an evaluation set")
    return "\n".join(lines)


def reproduce(cfg, n: int) -> tuple[bool, str, str]:
    """Re-run iteration ``n`` from the ledger alone; (same selection?, recorded hash, new hash)."""
    ledger = ledger_for(cfg)
    try:
        entry = ledger.get(n)
    finally:
        ledger.close()
    if entry.selection_hash is None:
        raise LedgerError(f"iteration {n} has no selection to compare ({entry.status})")
    pool = _open_pool(cfg)
    if pool.content_hash != entry.pool_hash:
        raise LedgerError(f"the pool changed since iteration {n} (content hash {pool.content_hash[:12]} vs "
                          f"{entry.pool_hash[:12]}): the selection cannot be reproduced on it")
    compiled = compile_source(entry.policy_text, f"<iteration {n}>", pool)
    result = run_plan(lower(compiled.plan, pool.schema, lambda a: asset_ids(pool, a)), pool, cfg.engine)
    new = result.selection_hash()
    return new == entry.selection_hash, entry.selection_hash, new
