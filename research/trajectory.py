"""A run's trajectory: what each iteration changed, which method families it used and introduced, how it scored.

The research question behind the scaffolds is whether an agent explores new
method families or tunes local knobs. The ledger holds every scored policy,
so each iteration's change class is the AST diff to the iteration before it
(:mod:`cbdsl.dsl.diff`), with the families of every earlier iteration as
what is not new. The summary gives the shares the research reports.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import PolicyError
from cbdsl.dsl.diff import diff_policies, policy_families
from cbdsl.pipelines.loop import test_scores
from cbdsl.pipelines.loop.ledger import LedgerBroken, LedgerError
from cbdsl.pipelines.loop.sandbox import SandboxError, load
from cbdsl.pipelines.loop.submit import ledger_for
from cbdsl.pipelines.loop.witness import Witness
from cbdsl.scaffolds.catalogue import family_of
from cbdsl.scaffolds.modes import history_of, research_note


@dataclass(frozen=True)
class Step:
    """One scored iteration. ``delta`` is against the best before it; ``best`` includes it."""

    iteration: int
    message: str
    change: str  # "baseline" for the first scored iteration, else a diff class
    families: tuple[str, ...]
    introduced: tuple[str, ...]
    cited: tuple[str, ...]
    score: float | None
    delta: float | None
    best: float | None
    note: dict[str, str] | None = None  # the research note of its message (observation, hypothesis, change)
    test: float | None = None  # the test part's aggregate (researcher's record; only with --test)

    @property
    def improved(self) -> bool:
        return self.delta is not None and self.delta > 0

    @property
    def gap(self) -> float | None:
        """Dev minus test: how much of the score the feedback's own questions explain (fitting the feedback)."""
        return None if self.score is None or self.test is None else self.score - self.test


def steps(history: Sequence[tuple[int, ast.Policy]], entries, tests: dict[int, dict] | None = None) -> list[Step]:
    """The steps of scored iterations ``history`` (``(n, policy)`` in order); ``entries`` give messages and scores,
    ``tests`` the test scores by iteration (:func:`cbdsl.pipelines.loop.test_scores.read`)."""
    tests = tests or {}
    by_n = {e.n: e for e in entries}
    out: list[Step] = []
    seen: frozenset[str] = frozenset()
    best: float | None = None
    for k, (n, policy) in enumerate(history):
        families = policy_families(policy, family_of)
        change = "baseline" if k == 0 else diff_policies(history[k - 1][1], policy, prior_families=seen,
                                                                  family_of=family_of).change
        score = by_n[n].aggregate
        delta = None if best is None or score is None else score - best
        best = score if best is None else max(best, score) if score is not None else best
        cited = tuple(m.name for c in policy.of_kind(ast.Cite) for m in c.methods)
        out.append(Step(n, by_n[n].message, change, tuple(sorted(families)), tuple(sorted(families - seen)),
                        cited, score, delta, best, research_note(by_n[n].message),
                        tests[n]["aggregate"] if n in tests else None))
        seen |= families
    return out


def summary(run: Sequence[Step], refused: int = 0, failed: int = 0, tested: bool = False) -> dict:
    """The shares the research reports, over the iterations after the baseline; ``tested``: also the test score
    of the best iteration (the one the dev feedback picks) and the mean dev-test gap."""
    tried = [s for s in run if s.change != "baseline"]
    n = len(tried)
    top = max((s for s in run if s.score is not None), key=lambda s: (s.score, -s.iteration), default=None)
    test = {}
    if tested:
        gaps = [s.gap for s in run if s.gap is not None]
        test = {"best_test": top.test if top else None, "mean_gap": sum(gaps) / len(gaps) if gaps else None,
                "top_test": max((s.test for s in run if s.test is not None), default=None)}
    return {
        "iterations": n,
        "new_family_share": _share(sum(bool(s.introduced) for s in tried), n),
        "literal_share": _share(sum(s.change == "literal" for s in tried), n),
        "improved_share": _share(sum(s.improved for s in tried), n),
        "best_iteration": top.iteration if top else None,
        "best_score": top.score if top else None,
        "classes": dict(sorted(Counter(s.change for s in tried).items())),
        "families_introduced": sorted({f for s in tried for f in s.introduced}),
        "refused": refused,
        "failed": failed,
        **test,
    }


