"""Benchmark: does the ``mini`` (or ``mini-vlm``) backend tell curation policies apart? (issues 5 and 15)

``--track it`` runs the instruction-tuning track instead: the demo-it pool
(20,000 rows), its sandbox budget (4,000), the ``mini-vlm`` backend, and the
arms random plus the examples written for demo-it (:data:`IT_ARMS`, those
present); the base of mini-vlm is trained first, once (``--teacher-device``
applies to it). What follows describes the CLIP track.

At the demo sandbox's default budget (5,000 of the 50,000-row demo pool), it
runs four arms, each trained and evaluated by the mini backend with three
training seeds (the recipe's ``seed``: weight init and data order):

- ``random``: the sandbox's iteration 0 (``cbdsl.pipelines.loop.submit.BASELINE``);
- ``clip_top30``: ``examples/datacomp_clip_l14_top30.cur`` on the demo pool
  with the demo's CLIP teacher (``model="cbdsl-tiny"``), 5,000 rows drawn at
  random from the survivors;
- ``demo_basic_quality`` and ``demo_clip_quality``: the curated examples
  written for the demo pool, as they are.

It reports the mean and std (ddof 1) of the aggregate per arm, the seed noise
(the pooled std over all arms), how many noise sigmas the best curated arm is
above random (target: 5), each seed's ranking of the arms (target: the same
for every seed), each selection's defect shares (from the ``demo-defects``
asset), and the seconds per run. ``--recipe`` and ``--rates`` try other mini
recipes and demo defect rates in the same run (each combination is reported
on its own), which is how the defaults were chosen; ``--policy FILE`` adds a
policy of your own as an arm, ``--arms`` runs some arms only (random always),
and ``--seeds`` picks the training seeds (seeds 3,4,5 are the held-out check
of the README).

    python tests/benchmarks/bench_validity.py                     # CUDA if present; CBDSL_DEVICE=cpu forces CPU
    python tests/benchmarks/bench_validity.py --jobs 4 --recipe "" --recipe "lr=0.004,warmup=10" \\
        --rates "" --rates "laion.mismatched=0.5"
    python tests/benchmarks/bench_validity.py --seeds 3,4,5 --arms clip_top30,demo_clip_quality
    python tests/benchmarks/bench_validity.py --policy mine.cur --arms mine      # random and mine.cur

Pools are made under ``--pool-dir`` (reused when their lineage matches); the
CLIP teacher is trained first (``--teacher-device cuda`` trains it on the GPU
in seconds: same recipe, other floating-point order than the CPU's). Prints
one JSON object; ``--out FILE`` also writes it there, and appends each run
to ``FILE.runs.jsonl`` as it ends: ``--resume`` keeps those and runs the
others (a benchmark cut short by a time limit goes on where it stopped).

Seen on the CPU, demo pool as shipped (the GPU host's CPU and this project's
2-core VM give the same bytes for a recipe and thread count): with mini-v9
(two models of 250 steps of 256 at lr 1e-3), seeds 0-5, pooled seed std
0.0117 and 7.8 sigmas, and the same on an H100 (0.0117, 7.7); with mini-v8
(1,000 steps of 64 at lr 2e-3) 0.0172 and 7.2 sigmas. Each arm's JSON has
every score's seed std (``benchmarks_std``), and the summary the curated
arms' most frequent order (``curated_order``, ``seeds_in_curated_order``)
and every pair of curated arms compared seed by seed (``pairs``: which the
backend separates, which tie; ``seeds_in_separated_order``). README,
"Validity of the mini backend", says why and what next.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
TARGET_SIGMAS = 5.0
#: Per track: the demo pool's rows, the sandbox's default budget (``cbdsl init --track``), the backend.
TRACKS = {"clip": {"rows": 50_000, "budget": 5000, "backend": "mini"},
          "it": {"rows": 20_000, "budget": 4000, "backend": "mini-vlm"}}
#: The instruction-tuning track's curated arms: examples written for demo-it (those present are run).
IT_ARMS = ("it_metadata", "demo_it_clean", "demo_it_clean_loss", "it_loss_top_p95")


def arms(budget: int, track: str = "clip") -> dict[str, str]:
    """Policy text per arm, every one at ``budget`` rows of the track's demo pool."""
    from cbdsl.pipelines.loop.submit import BASELINE

    if track == "it":
        out = {"random": BASELINE.format(pool="demo-it", budget=budget)}
        for name in IT_ARMS:
            file = ROOT / "examples" / f"{name}.cur"
            if file.is_file():
                out[name] = with_budget(file.read_text(), budget)
        return out
    return {
        "random": BASELINE.format(pool="demo", budget=budget),
        "clip_top30": retarget((ROOT / "examples" / "datacomp_clip_l14_top30.cur").read_text(), budget),
        "demo_basic_quality": with_budget((ROOT / "examples" / "demo_basic_quality.cur").read_text(), budget),
        "demo_clip_quality": with_budget((ROOT / "examples" / "demo_clip_quality.cur").read_text(), budget),
    }


