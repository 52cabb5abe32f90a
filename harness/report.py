"""``cbdsl experiment report DIR``: what the research reports of a grid, per cell and side by side.

Per cell (one sandbox, from its ledger, its test scores and its agent run's record), over its first K
scored iterations after the baseline:

- ``best_dev``: the best dev score (the feedback the agent saw), and ``test_of_best``: the test score of
  that iteration (the one the agent would hand in: an agent that fits the feedback shows a gap here);
- ``new_family_share``: iterations whose policy uses a method family no earlier iteration used;
- ``literal_share``: iterations whose diff to the previous one changes numbers only (knob tuning);
- ``scaffold_break_share`` and ``refused_share``: of all submissions up to the K-th scored one, those the
  scaffold refused, and all refused (budget, scaffold, audit);
- ``curve``: the best dev score after 1..K iterations (the search-scaling curve) and ``test_curve``, the
  test score of the best so far;
- the agent's turns by outcome and its usage (tokens, cost) summed.

Cells that differ only by seed are grouped (mean, and std over seeds); the groups are printed as a
Markdown table, written as JSON, and plotted (the curves, and the shares) as PNG.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbdsl.harness.experiment import cell_dir, load_grid
from cbdsl.harness.runner import default_record, read_turns
from cbdsl.pipelines.loop.sandbox import load
from cbdsl.pipelines.loop.submit import ledger_for
from cbdsl.research.trajectory import load_run

SHARES = ("new_family_share", "literal_share", "scaffold_break_share", "refused_share")
NUMBERS = ("best_dev", "test_of_best", "gap", "baseline", *SHARES, "iterations")


class ReportError(Exception):
    """The folder holds no experiment, or no cell that ran."""


@dataclass(frozen=True)
class CellReport:
    cell: str
    agent: str
    scaffold: str
    seed: int
    pool: str
    values: dict[str, Any]

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.agent, self.scaffold, self.pool)


def cell_report(sandbox: Path, k: int) -> dict[str, Any]:
    """The numbers of one cell's sandbox over its first ``k`` scored iterations after the baseline."""
    run = load_run(sandbox, test=True)
    ledger = ledger_for(load(sandbox))
    try:
        entries = ledger.entries()
    finally:
        ledger.close()
    base = run.steps[0] if run.steps and run.steps[0].change == "baseline" else None
    tried = [s for s in run.steps if s.change != "baseline"][:k]
    last = tried[-1].iteration if tried else None
    subs = [e for e in entries if not e.is_baseline and e.status != "running" and (last is None or e.n <= last)]
    refused = [e for e in subs if e.status == "refused"]
    best = max(tried, key=lambda s: (s.score, -s.iteration), default=None)
    curve, test_curve, top = [], [], None
    for s in tried:
        top = s if top is None or s.score > top.score else top
        curve.append(top.score)
        test_curve.append(top.test)
    turns = read_turns(default_record(sandbox)) if default_record(sandbox).is_dir() else []
    usage = [t["usage"] for t in turns if t.get("usage")]
    return {
        "iterations": len(tried),
        "best_dev": best.score if best else None,
        "test_of_best": best.test if best else None,
        "gap": best.gap if best else None,
        "best_iteration": best.iteration if best else None,
        "baseline": base.score if base else None,
        "baseline_test": base.test if base else None,
        "new_family_share": _share(sum(bool(s.introduced) for s in tried), len(tried)),
        "literal_share": _share(sum(s.change == "literal" for s in tried), len(tried)),
        "scaffold_break_share": _share(sum((e.error or "").startswith("scaffold:") for e in refused), len(subs)),
        "refused_share": _share(len(refused), len(subs)),
        "submissions": len(subs),
        "failed": sum(e.status == "failed" for e in subs),
        "curve": curve,
        "test_curve": test_curve,
        "turns": dict(Counter(t["outcome"] for t in turns)),
        "tokens": _sum(u.get("tokens") for u in usage),
        "cost_usd": _sum(u.get("cost_usd") for u in usage),
    }


def _share(count: int, n: int) -> float | None:
    return None if n == 0 else count / n


