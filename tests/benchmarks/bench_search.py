"""`cbdsl search` on the demo pool: best aggregate after K iterations against random selection and the examples.

Each strategy runs `search` in a fresh sandbox (`cbdsl init` defaults: the
demo pool, scaffold `open`, the configured backend) for `--iterations`
steps; the table reports the best aggregate after each checkpoint (the
baseline included, as an agent's "best so far" would). Random selection is
each sandbox's iteration 0; the hand-written examples are the policies of
`examples/` written for the demo pool, submitted in a sandbox of their own
through the same loop. With `--parallel` the sandboxes run as separate
processes (the mini backend's model is small: one GPU holds all three).

    python tests/benchmarks/bench_search.py [--iterations 30 --checkpoints 10 30] [--parallel] [--out FILE]

Prints one JSON object (and a Markdown table on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sandbox(folder: Path, args, iterations: int):
    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.data.roots import resolve_pool
    from cbdsl.pipelines.loop.init import init
    from cbdsl.pipelines.loop.sandbox import load

    pool = Pool.open(resolve_pool("demo"))
    init(folder, pool="demo", budget=args.budget, backend=args.backend, iterations=iterations, pool_obj=pool)
    cfg = load(folder)
    settings = {**cfg.backend_settings, **dict(_setting(s) for s in args.set)}
    return dataclasses.replace(cfg, backends={**cfg.backends, cfg.backend: settings})


def _setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value


def run_search(strategy: str, args, folder: Path) -> dict:
    from cbdsl.research.search import search

    cfg = sandbox(folder, args, args.iterations)
    start = time.perf_counter()
    result = search(cfg, iterations=args.iterations, strategy=strategy, seed=args.seed, max_cost=args.max_cost,
                    exclude=frozenset(args.exclude), log=lambda m: print(f"[{strategy}] {m}", file=sys.stderr))
    return {"strategy": strategy, "wall_s": round(time.perf_counter() - start, 1), "baseline": result.baseline,
            "best_after": {str(k): result.best_after(k) for k in args.checkpoints}, "best": result.best,
            "best_policy": result.best_policy, "stopped": result.stopped,
            "steps": [{"iteration": s.iteration, "kind": s.kind, "aggregate": s.aggregate, "draws": s.draws,
                       "description": s.description} for s in result.steps]}


def run_examples(args, folder: Path) -> dict:
    """Every example written for the demo pool, at the sandbox's budget, through the loop."""
    from cbdsl.dsl.format import format_policy
    from cbdsl.research.mutate import with_frame
    from cbdsl.dsl.parser import parse
    from cbdsl.research.search import submit_text

    chosen = []
    for path in sorted((ROOT / "examples").glob("*.cur")):
        policy = parse(path.read_text(encoding="utf-8"), path.name)
        pools = [c.name.value for c in policy.clauses if c.kind == "pool"]
        if pools == ["demo"]:
            chosen.append((path, with_frame(policy, name=policy.name or path.stem, pool="demo", budget=args.budget)))
    cfg = sandbox(folder, args, max(1, len(chosen)))
    scores, baseline = {}, None
    for path, policy in chosen:
        fb = submit_text(cfg, format_policy(policy), cfg.root / path.name, message=f"example {path.name}",
                         log=lambda m: print(f"[examples] {m}", file=sys.stderr))
        scores[path.name] = fb.aggregate if fb.entry.status == "scored" else f"{fb.entry.status}: {fb.entry.error}"
        print(f"[examples] {path.name}: {scores[path.name]}", file=sys.stderr)
    from cbdsl.pipelines.loop.submit import ledger_for

    ledger = ledger_for(cfg)
    baseline = next((e.aggregate for e in ledger.scored() if e.is_baseline), None)
    ledger.close()
    return {"strategy": "examples", "baseline": baseline, "examples": scores}


def one(part: str, args, folder: Path) -> dict:
    return run_examples(args, folder) if part == "examples" else run_search(part, args, folder)