def _share(count: int, n: int) -> float | None:
    return None if n == 0 else count / n


@dataclass(frozen=True)
class Run:
    """One sandbox's trajectory: its name, scaffold, steps and summary."""

    name: str
    scaffold: str
    steps: tuple[Step, ...]
    summary: dict
    problems: str | None = None  # the ledger's verify report when it does not verify (not in the JSON)
    tested: bool = False  # loaded with the test scores (``--test``, the researcher's view)

    def to_json(self) -> dict:
        return {"run": self.name, "scaffold": self.scaffold, "summary": self.summary,
                "iterations": [self._step_json(s) for s in self.steps]}

    def _step_json(self, s: Step) -> dict:
        out = {**asdict(s), "improved": s.improved}
        if self.tested:
            return {**out, "gap": s.gap}
        del out["test"]  # the agent's view: no test key at all
        return out


class TrajectoryError(Exception):
    """A run cannot be read (no sandbox, no ledger)."""


def load_run(start: str | Path = ".", *, test: bool = False) -> Run:
    """The trajectory of the sandbox at (or above) ``start``, from its ledger; ``problems`` says when the
    ledger does not verify. A damaged ledger, or an edited one whose policies no longer parse, raises
    ``LedgerBroken``. ``test``: with the test scores of the researcher's record."""
    try:
        cfg = load(start)
    except SandboxError as err:
        raise TrajectoryError(f"{start}: {err}") from None
    path = cfg.state / "ledger.sqlite"
    if not path.is_file():
        Witness.of(cfg).require_no_history(path)
        raise TrajectoryError(f"{cfg.root}: no submissions yet (no ledger): `cbdsl compile policy.cur && cbdsl submit`")
    ledger = ledger_for(cfg)
    try:
        entries = ledger.entries()
        verdict = ledger.verify()
        tests = test_scores.read(ledger.witness, entries) if test else {}
    finally:
        ledger.close()
    counts = Counter(e.status for e in entries)
    try:
        run = steps(history_of(entries), entries, tests)
    except PolicyError:
        if verdict.ok:
            raise
        raise LedgerBroken(verdict.report()) from None
    return Run(cfg.root.name, cfg.scaffold, tuple(run), summary(run, counts["refused"], counts["failed"], test),
               None if verdict.ok else verdict.report(), test)


def iteration_policy(ref: str, start: str | Path = ".") -> tuple[str, str, frozenset[str]]:
    """``@N`` of the sandbox at ``start``: iteration N's canonical text, a display name, and the families of
    the scored iterations before it (what a change must not have used to count as a new family)."""
    if not ref[1:].isdigit():
        raise TrajectoryError(f"{ref!r} is no iteration: write @ and its number, e.g. @3 (`cbdsl log` lists them)")
    n = int(ref[1:])
    try:
        cfg = load(start)
    except SandboxError as err:
        raise TrajectoryError(f"{ref} names a ledger iteration, but {err}") from None
    if not (cfg.state / "ledger.sqlite").is_file():
        raise TrajectoryError(f"{ref}: the sandbox has no submissions yet")
    try:
        ledger = ledger_for(cfg)
        try:
            entry, entries = ledger.get(n), ledger.entries()
        finally:
            ledger.close()
    except LedgerError as err:
        raise TrajectoryError(str(err)) from None
    prior = frozenset().union(*(policy_families(p, family_of) for k, p in history_of(entries) if k < n))
    return entry.policy_text, f"@{n}", prior


# --- text and plot ----------------------------------------------------------------------------