def retarget(text: str, budget: int) -> str:
    """A DataComp example on the demo pool: pool `demo`, the demo's CLIP teacher, ``budget`` random rows."""
    out, n = re.subn(r'^pool "[^"]*"', 'pool "demo"', text, flags=re.M)
    out, m = re.subn(r'clip_score\(image, text, model="ViT-L-14", pretrained="openai"\)', "clip_score(image, text)", out)
    if n != 1 or m != 1:
        raise ValueError("the example no longer has the pool clause and L/14 clip_score this benchmark retargets")
    return with_budget(out, budget)


def with_budget(text: str, budget: int) -> str:
    """``text`` with its budget clause set to ``budget`` (added when it has none)."""
    out, n = re.subn(r"^budget .*$", f"budget {budget}", text, flags=re.M)
    return out if n else out.rstrip("\n") + f"\nbudget {budget}\n"


def parse_pairs(spec: str) -> dict[str, str]:
    """``"a=1,b.c=2"`` -> {"a": "1", "b.c": "2"}; an empty spec is the defaults."""
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bad setting {item!r}: write NAME=VALUE, comma-separated")
        out[key.strip()] = value.strip()
    return out


def recipe_of(spec: str, backend: str = "mini") -> dict:
    """A ``--recipe`` spec as the backend's settings (typed like their defaults)."""
    from cbdsl.pipelines.loop.backends import BACKENDS

    known = {k: type(v) for k, v in BACKENDS[backend].settings().items() if k not in ("format", "seed")}
    out = {}
    for key, value in parse_pairs(spec).items():
        if key not in known:
            raise SystemExit(f"unknown recipe setting {key!r}; settings are {', '.join(known)}")
        out[key] = known[key](value)
    return out


def rates_of(spec: str, track: str = "clip") -> dict:
    """A ``--rates`` spec (``source.defect=rate``) as the track's demo defect rates."""
    from cbdsl.pipelines.data import demo, demo_it

    changes: dict[str, dict[str, float]] = {}
    for key, value in parse_pairs(spec).items():
        source, _, defect = key.partition(".")
        changes.setdefault(source, {})[defect] = float(value)
    try:
        return (demo_it if track == "it" else demo).with_rates(changes)
    except ValueError as err:
        raise SystemExit(f"--rates {spec!r}: {err}") from None


def demo_pool(pool_dir: Path, rows: int, rates: dict, tag: str, track: str = "clip"):
    """The track's demo pool of these defect rates under ``pool_dir``, made once, reused when its lineage
    matches."""
    from cbdsl.pipelines.data.demo import make_demo
    from cbdsl.pipelines.data.demo_it import make_demo_it
    from cbdsl.pipelines.data.pool import Pool

    path = pool_dir / f"demo-{track}-{tag}"
    if (path / "pool.json").is_file():
        pool = Pool.open(path)
        lineage = pool.card.lineage
        if lineage.get("rows") == rows and lineage.get("defect_rates") == rates:
            return pool
    if track == "it":
        return Pool.open(make_demo_it(path, rows=rows, rates=rates, overwrite=True))
    return Pool.open(make_demo(path, rows=rows, rates=rates, overwrite=True))


def select(pool, text: str, name: str) -> pl.DataFrame:
    """Compile, lower and execute a policy on ``pool``: its selection (id, rank, ...)."""
    from cbdsl.stages import compile_source
    from cbdsl.stages import lower
    from cbdsl.pipelines.engine.execute import execute
    from cbdsl.scorers.api import asset_ids

    compiled = compile_source(text, name, pool)
    low = lower(compiled.plan, pool.schema, lambda a: asset_ids(pool, a))
    return execute(low, pool).selection


def defect_shares(pool, selection: pl.DataFrame) -> dict[str, float]:
    """Share of the selection carrying each defect, and of rows with none (from the ground truth asset)."""
    from cbdsl.pipelines.data import demo, demo_it

    DEFECTS = demo_it.DEFECTS if pool.name == demo_it.NAME else demo.DEFECTS

    truth = pool.read_asset("demo-defects").join(selection.select(pool.id_column), on="id")
    shares = {d: round(float(truth[d].mean()), 4) for d in DEFECTS}
    shares["clean"] = round(float(truth.select(~pl.any_horizontal(DEFECTS)).to_series().mean()), 4)
    return shares


