"""Benchmark: `cbdsl check` on a 40-line policy, cold process, against `python -c pass`.

The check path must import neither torch nor transformers nor open_clip (nor
polars or numpy), so a cold `cbdsl check` stays well under 0.3 s on a 2-core
machine. Run:

    .venv/bin/python tests/benchmarks/bench_check.py [--runs 30] [--baseline DIR]

It prints the median and p90 wall time of both commands and their ratio.
``--baseline DIR`` also times the same check with another commit's code
(``git worktree add /tmp/base/cbdsl COMMIT``: the folder must be named
``cbdsl``), interleaved with this checkout's run by run (A B A B), and prints
the ratio of the medians, wall and CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICY = """\
# A 40-line policy over an image-caption pool, metadata scorers only.

policy "bench-forty-lines"
cite datacomp_basic, random
pool "demo"

let n_words = words(text)
let n_chars = len(text)
let short_side = min(width, height)
let long_side = max(width, height)
let aspect = long_side / short_side
let area_px = width * height
let caption_rank = rank(n_chars, descending=true) per source
let length_z = zscore(n_chars) per source
let long_caption = n_chars >= quantile(n_chars, 0.5) per source
let wordy = n_words >= quantile(n_words, 0.25)

filter n_words > 2
filter n_chars > 5
filter short_side >= 32
filter aspect < 3
filter area_px >= 32 * 32
filter not matches(text, "(?i)click here|buy now|free shipping")
filter not matches(text, "https?://")
filter lower(text) != text or n_words < 40
filter 0 <= length_z + 3 <= 6
filter source in ["coco", "vg", "cc3m", "laion", "sbu"]
filter n_chars <= quantile(n_chars, 0.99) per source
filter n_words >= quantile(n_words, 0.05) among (source != "laion")
filter long_caption or wordy
filter abs(length_z) < 3
filter log(area_px) > 6
filter sqrt(area_px) >= 32
filter round(aspect) <= 3
filter caption_rank >= 1

mix by source { coco: 0.3, vg: 0.2, cc3m: 0.2, laion: 0.2, *: 0.1 }

budget 5000
select random(seed=7)
"""


def timed(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of ``runs`` cold processes. CPU time is the steadier of the
    two on a shared machine: other jobs delay a process more than they slow its instructions."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode not in (0,):
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return walls, cpus


def summary(measured: tuple[list[float], list[float]]) -> dict[str, float]:
    walls, cpus = sorted(measured[0]), sorted(measured[1])
    return {"median_s": statistics.median(walls), "p90_s": walls[int(0.9 * (len(walls) - 1))],
            "min_s": walls[0], "cpu_median_s": statistics.median(cpus)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of another commit in a folder named `cbdsl`, timed interleaved")
    args = parser.parse_args()
    if args.baseline is not None and args.baseline.resolve().name != "cbdsl":
        parser.error("--baseline must be a folder named `cbdsl` (git worktree add /tmp/base/cbdsl COMMIT)")
    assert len(POLICY.strip().splitlines()) >= 40
    cbdsl = shutil.which("cbdsl", path=str(Path(sys.executable).parent)) or "cbdsl"
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.cur"
        policy.write_text(POLICY)
        command = [cbdsl, "check", str(policy)]
        timed(command, 2)  # warm the OS file cache and Lark's grammar cache
        if args.baseline is None:
            check = summary(timed(command, args.runs))
        else:
            base_env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve().parent)}
            timed(command, 2, base_env)
            rounds = [(timed(command, 1), timed(command, 1, base_env)) for _ in range(args.runs)]
            check = summary(([r[0][0][0] for r in rounds], [r[0][1][0] for r in rounds]))
            base = summary(([r[1][0][0] for r in rounds], [r[1][1][0] for r in rounds]))
        bare = summary(timed([sys.executable, "-c", "pass"], args.runs))
    result = {
        "policy_lines": len(POLICY.strip().splitlines()),
        "runs": args.runs,
        "cbdsl_check": check,
        "python_c_pass": bare,
        "ratio_median": check["median_s"] / bare["median_s"],
        "load_average": os.getloadavg(),
        "target_s": 0.3,
        "meets_target": check["median_s"] < 0.3,
    }
    if args.baseline is not None:
        result |= {"baseline": str(args.baseline), "baseline_check": base,
                   "ratio_to_baseline_wall": check["median_s"] / base["median_s"],
                   "ratio_to_baseline_cpu": check["cpu_median_s"] / base["cpu_median_s"]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
