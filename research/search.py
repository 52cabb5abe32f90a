"""``cbdsl search``: a non-LLM searcher that proposes policies and submits them through the loop.

Why: the benchmark needs an automated baseline, so that the scaling of
curation search with iterations can be measured without an agent, on the
same sandbox, budget, scaffold and backend an agent gets. Two strategies:

- ``mutate``: hill climbing. Each step applies one operator of
  :mod:`cbdsl.research.mutate` to the best scored policy of the ledger so far (the
  sandbox's ``policy.cur`` before anything is scored).
- ``random``: each step is an independent random policy, 1 to 3 mutations of
  the minimal policy (the random baseline).

A proposal is put in the sandbox's frame (its pool, its exact budget, a
name; ``cite``/``adapt`` clauses naming the methods it instantiates when the
scaffold asks for them), then it must pass ``cbdsl check`` against the pool,
be accepted by the scaffold, select exactly the budget in a dry run, and
select a set of rows that no earlier iteration selected (a new order of the
same rows is no new data). Otherwise it is redrawn with
the next random stream, seeded by (seed, strategy, ledger position, draw), so
a search is deterministic for a seed and a sandbox state. A valid proposal is
written under ``.cbdsl/search/``, compiled and submitted as ``cbdsl compile
FILE && cbdsl submit -m MESSAGE`` do, the message naming the mutation.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbdsl.dsl import ast
from cbdsl.dsl.format import canonical_text, format_policy
from cbdsl.dsl.parser import parse, parse_diagnostics
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.roots import resolve_pool
from cbdsl.pipelines.engine.execute import execute
from cbdsl.pipelines.loop.artifacts import write_artifact
from cbdsl.pipelines.loop.backends import make_backend
from cbdsl.pipelines.loop.submit import BASELINE, ledger_for, submit
from cbdsl.research.mutate import mutate, random_policy, vocabulary, with_citations, with_clauses, with_frame
from cbdsl.scaffolds.modes import check_policy, history_of, research_message
from cbdsl.scorers.api import RunError, asset_ids
from cbdsl.stages import check_source, compile_source, lower

STRATEGIES = ("mutate", "random")


class SearchError(Exception):
    """The search cannot start (no iterations left, a bad option); the message says what to do."""


@dataclass(frozen=True)
class Step:
    """One submitted proposal."""

    iteration: int
    kind: str
    description: str
    status: str
    aggregate: float | None
    best: float | None  # best aggregate of the ledger after this step
    draws: int  # proposals drawn for this step (1 when the first was valid)
    error: str | None = None


@dataclass
class SearchResult:
    strategy: str
    seed: int
    steps: list[Step] = field(default_factory=list)
    baseline: float | None = None
    best_iteration: int | None = None
    best: float | None = None
    best_policy: str | None = None
    stopped: str | None = None  # why it ended before the asked number of steps

    def best_after(self, k: int) -> float | None:
        """The best aggregate among the baseline and the first ``k`` steps (the scaling curve)."""
        scores = [s.aggregate for s in self.steps[:k] if s.aggregate is not None]
        if self.baseline is not None:
            scores.append(self.baseline)
        return max(scores, default=None)

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "seed": self.seed, "baseline": self.baseline, "best": self.best,
                "best_iteration": self.best_iteration, "best_policy": self.best_policy, "stopped": self.stopped,
                "steps": [vars(s) for s in self.steps]}


@dataclass(frozen=True)
class _Proposal:
    mutation: Any  # cbdsl.research.mutate.Mutation
    text: str
    compiled: Any
    draws: int


def search(cfg, *, iterations: int, strategy: str = "mutate", seed: int = 0, max_cost: str = "gpu_model",
           exclude: frozenset[str] = frozenset(), max_draws: int = 50, log: Callable[[str], None] = print,
           backend=None) -> SearchResult:
    """Run ``iterations`` search steps in the sandbox ``cfg``; each submits one proposal through the loop."""
    if strategy not in STRATEGIES:
        raise SearchError(f"unknown strategy {strategy!r}: choose {' or '.join(STRATEGIES)}")
    pool = open_pool(cfg)
    vocab = vocabulary(pool.schema, pool.card.stats, id_column=pool.id_column, max_cost=max_cost, exclude=exclude)
    backend = backend or make_backend(cfg.backend, cfg.backend_settings)
    result = SearchResult(strategy=strategy, seed=seed)
    left = _iterations_left(cfg, backend.suite)
    if left == 0:
        raise SearchError(f"no iterations left: all {cfg.iterations} of the sandbox are used "
                          "(`cbdsl leaderboard` shows the best; make a new sandbox with `cbdsl init` to search again)")
    if iterations > left:
        log(f"search: the sandbox has {left} iterations left; running {left} steps, not {iterations}")
    for step in range(min(iterations, left)):
        ledger = ledger_for(cfg)
        try:
            entries = ledger.entries()
            position = ledger.next_number()
        finally:
            ledger.close()
        parent = _parent(cfg, entries, strategy)
        proposal = _propose(cfg, pool, vocab, parent, entries, strategy, seed, position, max_draws)
        if isinstance(proposal, str):
            result.stopped = f"step {step + 1}: {proposal}"
            break
        feedback = _submit(cfg, proposal, strategy, seed, step, log, backend)
        entry = feedback.entry
        known = result.baseline
        _record(result, cfg, backend.suite)
        if known is None and result.baseline is not None:
            log(f"search: the baseline (iteration 0, random selection) scored {result.baseline:.4f}")
        m = proposal.mutation
        result.steps.append(Step(entry.n, m.kind, m.description, entry.status, entry.aggregate, result.best,
                                 proposal.draws, entry.error))
        score = f"{entry.aggregate:.4f}" if entry.aggregate is not None else entry.status
        best = f"{result.best:.4f}" if result.best is not None else "-"
        log(f"search step {step + 1}: iteration {entry.n} {score} (best {best}) {m.description}")
        if entry.status == "failed":
            result.stopped = f"step {step + 1}: iteration {entry.n} failed: {entry.error}"
            break
    _record(result, cfg, backend.suite)
    return result


def open_pool(cfg):
    """The sandbox's pool, found as ``submit`` finds it (the sandbox's ``pools/`` first)."""
    return Pool.open(resolve_pool(cfg.pool, search=[cfg.root / "pools"]))


def _iterations_left(cfg, suite: str) -> int:
    ledger = ledger_for(cfg)
    try:
        ledger.require_intact()  # a tampered ledger blocks the search before its first proposal
        used = len([e for e in ledger.scored(suite) if not e.is_baseline])
    finally:
        ledger.close()
    return max(0, cfg.iterations - used)


def _record(result: SearchResult, cfg, suite: str) -> None:
    """Baseline and best of the ledger (earlier iterations count: the search climbs from the best there is)."""
    ledger = ledger_for(cfg)
    try:
        scored = ledger.scored(suite)
    finally:
        ledger.close()
    result.baseline = next((e.aggregate for e in scored if e.is_baseline), None)
    best = _best(scored)
    if best is not None:
        result.best, result.best_iteration, result.best_policy = best.aggregate, best.n, best.policy_text


def _best(entries):
    scored = [e for e in entries if e.status == "scored" and e.aggregate is not None]
    return max(scored, key=lambda e: (e.aggregate, -e.n), default=None)


def _frame(cfg, policy: ast.Policy, strategy: str, seed: int) -> ast.Policy:
    return with_frame(policy, name=f"search-{strategy}-seed{seed}", pool=cfg.pool, budget=cfg.budget)


def _parent(cfg, entries, strategy: str) -> ast.Policy:
    """What the next proposal mutates: the best scored policy (mutate) or the minimal policy (random)."""
    best = _best(entries) if strategy == "mutate" else None
    if best is not None:
        return parse_diagnostics(best.policy_text, f"<iteration {best.n}>")[0]
    if strategy == "mutate" and (cfg.root / "policy.cur").is_file():
        policy, _ = parse_diagnostics((cfg.root / "policy.cur").read_bytes().decode("utf-8"), "policy.cur")
        if policy is not None:
            return policy
    return _baseline(cfg)


def _baseline(cfg) -> ast.Policy:
    """The random baseline that ``submit`` runs as iteration 0."""
    return parse(BASELINE.format(pool=cfg.pool, budget=cfg.budget), "<baseline>")


def _key(policy: ast.Policy) -> str:
    """What makes two proposals the same: the canonical text without name, citations and adapt notes."""
    kept = [c for c in policy.clauses if not isinstance(c, (ast.PolicyClause, ast.Cite, ast.Adapt))]
    return canonical_text(with_clauses(policy, kept))


def _propose(cfg, pool, vocab, parent: ast.Policy, entries, strategy: str, seed: int, position: int,
             max_draws: int) -> _Proposal | str:
    """The first valid proposal of the step's random streams, or why none of ``max_draws`` was valid."""
    import polars as pl

    seen_policies = {_key(p) for p in (parse_diagnostics(e.policy_text)[0] for e in entries) if p is not None}
    seen_selections = {_rows_hash(pl.read_parquet(e.manifest)) for e in entries
                       if e.manifest and Path(e.manifest).is_file()}
    parent = _frame(cfg, parent, strategy, seed)
    history = history_of(entries)
    if not any(e.is_baseline and e.status == "scored" for e in entries):
        history.insert(0, (0, _baseline(cfg)))  # submit runs the baseline first; the scaffold compares with it
    last = "no operator applies to the policy"
    for draw in range(max_draws):
        rng = random.Random(f"{seed}/{strategy}/{position}/{draw}")
        m = mutate(parent, rng, vocab) if strategy == "mutate" else random_policy(parent, rng, vocab)
        if m is None:
            continue
        policy = _frame(cfg, m.policy, strategy, seed)
        if cfg.scaffold in ("cite", "adapt"):
            policy = with_citations(policy, f"cbdsl search ({strategy}, seed {seed}) wrote", vocab)
        if _key(policy) in seen_policies:
            last = "every proposal repeats an earlier iteration"
            continue
        text = format_policy(policy)
        name = f"<search {strategy} seed {seed}>"
        checked, diags = check_source(text, name, pool.schema)
        errors = [d for d in diags if d.is_error]
        if checked is None or errors:
            last = f"proposals do not check ({errors[0].code}: {errors[0].message})" if errors else "parse error"
            continue
        refusal = [v.text for v in check_policy(cfg.scaffold, checked, history)]
        if refusal:
            last = f"scaffold `{cfg.scaffold}` refuses the proposals: {'; '.join(refusal)}"
            continue
        compiled = compile_source(text, name, pool)
        try:
            run = _dry_run(compiled, pool)
        except RunError as err:
            last = f"proposals cannot run: {err.message}"
            continue
        if run.selection.height != cfg.budget:
            last = f"proposals select {run.selection.height} rows, not the budget of {cfg.budget}"
            continue
        if _rows_hash(run.selection) in seen_selections:
            last = "every proposal selects the same rows as an earlier iteration"
            continue
        return _Proposal(dataclasses.replace(m, policy=policy), text, compiled, draw + 1)
    return f"no valid proposal in {max_draws} draws (the last reason: {last})"