def _num(value: float | None, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def render(run: Run) -> str:
    """The iterations as a table, then the summary."""
    test_head = f" {'test':>8} {'gap':>8}" if run.tested else ""
    lines = [f"run {run.name} (scaffold {run.scaffold})",
             f"{'iter':>4}  {'class':<11} {'score':>8} {'delta':>8} {'best':>8}{test_head}  "
             f"{'families (new marked +)':<40} message"]
    for s in run.steps:
        fams = ", ".join(("+" if f in s.introduced and s.change != "baseline" else "") + f for f in s.families) or "-"
        delta = "-" if s.delta is None else f"{s.delta:+.4f}"
        first = next((line for line in s.message.splitlines() if line.strip()), "")
        first = "" if s.note and first.split(":")[0].strip().lower() in s.note else first
        tested = f" {_num(s.test):>8} {_num(s.gap, '+.4f'):>8}" if run.tested else ""
        lines.append(f"{s.iteration:>4}  {s.change:<11} {_num(s.score):>8} {delta:>8} {_num(s.best):>8}{tested}  "
                     f"{fams:<40} {first}".rstrip())
        lines += [f"{'':>6}{part}: {text}" for part, text in (s.note or {}).items()]
    lines += ["", *_summary_lines([run])]
    return "\n".join(lines)


_SUMMARY_ROWS = (("iterations", "iterations after the baseline", "d"),
                 ("new_family_share", "share introducing a new family", ".0%"),
                 ("literal_share", "share literal-only", ".0%"),
                 ("improved_share", "share improving the best", ".0%"),
                 ("best_iteration", "iteration of the best", "d"),
                 ("best_score", "best score", ".4f"),
                 ("refused", "refused submissions", "d"))
_TEST_SUMMARY_ROWS = (("best_test", "test score of the best", ".4f"),
              ("top_test", "highest test score", ".4f"),
              ("mean_gap", "mean dev - test gap", "+.4f"))


def _summary_lines(runs: Sequence[Run]) -> list[str]:
    width = max(14, *(len(r.name) for r in runs))
    lines = [f"{'':<32}" + "".join(f"{r.name:>{width + 2}}" for r in runs)]
    for key, label, fmt in _SUMMARY_ROWS + (_TEST_SUMMARY_ROWS if all(r.tested for r in runs) else ()):
        lines.append(f"{label:<32}" + "".join(f"{_num(r.summary[key], fmt):>{width + 2}}" for r in runs))
    return lines


def render_compare(runs: Sequence[Run]) -> str:
    """Several runs side by side: the summary table, then each iteration's class and score per run."""
    width = max(20, *(len(r.name) + 2 for r in runs))
    lines = [f"{'':<32}" + "".join(f"{r.scaffold:>{width + 2}}" for r in runs), *_summary_lines(runs), "",
             f"{'iter':>4}" + "".join(f"{r.name:>{width + 2}}" for r in runs)]
    numbers = sorted({s.iteration for r in runs for s in r.steps})
    for n in numbers:
        cells = []
        for r in runs:
            s = next((s for s in r.steps if s.iteration == n), None)
            cells.append("" if s is None else f"{s.change} {_num(s.score)}"
                         + (f"/{_num(s.test)}" if r.tested else ""))
        lines.append(f"{n:>4}" + "".join(f"{c:>{width + 2}}" for c in cells))
    return "\n".join(lines)


MARKERS = {"baseline": ("s", "grey"), "none": ("x", "black"), "metadata": ("x", "grey"),
           "literal": ("o", "tab:blue"), "structural": ("^", "tab:orange"), "new-family": ("*", "tab:red")}


def plot(runs: Sequence[Run], path: str | Path) -> Path:
    """Score against iteration, one panel per run, each point marked by its change class; best so far dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4), sharey=True, squeeze=False)
    for ax, run in zip(axes[0], runs):
        scored = [s for s in run.steps if s.score is not None]
        ax.plot([s.iteration for s in scored], [s.score for s in scored], color="lightgrey", zorder=1)
        ax.step([s.iteration for s in scored], [s.best for s in scored], where="post", linestyle="--",
                color="black", linewidth=0.8, label="best so far")
        for change, (marker, color) in MARKERS.items():
            pts = [s for s in scored if s.change == change]
            if pts:
                ax.scatter([s.iteration for s in pts], [s.score for s in pts], marker=marker, color=color,
                           s=90 if marker == "*" else 40, label=change, zorder=2)
        tested = [s for s in scored if s.test is not None]
        if tested:
            ax.plot([s.iteration for s in tested], [s.test for s in tested], color="tab:green", marker=".",
                    linewidth=0.8, label="test", zorder=1)
        ax.set_title(f"{run.name} ({run.scaffold})")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("aggregate score")
    axes[0][-1].legend(loc="best", fontsize="small")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def to_json(runs: Sequence[Run]) -> str:
    return json.dumps(runs[0].to_json() if len(runs) == 1 else {"runs": [r.to_json() for r in runs]}, indent=2)
