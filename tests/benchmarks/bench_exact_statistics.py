"""Benchmark: a statistic computed exactly in pieces (``pipelines/engine/exact.py``) against Polars' own
aggregate over the whole column, the way the local engine computed it before session 14.

A float64 column of ``--rows`` standard-normal values (5% missing) in ``--groups`` groups, in one piece and
cut into ``--pieces`` (the Ray engine's shape, here in one process). Each case is one statistic's aggregates:

- ``top``: DataComp's threshold (sort-based in Polars, radix select here);
- ``quantile``: linear interpolation of two elements;
- ``mean+std``: ``zscore``'s two moments (Polars' float sums, exact integer sums here).

Per case and shape, the two sides run interleaved (exact, Polars, exact, ...) ``--runs`` times in this
process after a warm-up (Numba's kernels compiled, pages touched), and the medians are printed with their
ratio. The order statistics must equal Polars' values (asserted); the moments are compared to 1e-12.

    .venv/bin/python tests/benchmarks/bench_exact_statistics.py [--rows 12800000 --groups 1,10,1000 --runs 5]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import polars as pl

from cbdsl.compiler.aggregates import Aggregation, Mean, Quantile, Std, Threshold
from cbdsl.pipelines.engine.exact import InMemory, aggregate

CASES = {
    "top": {"threshold": Threshold(0.3)},
    "quantile": {"q": Quantile(0.7, "linear")},
    "mean+std": {"mean": Mean(), "std": Std()},
}


def frame(rows: int, groups: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    x[rng.random(rows) < 0.05] = np.nan
    return pl.DataFrame({"x": x, "g": rng.integers(0, groups, rows)}).with_columns(pl.col("x").fill_nan(None))


def polars_side(df: pl.DataFrame, a: Aggregation) -> pl.DataFrame:
    exprs = [e.alias(name) for name, e in a.exprs().items()]
    return df.select(exprs) if a.per is None else df.group_by(a.per).agg(exprs).sort(a.per)


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=12_800_000)
    ap.add_argument("--groups", default="1,10,1000", help="comma-separated group counts (1: no `per`)")
    ap.add_argument("--pieces", type=int, default=13, help="the cut for the pieces shape (DataComp's shards)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    out = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_before": os.getloadavg()},
           "rows": args.rows, "runs": args.runs, "cases": []}
    for groups in map(int, args.groups.split(",")):
        df = frame(args.rows, groups)
        size = -(-df.height // args.pieces)
        shapes = {"one piece": InMemory([df]),
                  f"{args.pieces} pieces": InMemory([df.slice(i, size) for i in range(0, df.height, size)])}
        for case, aggregates in CASES.items():
            a = Aggregation(x=pl.col("x"), among=None, per=None if groups == 1 else "g", aggregates=aggregates)
            reference = polars_side(df, a)
            for shape, parts in shapes.items():
                aggregate(a, parts)  # warm-up: kernels compiled, pages touched
                ours, theirs = [], []
                for _ in range(args.runs):
                    t, got = timed(lambda: aggregate(a, parts))
                    ours.append(t)
                    t, _ = timed(lambda: polars_side(df, a))
                    theirs.append(t)
                got = got.sort("g") if groups > 1 else got
                for name, agg in aggregates.items():
                    mine, ref = got[name].to_numpy(), reference[name].to_numpy()
                    if isinstance(agg, (Mean, Std)):
                        assert np.allclose(mine, ref, rtol=1e-12, equal_nan=True), (case, name)
                    else:
                        assert np.array_equal(mine, ref, equal_nan=True), (case, name)
                exact_s, polars_s = statistics.median(ours), statistics.median(theirs)
                row = {"groups": groups, "case": case, "shape": shape, "exact_s": round(exact_s, 4),
                       "polars_s": round(polars_s, 4), "exact_over_polars": round(exact_s / polars_s, 2)}
                out["cases"].append(row)
                print(f"{groups:>5} groups  {case:<9} {shape:<10} exact {exact_s:7.3f} s  Polars {polars_s:7.3f} s"
                      f"  ratio {exact_s / polars_s:5.2f}", flush=True)
    out["machine"]["load_avg_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