def table(report: dict) -> str:
    ks = report["checkpoints"]
    rows = ["| policy | " + " | ".join(f"best after {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for strategy, res in report["search"].items():
        rows.append(f"| search `{strategy}` | " + " | ".join(_fmt(res["best_after"][str(k)]) for k in ks) + " |")
    rows.append("| random selection (iteration 0) | " + " | ".join(_fmt(report["random_selection"]) for _ in ks) + " |")
    best = report["best_example"]
    if best:
        rows.append(f"| best example (`{best['name']}`) | " + " | ".join(_fmt(best["aggregate"]) for _ in ks) + " |")
    return "\n".join(rows)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--strategies", nargs="+", default=["mutate", "random"], choices=["mutate", "random"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=5000)
    ap.add_argument("--backend", default="mini")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="backend settings, e.g. steps=10 for a quick smoke run of mini (changes its suite)")
    ap.add_argument("--max-cost", default="gpu_model", choices=["metadata", "cpu_model", "gpu_model"])
    ap.add_argument("--exclude", nargs="*", default=[], help="scorer ids the proposals must not use")
    ap.add_argument("--teacher-device", default=None,
                    help="train the demo's CLIP teacher here first if it is not cached (cuda: seconds, cpu: minutes)")
    ap.add_argument("--no-examples", action="store_true")
    ap.add_argument("--parallel", action="store_true", help="one process per sandbox")
    ap.add_argument("--workdir", type=Path, help="where the sandboxes go (default: a temporary folder)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one sandbox, print its JSON
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-search-"))
    if args.part:
        print(json.dumps(one(args.part, args, workdir / args.part)))
        return
    from cbdsl.pipelines.data.errors import PoolError
    from cbdsl.pipelines.data.roots import resolve_pool

    start = time.perf_counter()
    setup: dict = {}
    try:
        resolve_pool("demo")
    except PoolError:
        from cbdsl.pipelines.data.demo import make_demo
        from cbdsl.pipelines.data.roots import search_path

        make_demo(Path(search_path()[0]) / "demo")
        setup["demo_pool_s"] = round(time.perf_counter() - start, 1)
    if args.teacher_device:
        from cbdsl.scorers.models import teacher

        _model, path, sha = teacher.teacher(device=args.teacher_device)
        setup["teacher"] = {"sha256": sha[:16], "device": args.teacher_device,
                            "ready_s": round(time.perf_counter() - start, 1)}
    parts = [*args.strategies, *([] if args.no_examples else ["examples"])]
    if args.parallel:
        base = [sys.executable, __file__, *sys.argv[1:], "--workdir", str(workdir)]
        # Each part gets its share of the cores: torch and polars default to all of them per process,
        # and three processes of 16 threads on 16 cores spend their time switching.
        share = str(max(1, (os.cpu_count() or 1) // len(parts)))
        env = {**os.environ, "OMP_NUM_THREADS": share, "POLARS_MAX_THREADS": share}
        procs = {p: subprocess.Popen([*base, "--part", p], stdout=subprocess.PIPE, text=True, env=env) for p in parts}
        results = {p: json.loads(proc.communicate()[0].strip().splitlines()[-1]) for p, proc in procs.items()}
    else:
        results = {p: one(p, args, workdir / p) for p in parts}
    examples = results.get("examples", {}).get("examples", {})
    numeric = {k: v for k, v in examples.items() if isinstance(v, float)}
    best = max(numeric.items(), key=lambda kv: kv[1], default=None)
    baselines = [r["baseline"] for r in results.values() if r.get("baseline") is not None]
    report = {
        "benchmark": "cbdsl search on the demo pool", "backend": args.backend, "budget": args.budget,
        "iterations": args.iterations, "checkpoints": args.checkpoints, "seed": args.seed, "settings": args.set,
        "max_cost": args.max_cost, "exclude": args.exclude, "device": _device(),
        "random_selection": sum(baselines) / len(baselines) if baselines else None,
        "random_selection_runs": baselines, "examples": examples,
        "best_example": {"name": best[0], "aggregate": best[1]} if best else None,
        "search": {p: r for p, r in results.items() if p != "examples"},
        "setup": setup, "wall_s": round(time.perf_counter() - start, 1), "load_avg": os.getloadavg(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    print(table(report), file=sys.stderr)
    if args.out:
        args.out.write_text(text + "\n")


def _device() -> dict:
    try:
        import torch

        if torch.cuda.is_available():
            return {"kind": "cuda", "name": torch.cuda.get_device_name(0), "torch": torch.__version__}
        return {"kind": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__}
    except ImportError:
        return {"kind": "cpu"}


if __name__ == "__main__":
    main()