def _rows_hash(selection) -> str:
    """sha256 of the selected ids as a set: a new order of the same rows trains on the same data."""
    import hashlib

    ids = sorted(str(v) for v in selection.get_column(selection.columns[0]).to_list())
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


def _dry_run(compiled, pool):
    """The run of a compiled policy, as ``submit`` runs it (its selection and selection hash)."""
    low = lower(compiled.plan, pool.schema, lambda a: asset_ids(pool, a))
    return execute(low, pool)


def _submit(cfg, proposal: _Proposal, strategy: str, seed: int, step: int, log, backend):
    m = proposal.mutation
    path = cfg.state / "search" / f"{strategy}-seed{seed}-step{step + 1:03d}.cur"
    message = f"search {strategy} seed {seed}: {m.kind}: {m.description}"
    if cfg.scaffold == "research":  # the protocol's note, in a searcher's honest words
        message = research_message(f"cbdsl search ({strategy}, seed {seed}) starts from its current policy",
                                   f"a {m.kind} move changes the selection for the better", m.description,
                                   summary=message)
    return submit_text(cfg, proposal.text, path, message=message, log=log, backend=backend,
                       compiled=proposal.compiled)


def submit_text(cfg, text: str, path, *, message: str, log: Callable[[str], None] = print, backend=None,
                compiled=None):
    """Write ``text`` to ``path``, compile and submit it as ``cbdsl compile PATH && cbdsl submit -m MESSAGE`` do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if compiled is None:
        compiled = compile_source(text, path.name, open_pool(cfg))
    write_artifact({**compiled.artifact, "source": path.name, "source_path": str(path)}, cfg.state)
    return submit(cfg, message=message, log=log, backend=backend)


def render(result: SearchResult) -> str:
    """The search in words: each step, the best, and why it stopped early (if it did)."""
    lines = [f"search ({result.strategy}, seed {result.seed}): {len(result.steps)} steps"]
    for i, s in enumerate(result.steps, 1):
        score = f"{s.aggregate:.4f}" if s.aggregate is not None else s.status
        lines.append(f"  {i:>3}. iteration {s.iteration:<4} {score:>8}  {s.kind}: {s.description}")
    if result.baseline is not None:
        lines.append(f"baseline (random selection): {result.baseline:.4f}")
    if result.best is not None:
        lines.append(f"best: iteration {result.best_iteration}, {result.best:.4f} "
                     f"(`cbdsl show {result.best_iteration}` prints its policy)")
    if result.stopped:
        lines.append(f"stopped early at {result.stopped}")
    return "\n".join(lines)