def runs_file(out: str | None) -> Path | None:
    """Where each finished run is appended as it ends (``--out`` + ``.runs.jsonl``).

    Why: the JSON is written when every run has ended, and a benchmark cut
    short (a device call's time limit, a kill) kept nothing but its log;
    now it keeps its runs, and ``--resume`` runs only the others.
    """
    return Path(f"{out}.runs.jsonl") if out else None


def record_run(path: Path, task: tuple, result: dict) -> None:
    """Append one run: its task (rates, recipe, arm, seed) and its result, one JSON line (on a line of its own
    after a line a kill cut)."""
    with path.open("ab+") as f:  # appends wherever it reads; only the last byte is read
        cut = False
        if f.seek(0, os.SEEK_END):
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
        f.write((b"\n" if cut else b"") + json.dumps({"task": list(task), "result": result}).encode() + b"\n")


def finished_runs(path: Path | None) -> dict[tuple, dict]:
    """The runs ``path`` records, by task; a line cut by a kill is left out (that run is run again)."""
    out: dict[tuple, dict] = {}
    if path is None or not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[tuple(record["task"])] = record["result"]
    return out


def run_one(pool_path: str, selection_path: str, recipe: dict, seed: int, threads: int, backend: str = "mini") -> dict:
    """One mini train/eval (in a worker process): metrics and seconds.

    ``threads`` is the worker's share of the cores for what runs outside the
    recipe's own thread count (decoding, evaluation, and everything on CUDA,
    where the recipe's ``threads`` does not apply): without it, 16 workers of
    16 threads each on a 16-core GPU host took 187 s per run.
    """
    import torch

    torch.set_num_threads(threads)
    from cbdsl.pipelines.loop.backends import BACKENDS
    from cbdsl.pipelines.loop.backends.base import Job
    from cbdsl.pipelines.data.pool import Pool

    pool = Pool.open(pool_path)
    selection = pl.read_parquet(selection_path)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = BACKENDS[backend].from_settings(seed=seed, **recipe).run(
            Job(pool=pool, selection=selection, export_dir=Path(tmp), workdir=Path(tmp), log=lambda m: None))
    return {**metrics, "seconds": round(time.perf_counter() - start, 2)}


#: A pair of arms is told apart when the paired t of their difference over the seeds reaches this (two-sided
#: 3% at 5 degrees of freedom, six seeds).
SEPARATED_T = 3.0


def pairs(agg: dict[str, np.ndarray]) -> dict:
    """Every pair of curated arms compared seed by seed: the mean difference, its seed std, its paired t, the
    seeds on which the first is ahead; and on how many seeds every pair told apart (``SEPARATED_T``) keeps the
    sign of its mean (the arms are taken best first, so every mean difference is >= 0).

    Why: the same seed trains every arm from the same weights, so a seed that helps one arm helps the others
    (common random numbers) and a pair's difference is less noisy than either arm; two policies of equal
    quality trade places on half the seeds whatever the noise, and one order of all arms cannot be asked of
    them. This says which pairs the backend separates and which tie.
    """
    curated = sorted((a for a in agg if a != "random"), key=lambda a: -agg[a].mean())
    n = len(next(iter(agg.values())))
    out, ahead = [], []
    for i, a in enumerate(curated):
        for b in curated[i + 1:]:
            d = agg[a] - agg[b]
            std = float(d.std(ddof=1)) if n > 1 else 0.0
            t = float(d.mean() / (std / np.sqrt(n))) if std > 0 else None
            separated = t is not None and t >= SEPARATED_T
            out.append({"pair": [a, b], "difference": round(float(d.mean()), 4), "std": round(std, 4),
                        "t": round(t, 2) if t is not None else None, "seeds_ahead": int((d > 0).sum()),
                        "separated": separated})
            if separated:
                ahead.append(d > 0)
    kept = int(np.logical_and.reduce(ahead).sum()) if ahead else n
    return {"pairs": out, "seeds_in_separated_order": f"{kept} of {n}"}