def _sum(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def experiment_report(folder: str | Path, k: int | None = None) -> dict[str, Any]:
    """Every cell that ran under ``folder`` (an experiment run's output) and the groups over seeds."""
    folder = Path(folder)
    spec = folder / "experiment.json"
    if not spec.is_file():
        raise ReportError(f"{folder} holds no experiment.json: give the folder `cbdsl experiment run` wrote")
    grid = load_grid(json.loads(spec.read_text())["path"])
    k = k or grid.iterations
    cells = []
    for cell in grid.cells:
        sandbox = cell_dir(folder, cell)
        if (sandbox / ".cbdsl" / "ledger.sqlite").is_file():
            cells.append(CellReport(cell.name, cell.agent, cell.scaffold, cell.seed, cell.pool,
                                    cell_report(sandbox, k)))
    if not cells:
        raise ReportError(f"no cell under {folder} has a ledger yet: run `cbdsl experiment run` first")
    groups: dict[tuple[str, str, str], list[CellReport]] = {}
    for c in cells:
        groups.setdefault(c.group, []).append(c)
    return {"k": k, "cells": [{"cell": c.cell, "agent": c.agent, "scaffold": c.scaffold, "seed": c.seed,
                               "pool": c.pool, **c.values} for c in cells],
            "groups": [_group(key, members) for key, members in groups.items()]}


def _group(key: tuple[str, str, str], members: Sequence[CellReport]) -> dict[str, Any]:
    agent, scaffold, pool = key
    out: dict[str, Any] = {"agent": agent, "scaffold": scaffold, "pool": pool,
                           "seeds": sorted(m.seed for m in members)}
    for name in NUMBERS:
        mean, std = _mean_std([m.values[name] for m in members])
        out[name], out[f"{name}_std"] = mean, std
    length = max(len(m.values["curve"]) for m in members)
    for curve in ("curve", "test_curve"):
        out[curve] = [_mean_std([m.values[curve][i] for m in members if i < len(m.values[curve])])[0]
                      for i in range(length)]
    return out


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def markdown(report: dict[str, Any]) -> str:
    """The groups side by side, one row each."""
    head = ("| agent | scaffold | pool | seeds | best dev | test of best | dev - test | baseline | new family | "
            "literal | scaffold breaks | refused | iterations |")
    lines = [f"Best score after K = {report['k']} iterations (mean over seeds, ± their std).", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for g in report["groups"]:
        cells = [g["agent"], g["scaffold"], Path(g["pool"]).name, ",".join(map(str, g["seeds"])),
                 _pm(g, "best_dev"), _pm(g, "test_of_best"), _num(g["gap"], "+.4f"), _num(g["baseline"]),
                 *(_num(g[s], ".0%") for s in SHARES), _num(g["iterations"], ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pm(g: dict[str, Any], name: str) -> str:
    std = g.get(f"{name}_std")
    return _num(g[name]) + (f" ± {std:.4f}" if std is not None else "")


def _num(value, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def plot(report: dict[str, Any], folder: str | Path) -> list[Path]:
    """``curve.png`` (best dev score, and the test score of the best, against iteration, a line per group)
    and ``shares.png`` (each group's shares); the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    groups = report["groups"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, g in enumerate(groups):
        color = f"C{i % 10}"
        xs = list(range(1, len(g["curve"]) + 1))
        label = f"{g['agent']} / {g['scaffold']}"
        ax.plot(xs, g["curve"], color=color, marker="o", label=f"{label} (dev)")
        tests = [(x, t) for x, t in zip(xs, g["test_curve"]) if t is not None]
        if tests:
            ax.plot(*zip(*tests), color=color, linestyle="--", linewidth=0.9, label=f"{label} (test of best)")
    ax.set_xlabel("iterations after the baseline")
    ax.set_ylabel("best aggregate so far")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    curve = folder / "curve.png"
    fig.savefig(curve, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4))
    width = 0.8 / len(SHARES)
    for j, share in enumerate(SHARES):
        ax.bar([i + j * width for i in range(len(groups))], [g[share] or 0 for g in groups], width,
               label=share.replace("_share", "").replace("_", " "))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))],
                  [f"{g['agent']}\n{g['scaffold']}" for g in groups], fontsize="small")
    ax.set_ylabel("share of iterations / submissions")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    fig.tight_layout()
    shares = folder / "shares.png"
    fig.savefig(shares, dpi=120)
    plt.close(fig)
    return [curve, shares]