def summarize(results: dict[str, list[dict]], seeds: list[int]) -> dict:
    """Mean/std per arm, the pooled seed noise, the best curated arm's margin in sigmas, per-seed rankings."""
    agg = {arm: np.array([r["aggregate"] for r in runs]) for arm, runs in results.items()}
    noise = float(np.sqrt(np.mean([a.var(ddof=1) for a in agg.values()])))
    best = max((a for a in agg if a != "random"), key=lambda a: agg[a].mean())
    margin = float(agg[best].mean() - agg["random"].mean())
    rankings = [sorted(agg, key=lambda a: -agg[a][i]) for i in range(len(seeds))]
    curated = [tuple(a for a in r if a != "random") for r in rankings]
    order = max(curated, key=curated.count)  # the curated arms' most frequent order (first seen on a tie)
    benchmarks = sorted(results["random"][0]["benchmarks"])
    return {
        "arms": {a: {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)), 4),
                     "per_seed": [round(float(x), 4) for x in v],
                     "benchmarks": {b: round(float(np.mean([r["benchmarks"][b] for r in results[a]])), 4)
                                    for b in benchmarks},
                     "benchmarks_std": {b: round(float(np.std([r["benchmarks"][b] for r in results[a]], ddof=1)), 4)
                                        for b in benchmarks} if len(seeds) > 1 else None,
                     "seconds": [r["seconds"] for r in results[a]]} for a, v in agg.items()},
        "seed_noise_std": round(noise, 4),
        "best_curated": best,
        "margin_over_random": round(margin, 4),
        "sigmas": round(margin / noise, 2) if noise > 0 else None,
        "sigmas_vs_larger_std": round(margin / max(agg[best].std(ddof=1), agg["random"].std(ddof=1)), 2),
        "rankings_per_seed": rankings,
        "ranking_stable": all(r == rankings[0] for r in rankings),
        "curated_order": list(order),
        "seeds_in_curated_order": f"{curated.count(order)} of {len(seeds)}",
        **pairs(agg),
        "target_met": noise > 0 and margin / noise >= TARGET_SIGMAS and all(r == rankings[0] for r in rankings),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--track", choices=list(TRACKS), default="clip",
                    help="clip: the demo pool and the mini backend; it: demo-it and mini-vlm")
    ap.add_argument("--rows", type=int, default=None, help="demo pool rows (default: the track's demo)")
    ap.add_argument("--budget", type=int, default=None, help="default: the track's sandbox budget")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (comma-separated)")
    ap.add_argument("--recipe", action="append", default=None,
                    help='mini recipe changes, e.g. "lr=0.004,steps=200" (repeat to compare; "" = defaults)')
    ap.add_argument("--rates", action="append", default=None,
                    help='demo defect-rate changes, e.g. "laion.mismatched=0.5" or (it) "vqa.wrong_answer=0.2" '
                         '(repeat; "" = the defaults)')
    ap.add_argument("--jobs", type=int, default=1, help="mini runs in parallel (worker processes)")
    ap.add_argument("--pool-dir", default=None, help="where the demo pools are made (default: a temporary folder)")
    ap.add_argument("--teacher-device", default="cpu", help="where the CLIP teacher is trained if not cached")
    ap.add_argument("--selections", default=None,
                    help="read each arm's selection (sel-V-ARM.parquet) from this folder instead of selecting: "
                         "selections made by an earlier run, e.g. on a machine with the language-ID model "
                         "(the demo pool is deterministic, so the ids match a pool made with the same rows and rates)")
    ap.add_argument("--policy", action="append", default=[], metavar="FILE",
                    help="another curated arm: a policy file for the demo pool, named by its file stem (repeat)")
    ap.add_argument("--arms", default=None,
                    help="run only these arms (comma-separated; `random` is always run, the margin needs it)")
    ap.add_argument("--out", default=None,
                    help="also write the JSON here; each run is appended to OUT.runs.jsonl as it ends")
    ap.add_argument("--resume", action="store_true",
                    help="keep the runs OUT.runs.jsonl holds and run the others (the same pool, selections and "
                         "machine are assumed: a run's record names its rates, recipe, arm and seed only)")
    args = ap.parse_args(argv)
    log = runs_file(args.out)
    if args.resume and log is None:
        raise SystemExit("--resume: name the --out whose OUT.runs.jsonl holds the runs to keep")
    if log is not None and not args.resume:
        log.unlink(missing_ok=True)  # a new benchmark starts a new record
    track = TRACKS[args.track]
    args.rows, args.budget = args.rows or track["rows"], args.budget or track["budget"]
    backend = track["backend"]
    os.environ.setdefault("CBDSL_PROGRESS", "0")
    from cbdsl.pipelines.loop.backends.mini import SUITE_VERSION
    from cbdsl.scorers.api import device
    from cbdsl.scorers.models.teacher import teacher as demo_teacher

    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = args.recipe if args.recipe is not None else [""]
    variants = args.rates if args.rates is not None else [""]
    t0 = time.perf_counter()
    teacher = None
    if not args.selections and args.track == "clip":  # the teacher scores the CLIP arms; given selections need none
        _model, teacher_path, teacher_sha = demo_teacher(device=args.teacher_device)
        teacher = {"path": teacher_path.name, "sha256": teacher_sha[:16],
                   "seconds": round(time.perf_counter() - t0, 1)}
    base = None
    if args.track == "it":  # the mini-vlm base (stages 0-1), trained once before the workers share it
        from cbdsl.scorers.models import vlm_base

        t0 = time.perf_counter()
        _m, _tok, folder = vlm_base.base(device=args.teacher_device)
        base = {"path": folder.name, "seconds": round(time.perf_counter() - t0, 1)}
    texts = arms(args.budget, args.track)
    for file in map(Path, args.policy):
        if file.stem in texts:
            raise SystemExit(f"--policy {file}: an arm is already named {file.stem!r}; rename the file")
        texts[file.stem] = with_budget(file.read_text(), args.budget)
    if args.arms:
        keep = {"random", *filter(None, (a.strip() for a in args.arms.split(",")))}
        if unknown := keep - set(texts):
            raise SystemExit(f"--arms: no arm {', '.join(sorted(unknown))}; arms are {', '.join(texts)}")
        if keep == {"random"}:
            raise SystemExit("--arms: name at least one arm besides random (the margin is measured against it)")
        texts = {arm: text for arm, text in texts.items() if arm in keep}
    with tempfile.TemporaryDirectory() as tmp:
        pool_dir = Path(args.pool_dir or tmp)
        pool_dir.mkdir(parents=True, exist_ok=True)
        prepared = {}
        for v, spec in enumerate(variants):
            t0 = time.perf_counter()
            pool = demo_pool(pool_dir, args.rows, rates_of(spec, args.track), f"r{args.rows}-{v}", args.track)
            sels = {}
            for arm, text in texts.items():
                path = pool_dir / f"sel-{v}-{arm}.parquet"
                if args.selections:
                    path = Path(args.selections) / path.name
                else:
                    select(pool, text, f"{arm}.cur").write_parquet(path)
                sels[arm] = path
            shares = {arm: defect_shares(pool, pl.read_parquet(p)) for arm, p in sels.items()}
            prepared[spec] = (str(pool.path), sels, shares, round(time.perf_counter() - t0, 1))
            _progress(f"pool and selections for rates {spec or 'defaults'!r}: {prepared[spec][3]} s")
        tasks = [(spec, r, arm, seed) for spec in variants for r in recipes for arm in texts for seed in seeds]
        done = {t: r for t, r in finished_runs(log).items() if t in tasks} if args.resume else {}
        if done:
            _progress(f"{len(done)} of {len(tasks)} runs recorded in {log}: not run again")
        t0 = time.perf_counter()
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max(1, args.jobs), mp_context=ctx) as ex:
            share = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
            futures = {t: ex.submit(run_one, prepared[t[0]][0], str(prepared[t[0]][1][t[2]]),
                                    recipe_of(t[1], backend), t[3], share, backend) for t in tasks if t not in done}
            for future in as_completed(futures.values()):
                task = next(t for t, f in futures.items() if f is future)
                done[task] = future.result()
                if log is not None:
                    record_run(log, task, done[task])
                _progress(f"{len(done)}/{len(tasks)} {task}: aggregate {done[task]['aggregate']:.4f} "
                          f"in {done[task]['seconds']} s")
        train_s = time.perf_counter() - t0
    combos = []
    for spec in variants:
        for r in recipes:
            results = {arm: [done[(spec, r, arm, s)] for s in seeds] for arm in texts}
            combos.append({"rates": spec or "defaults", "recipe": r or "defaults",
                           "suite": results["random"][0]["suite"], "defect_shares": prepared[spec][2],
                           "pool_and_selections_s": prepared[spec][3], **summarize(results, seeds)})
    result = {
        "benchmark": f"{backend} backend validity: curated policies against random",
        "track": args.track,
        "device": device(),
        "gpu": _gpu_name(),
        "suite_version": SUITE_VERSION if args.track == "clip" else None,
        "rows": args.rows,
        "budget": args.budget,
        "seeds": seeds,
        "teacher": teacher,
        "base": base,
        "selections_from": args.selections,
        "jobs": args.jobs,
        "train_eval_s": round(train_s, 1),
        "target": f"best curated arm >= {TARGET_SIGMAS:g} seed-noise sigmas above random; same ranking every seed",
        "combinations": combos,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
