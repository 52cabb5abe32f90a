"""Benchmark: DataComp basic filtering (no language ID) intersected with CLIP L/14 top 30%, three ways.

On a synthetic DataComp-small-sized metadata pool (12.8M rows, DataComp's
schema and realistic values; see ``datacomp_pool.py``, cached under
``--pool-dir``), the same policy runs

1. with cbdsl: ``cbdsl run POLICY --pool DIR --format datacomp --out OUT`` in
   a cold process (the policy is written to a temporary directory);
2. with a re-creation of DataComp's reference code
   (``mlfoundations/datacomp``, ``baselines/apply_filter.py``): pandas on each
   parquet file in a ``multiprocessing.Pool`` of 2 workers (spawn start
   method, as ``apply_filter`` sets), ``imap_unordered`` then
   ``np.concatenate``; ``load_uids_with_basic_filter`` without its fastText
   line, ``load_uids_with_clip_score`` with ``fraction=0.3`` (``get_threshold``
   loads the whole pool's L/14 scores, ``-np.sort(-values)[int(n * 0.3)]``),
   the two uid arrays intersected with ``np.intersect1d``, sorted and saved
   with ``np.save`` as dtype ``u8,u8`` (what running ``apply_filter`` twice and
   intersecting the two subsets gives), in a cold process;
3. with hand-written DuckDB SQL over the shards (``read_parquet`` with a
   glob): the threshold by ``ORDER BY score DESC LIMIT 1 OFFSET floor(n * 0.3)``
   in a scalar subquery, the filters in ``WHERE`` ("more than two words" as one
   RE2 search with Python's whitespace set), the uid halves parsed and sorted
   in SQL, saved with NumPy, in a cold process.

Before timing, the shards are read once (the page cache is warm for every
engine) and each engine runs once on a 1,000-row pool. Then each runs
``--runs`` times (default 3), in a rotating order, each time a new process;
the report gives the median (and every run) of the wall time, the CPU time
(user + system of the whole process tree, from GNU time; a busy machine skews
it much less than the wall time) and the peak memory, measured two ways:
``peak_rss_tree_mb``, the largest sum of the resident set sizes of the
process and all its descendants (psutil, sampled every 50 ms; this is the
number that counts pandas' worker processes), and ``max_rss_one_process_mb``,
GNU time's "maximum resident set size" (the largest single process of the
tree). Ratios are of the median wall times (and CPU times).

The three ``subset.npy`` files must be identical byte for byte (and are,
across runs too): ``identical`` and ``stable_across_runs`` in the output.

    .venv/bin/python tests/benchmarks/bench_datacomp.py --pool-dir /tmp/dc12m [--rows 12800000] [--runs 3]
    .venv/bin/python tests/benchmarks/bench_datacomp.py --pool-dir /tmp/dc200k --rows 200000 --runs 1  # quick
    .venv/bin/python tests/benchmarks/bench_datacomp.py --pool-dir /tmp/dc12m --profile  # where the time goes

``--profile`` runs cbdsl's pipeline in this process, phase by phase (compile,
parquet decode, each filter expression, the threshold, id hashing,
``execute()`` as a whole, the two exports and their parts), the sketch below
phase by phase, a cold ``cbdsl run`` on a 1,000-row pool of the same schema
(the fixed cost of a process) and on the pool; each as [wall, CPU] seconds.

``--engines cbdsl,pandas,duckdb,sketch`` adds an opt-in fourth contender that
is not cbdsl: ``run_sketch``, the plan ``cbdsl run`` would run with the fixes
proposed in ``tests/benchmarks/README.md``, written by hand from the same
pieces; its manifest must equal cbdsl's (``sketch_manifest_equals_cbdsl``).

Prints one JSON object (progress on stderr). Other engineers' jobs skew wall
times on a shared 2-core machine; the load average before and after is printed.

Note on ``words``: cbdsl's ``words(text)`` counts ``\\S+`` matches (Rust
regex, Unicode White_Space), DataComp's ``len(text.split())`` splits on
Python's whitespace, which also includes U+001C..U+001F. The generator never
writes those four characters; the DuckDB query uses Python's exact set.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent

POLICY = """\
# DataComp basic filtering without language ID, intersected with CLIP L/14 top 30%.
# DataComp (baselines/apply_filter.py): len(text.split()) > 2, len(text) > 5,
# min(w, h) >= 200, max(w, h) / min(w, h) <= 3; get_threshold over the whole pool.

policy "datacomp-basic-nolang-and-clip-l14-top30"
cite datacomp_basic

filter words(text) > 2
filter len(text) > 5
filter min(width, height) >= 200
filter max(width, height) / min(width, height) <= 3
filter top(clip_l14_similarity_score, 0.3)
"""

KEY = "clip_l14_similarity_score"
FRACTION = 0.3
ENGINES = ("cbdsl", "pandas", "duckdb")
# Opt-in: the proposed cbdsl plan, sketched by hand (see run_sketch); `cbdsl run` from another checkout of
# cbdsl (--baseline DIR), to measure a change against its parent; `cbdsl run --engine ray` (a local Ray
# cluster started by the run, its start included: the Ray engine's overhead).
EXTRA_ENGINES = ("sketch", "baseline", "ray")


# --------------------------------------------------------------------------- DataComp's reference, re-created
# Same structure as mlfoundations/datacomp baselines/apply_filter.py and utils.py:
# per-file pandas helpers mapped over a multiprocessing.Pool with imap_unordered,
# results concatenated; the threshold from all files' scores. The fastText
# language line is left out ("without language ID"); paths are local files
# instead of fsspec URLs; there is no tqdm progress bar.


def load_uids_with_basic_filter_helper(path: str):
    import numpy as np
    import pandas as pd

    df = pd.read_parquet(path, columns=["uid", "text", "original_width", "original_height"])

    caption_num_words = df.text.apply(lambda x: len(x.split()))
    caption_num_chars = df.text.apply(lambda x: len(x))
    uid_int = df.uid.apply(int, base=16)
    uid_upper_uint64 = (uid_int // 2**64).astype("uint64")
    uid_lower_uint64 = (uid_int % 2**64).astype("uint64")

    inds_array = np.array(list(zip(uid_upper_uint64, uid_lower_uint64)), "u8,u8")

    caption_mask = (caption_num_words > 2) & (caption_num_chars > 5)
    min_image_dim = np.minimum(df.original_width, df.original_height)
    max_image_dim = np.maximum(df.original_width, df.original_height)
    aspect_ratio = max_image_dim / min_image_dim
    image_mask = (min_image_dim >= 200) & (aspect_ratio <= 3.0)

    return inds_array[caption_mask & image_mask]


def load_uids_with_clip_score_helper(path: str, key: str, threshold: float):
    import numpy as np
    import pandas as pd

    df = pd.read_parquet(path, columns=["uid", key])
    return np.array(
        [(int(uid[:16], 16), int(uid[16:32], 16)) for uid in df[df[key] >= threshold]["uid"].values],
        np.dtype("u8,u8"),
    )


def _read_parquet_columns(path: str, columns: list[str]):
    import pandas as pd

    return pd.read_parquet(path, columns=columns)


def worker_threadpool(worker_fn, concat_fn, paths: list[str], n_workers: int):
    from multiprocessing import Pool

    with Pool(n_workers) as pool:
        uids = []
        for u in pool.imap_unordered(worker_fn, paths):
            uids.append(u)
    return concat_fn(uids)


def load_metadata(paths: list[str], num_workers: int, columns: list[str]):
    import pandas as pd

    worker = partial(_read_parquet_columns, columns=columns)
    return worker_threadpool(worker, pd.concat, paths, num_workers)


def get_threshold(paths: list[str], key: str, fraction: float, num_workers: int) -> float:
    import numpy as np

    df = load_metadata(paths, num_workers=num_workers, columns=[key])
    n = int(len(df) * fraction)
    return -np.sort(-df[key].values)[n]


def load_uids_with_clip_score(paths: list[str], key: str, fraction: float, num_workers: int):
    import numpy as np

    threshold = get_threshold(paths, key, fraction, num_workers)
    worker = partial(load_uids_with_clip_score_helper, key=key, threshold=threshold)
    return worker_threadpool(worker, np.concatenate, paths, num_workers), threshold


def load_uids_with_basic_filter(paths: list[str], num_workers: int):
    import numpy as np

    return worker_threadpool(load_uids_with_basic_filter_helper, np.concatenate, paths, num_workers)


def shard_paths(pool_dir: str) -> list[str]:
    return sorted(str(p) for p in (Path(pool_dir) / "shards").iterdir() if ".parquet" in p.name)


def run_pandas(pool_dir: str, out: str, workers: int) -> dict:
    import multiprocessing as mp

    import numpy as np

    mp.set_start_method("spawn", force=True)  # as apply_filter does
    paths = shard_paths(pool_dir)
    basic = load_uids_with_basic_filter(paths, workers)
    clip, threshold = load_uids_with_clip_score(paths, KEY, FRACTION, workers)
    uids = np.intersect1d(basic, clip)
    uids.sort()
    np.save(out, uids)
    return {"basic": int(len(basic)), "clip": int(len(clip)), "selected": int(len(uids)),
            "threshold": float(threshold)}


# --------------------------------------------------------------------------- DuckDB, hand-written SQL

# Python's str.split() whitespace, exactly (RE2's \s is ASCII only).
_WS = r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
# "more than two words": a word, space, a word, space, a word; one regex search, no list built
THREE_WORDS = f"[^{_WS}][{_WS}]+[^{_WS}]+[{_WS}]+[^{_WS}]"

DUCKDB_SQL = """
SELECT ('0x' || substr(uid, 1, 16))::UBIGINT AS hi, ('0x' || substr(uid, 17, 16))::UBIGINT AS lo
FROM read_parquet('{glob}')
WHERE {key} >= (
        SELECT {key} FROM read_parquet('{glob}') WHERE {key} IS NOT NULL
        ORDER BY {key} DESC
        LIMIT 1 OFFSET (SELECT CAST(floor(count({key}) * {fraction}) AS BIGINT) FROM read_parquet('{glob}')))
  AND least(original_width, original_height) >= 200
  AND greatest(original_width, original_height) / least(original_width, original_height) <= 3
  AND length(text) > 5
  AND regexp_matches(text, '{three_words}')
ORDER BY hi, lo
"""
# (A version with the pool as a CTE referenced three times cost 35% more CPU and 4x the memory:
# DuckDB materialised all five columns of all rows.)


def run_duckdb(pool_dir: str, out: str, threads: int | None) -> dict:
    import duckdb
    import numpy as np

    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    glob = str(Path(pool_dir) / "shards" / "*.parquet")
    sql = DUCKDB_SQL.format(key=KEY, glob=glob.replace("'", "''"), fraction=FRACTION, three_words=THREE_WORDS)
    cols = con.execute(sql).fetchnumpy()
    uids = np.empty(len(cols["hi"]), dtype=np.dtype("u8,u8"))
    uids["f0"] = cols["hi"]
    uids["f1"] = cols["lo"]
    np.save(out, uids)  # already sorted by (hi, lo): the order np.sort gives u8,u8
    return {"selected": int(len(uids))}


# --------------------------------------------------------------------------- the proposed cbdsl plan, sketched
# Not cbdsl: what the fixes proposed in tests/benchmarks/README.md would make
# `cbdsl run` do, written by hand with the same libraries (Polars, cbdsl's
# Numba kernels and exporter) so their effect can be measured before anyone
# changes cbdsl. It compiles the policy as `cbdsl run` does, and writes the
# same two files (selection.parquet with the same rows in the same rank order,
# subset.npy). Run it with --engines cbdsl,pandas,duckdb,sketch.

SKETCH_WORDS_GT_2 = r"\S\s+\S+\s+\S"  # words(text) > 2, as one regex search (Rust regex, Unicode \s)


def run_sketch(pool_dir: str, out_dir: str, mark=None) -> dict:
    """The sketch; ``mark(label)``, when given, is called at the end of each phase (``--profile``)."""
    import math

    import numpy as np
    import polars as pl

    from cbdsl.pipelines.engine.kernels import hashing
    from cbdsl.stages import compile_source
    from cbdsl.pipelines.data.pool import Pool

    mark = mark or (lambda label: None)
    pool = Pool.open(pool_dir)
    compile_source(POLICY, "policy.cur", pool)  # the same front end cost as `cbdsl run`
    mark("open the pool, compile the policy")
    files = [str(p) for p in pool.shard_paths]
    # 1. statistics first, each from the columns it reads only, eagerly: top()'s threshold
    score = pl.scan_parquet(files).select(KEY).collect().get_column(KEY).drop_nulls()
    index = min(math.floor(len(score) * FRACTION), len(score) - 1)
    values = score.to_numpy()
    threshold = np.partition(values, len(values) - 1 - index)[len(values) - 1 - index]  # = descending[index]
    mark("top() threshold: decode the score column, np.partition")
    # 2. the row-local filters with the threshold as a literal: numeric ones pushed into the scan,
    #    string ones on their survivors only, words(text) > 2 as one regex search
    mn, mx = pl.min_horizontal("width", "height"), pl.max_horizontal("width", "height")
    numeric = (mn >= 200) & (mx.cast(pl.Float64) / mn.cast(pl.Float64) <= 3) & (pl.col(KEY) >= threshold)
    strings = (pl.col("text").str.len_chars() > 5) & pl.col("text").str.contains(SKETCH_WORDS_GT_2)
    survivors = pl.scan_parquet(files).filter(numeric).select("id", "text").collect()
    mark(f"scan with the numeric filters pushed down, id and text of the {survivors.height} survivors")
    ids = survivors.filter(strings).get_column("id")
    mark("len(text) > 5 and words(text) > 2 (one regex search) on them")
    # 3. the tail as the executor does it for a policy without select (random(seed=0)): id hashes of
    #    the survivors only
    h = hashing.hash_strings(ids)
    key = hashing.hash_u64(h, 0).astype(np.float64)
    mark("id hashes and random keys of the selected rows (Numba kernels)")
    manifest = (pl.DataFrame({"id": ids, "#key": key, "#hash": h}).sort(["#key", "#hash", "id"])
                .with_row_index("rank", offset=1)
                .select("id", pl.lit(None, pl.String).alias("group"), pl.lit(None, pl.Float64).alias("score"),
                        pl.col("rank").cast(pl.Int64)))
    mark("rank order: sort by (key, hash, id)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_parquet(out / "selection.parquet", compression="zstd")
    mark("write selection.parquet (zstd)")
    # 4. the DataComp export: the uids' 16 bytes straight from hex (big-endian halves), sorted as two
    #    u64 columns by Polars (NumPy's sort of a structured array compares field by field in Python's
    #    generic void comparison, and str.to_integer(base=16) is slow)
    raw = ids.str.decode("hex").to_arrow(compat_level=pl.CompatLevel.oldest())
    if hasattr(raw, "combine_chunks"):
        raw = raw.combine_chunks()
    offsets = np.frombuffer(raw.buffers()[1], dtype=np.int64)
    halves = np.frombuffer(raw.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[len(raw)]].view(">u8")
    pairs = pl.DataFrame({"hi": halves[0::2].astype(np.uint64), "lo": halves[1::2].astype(np.uint64)})
    pairs = pairs.sort(["hi", "lo"])
    arr = np.empty(pairs.height, dtype=np.dtype("u8,u8"))
    arr["f0"] = pairs.get_column("hi").to_numpy()
    arr["f1"] = pairs.get_column("lo").to_numpy()
    with open(out / "subset.npy", "wb") as fh:
        np.save(fh, arr)
    mark("subset.npy: hex decode, sort (hi, lo), save")
    return {"selected": int(len(arr)), "threshold": float(threshold)}


# --------------------------------------------------------------------------- measuring


TIME = "/usr/bin/time"


def measure(cmd: list[str], cwd: str, env: dict | None = None) -> dict:
    """Run cmd; wall time, CPU time, peak RSS of its process tree (sampled), GNU time's max RSS, exit code, output.

    The command runs under ``/usr/bin/time -f "%M %U %S"``: its "maximum
    resident set size" is the largest single process of the tree, and user +
    system time counts every process of the tree (pandas' workers too).
    (``wait4`` on a direct child of this process would report this process's
    own RSS from before the child's exec, which is why GNU time, a tiny
    process, is the launcher.)
    """
    import psutil

    out_f = tempfile.TemporaryFile()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tfile:
        launcher = [TIME, "-f", "%M %U %S", "-o", tfile.name] if os.path.exists(TIME) else []
        start = time.perf_counter()
        proc = subprocess.Popen([*launcher, *cmd], cwd=cwd, env=env, stdout=out_f, stderr=subprocess.STDOUT)
        peak = [0]
        done = threading.Event()

        def poll():
            try:
                root = psutil.Process(proc.pid)
            except psutil.Error:
                return
            while not done.is_set():
                total = 0
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    break
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], total)
                done.wait(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        proc.wait()
        wall = time.perf_counter() - start
        done.set()
        poller.join()
        fields = (Path(tfile.name).read_text().strip().splitlines() or ["0 0 0"])[-1].split()
        try:
            max_rss_kb, cpu_s = int(fields[0]), float(fields[1]) + float(fields[2])
        except (ValueError, IndexError):
            max_rss_kb, cpu_s = 0, float("nan")
    out_f.seek(0)
    output = out_f.read().decode("utf-8", "replace")
    return {"wall_s": wall, "cpu_s": cpu_s, "peak_rss_tree_mb": peak[0] / 2**20,
            "max_rss_one_process_mb": max_rss_kb / 1024, "rc": proc.returncode, "output": output}


def engine_command(engine: str, pool_dir: str, out_dir: Path, policy: Path, workers: int) -> list[str]:
    if engine == "baseline":  # the checkout named by --baseline, through engine_env's PYTHONPATH
        return [sys.executable, "-m", "cbdsl", "run", str(policy), "--pool", pool_dir, "--format", "datacomp",
                "--out", str(out_dir)]
    if engine in ("cbdsl", "ray"):
        cbdsl = shutil.which("cbdsl", path=str(Path(sys.executable).parent)) or "cbdsl"
        return [cbdsl, "run", str(policy), "--pool", pool_dir, "--format", "datacomp", "--out", str(out_dir),
                *(["--engine", "ray"] if engine == "ray" else [])]
    out = out_dir if engine == "sketch" else out_dir / "subset.npy"
    return [sys.executable, str(Path(__file__).resolve()), "--engine", engine, "--pool-dir", pool_dir,
            "--out", str(out), "--workers", str(workers)]


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def engine_env(engine: str, baseline: str | None, tmp_path: Path) -> dict | None:
    """The baseline engine imports `cbdsl` from the --baseline checkout (PYTHONPATH wins over an editable install)."""
    if engine != "baseline":
        return None
    pkg = tmp_path / "baseline-pkg"
    if not pkg.exists():
        pkg.mkdir()
        (pkg / "cbdsl").symlink_to(Path(baseline).resolve())
    return {**os.environ, "PYTHONPATH": str(pkg)}


def benchmark(args) -> dict:
    sys.path.insert(0, str(HERE))
    from datacomp_pool import make_pool

    t0 = time.perf_counter()
    pool = make_pool(args.pool_dir, rows=args.rows, shards=args.shards, seed=args.seed, verbose=True)
    pool_s = time.perf_counter() - t0
    pool_bytes = sum(p.stat().st_size for p in pool.shard_paths)
    engines = [e for e in (*ENGINES, *EXTRA_ENGINES) if e in args.engines]
    load_before = os.getloadavg()
    results: dict[str, list[dict]] = {e: [] for e in engines}
    digests: dict[str, set[bytes]] = {e: set() for e in engines}
    extra: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_datacomp_") as tmp:
        tmp_path = Path(tmp)
        policy = tmp_path / "policy.cur"
        policy.write_text(POLICY)
        # warm-up, untimed: the pool's shards into the OS page cache (every engine then reads from memory,
        # whichever runs first), and each engine once on a 1,000-row pool (Numba's kernel cache, libraries)
        for shard in pool.shard_paths:
            with open(shard, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        tiny = make_pool(tmp_path / "tiny", rows=1000, seed=args.seed)
        for engine in engines:
            (tmp_path / f"warm-{engine}").mkdir()
            warm = measure(engine_command(engine, str(tiny.path), tmp_path / f"warm-{engine}", policy, args.workers),
                           cwd=tmp, env=engine_env(engine, args.baseline, tmp_path))
            if warm["rc"] != 0:
                raise SystemExit(f"{engine} failed on the warm-up pool (exit {warm['rc']}):\n{warm['output']}")
        for r in range(args.runs):
            order = engines[r % len(engines):] + engines[: r % len(engines)]  # rotate: spread the noise
            for engine in order:
                out_dir = tmp_path / f"{engine}-{r}"
                out_dir.mkdir()
                res = measure(engine_command(engine, str(pool.path), out_dir, policy, args.workers), cwd=tmp,
                              env=engine_env(engine, args.baseline, tmp_path))
                if res["rc"] != 0:
                    raise SystemExit(f"{engine} failed (exit {res['rc']}):\n{res['output']}")
                data = (out_dir / "subset.npy").read_bytes()
                digests[engine].add(data)
                if engine not in ("cbdsl", "baseline", "ray"):
                    lines = [ln for ln in res["output"].splitlines() if ln.startswith("{")]
                    if lines:
                        extra[engine] = json.loads(lines[-1])
                res.pop("output")
                results[engine].append(res)
                print(f"run {r + 1}/{args.runs} {engine:<7} {res['wall_s']:7.2f}s  cpu {res['cpu_s']:7.2f}s  "
                      f"tree {res['peak_rss_tree_mb']:7.0f} MB  one process {res['max_rss_one_process_mb']:7.0f} MB",
                      file=sys.stderr)
            if args.keep:
                for engine in engines:
                    Path(args.keep).mkdir(parents=True, exist_ok=True)
                    shutil.copy(tmp_path / f"{engine}-{r}" / "subset.npy", Path(args.keep) / f"{engine}.npy")
        import numpy as np

        sample = np.load(tmp_path / f"{engines[0]}-0" / "subset.npy")
        manifests_equal = None
        if "cbdsl" in engines and "sketch" in engines:
            import polars as pl

            manifests_equal = all(
                pl.read_parquet(tmp_path / f"cbdsl-{r}" / "selection.parquet").equals(
                    pl.read_parquet(tmp_path / f"sketch-{r}" / "selection.parquet"))
                for r in range(args.runs))
    all_outputs = set().union(*digests.values())
    per_engine_stable = {e: len(d) == 1 for e, d in digests.items()}
    summary: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
        "pool": {"path": str(pool.path), "rows": pool.card.rows, "shards": len(pool.card.shards),
                 "bytes_on_disk": pool_bytes, "prepare_s": round(pool_s, 2)},
        "selected": int(len(sample)),
        "identical": len(all_outputs) == 1,
        "stable_across_runs": per_engine_stable,
        **({"sketch_manifest_equals_cbdsl": manifests_equal} if manifests_equal is not None else {}),
        "runs": args.runs,
        "workers_pandas": args.workers,
    }
    for engine in engines:
        rs = results[engine]
        summary[engine] = {
            "wall_s": _summary([x["wall_s"] for x in rs]),
            "cpu_s": _summary([x["cpu_s"] for x in rs]),
            "peak_rss_tree_mb": _summary([x["peak_rss_tree_mb"] for x in rs]),
            "max_rss_one_process_mb": _summary([x["max_rss_one_process_mb"] for x in rs]),
            **({"counts": extra[engine]} if engine in extra else {}),
        }
    def ratios(of: str) -> dict:
        return {f"{e}_over_{of}": {"wall": summary[e]["wall_s"]["median"] / summary[of]["wall_s"]["median"],
                                   "cpu": summary[e]["cpu_s"]["median"] / summary[of]["cpu_s"]["median"]}
                for e in ("pandas", "duckdb", "baseline", "ray") if e in engines}

    if "cbdsl" in engines:
        summary["ratios"] = ratios("cbdsl")  # > 1: cbdsl is faster
        summary["targets"] = {}
        if "pandas" in engines:
            summary["targets"]["cbdsl_20x_faster_than_pandas"] = summary["ratios"]["pandas_over_cbdsl"]["wall"] >= 20
        if "duckdb" in engines:
            summary["targets"]["cbdsl_no_slower_than_duckdb"] = summary["ratios"]["duckdb_over_cbdsl"]["wall"] >= 1
    if "sketch" in engines:
        summary["ratios_sketch"] = ratios("sketch")
    return summary


# --------------------------------------------------------------------------- profile of cbdsl


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(label: str, out: dict, fn):
    """Run fn; record [wall seconds, CPU seconds of this process (all its threads)] under label."""
    c, t = _cpu(), time.perf_counter()
    value = fn()
    out[label] = [round(time.perf_counter() - t, 3), round(_cpu() - c, 3)]
    print(f"  {label:<75} wall {out[label][0]:7.3f}s  cpu {out[label][1]:7.3f}s", file=sys.stderr)
    return value


def profile(args) -> dict:
    """cbdsl's pipeline phase by phase, in this process, on the pool (plus a cold run on a tiny pool)."""
    sys.path.insert(0, str(HERE))
    from datacomp_pool import make_pool

    pool = make_pool(args.pool_dir, rows=args.rows, shards=args.shards, seed=args.seed, verbose=True)
    prof: dict = {"load_avg_before": os.getloadavg()}
    times: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_datacomp_prof_") as tmp:
        tmp_path = Path(tmp)
        policy = tmp_path / "policy.cur"
        policy.write_text(POLICY)
        # the fixed cost of a cold `cbdsl run`: the same policy on a 1,000-row pool
        tiny = make_pool(tmp_path / "tiny", rows=1000, seed=args.seed)
        cold = [measure(engine_command("cbdsl", str(tiny.path), tmp_path / f"tiny-out{i}", policy, 1), cwd=tmp)
                for i in range(3)]
        times["cold `cbdsl run` on a 1,000-row pool"] = [round(statistics.median(x[k] for x in cold), 3)
                                                        for k in ("wall_s", "cpu_s")]
        cold = [measure([sys.executable, "-c", "import cbdsl.cli, cbdsl.commands.selection, polars, numpy, "
                         "cbdsl.pipelines.engine.kernels.hashing, "
                         "cbdsl.pipelines.engine.execute, cbdsl.stages"], cwd=tmp) for _ in range(3)]
        times["cold imports (cli, polars, numpy, numba kernels, executor)"] = [
            round(statistics.median(x[k] for x in cold), 3) for k in ("wall_s", "cpu_s")]

        import polars as pl

        from cbdsl.pipelines.engine.kernels import hashing
        from cbdsl.stages import compile_source
        from cbdsl.stages import lower
        from cbdsl.compiler.ir import FilterStep
        from cbdsl.pipelines.engine.execute import execute
        from cbdsl.pipelines.data.exports import export
        from cbdsl.pipelines.data.uids import uid_pairs
        from cbdsl.pipelines.data.pool import Pool

        # the sketch of the proposed plan, phase by phase (first: it pays Numba's first-call cost, as a
        # cold process does)
        last = [time.perf_counter(), _cpu()]

        def mark(label: str) -> None:
            w, c = time.perf_counter(), _cpu()
            times[f"sketch: {label}"] = [round(w - last[0], 3), round(c - last[1], 3)]
            print(f"  sketch: {label:<67} wall {w - last[0]:7.3f}s  cpu {c - last[1]:7.3f}s", file=sys.stderr)
            last[0], last[1] = w, c

        run_sketch(str(pool.path), str(tmp_path / "sketch-out"), mark)

        pool = Pool.open(pool.path)
        compiled = _timed("cbdsl: compile (parse, resolve, plan, optimize)", times,
                          lambda: compile_source(POLICY, "policy.cur", pool))
        low = lower(compiled.plan, pool.schema)
        # a run as `cbdsl run` does it, phase by phase (execute()'s stages, then what run_selection writes)
        from cbdsl.pipelines.engine.execute import model_scores, query, run_tail, statistics_first

        scores = model_scores(low, pool)
        known = _timed("run: statistics first (top's threshold: one scan of the score column)", times,
                       lambda: statistics_first(low, pool, scores))
        scan = pool.scan(list(compiled.plan.scan.columns))
        survivors = _timed("run: the filter query (numeric filters in the scan, captions of their survivors)",
                           times, lambda: query(known, scan, scores).collect())
        ran = _timed("run: the tail (dedup, budget, select, the pick order)", times,
                     lambda: run_tail(known, pool, survivors))
        run_out = tmp_path / "run-out"
        for fmt, label in (("parquet", "selection.parquet"), ("datacomp", "subset.npy")):
            _timed(f"run: {label}", times, lambda fmt=fmt: export(pool, ran.selection, run_out, fmt, check=False))
        _timed("run: the selection hash", times, lambda: ran.selection_hash())
        cols = list(compiled.plan.scan.columns)
        frame = _timed("cbdsl: parquet decode, the scanned columns (" + ", ".join(cols) + ")", times,
                       lambda: pool.scan(cols).collect())
        _timed("  of which text", times, lambda: pool.scan(["text"]).collect())
        _timed("  of which width, height, score", times,
               lambda: pool.scan(["width", "height", KEY]).collect())
        _timed("  of which id", times, lambda: pool.scan(["id"]).collect())
        exprs = {}
        for step in compiled.plan.of(FilterStep):
            exprs[step.clause] = low.exprs(step.predicate)
        frame = frame.with_columns(low.compute(frame.lazy(), low.late_compute, None).collect()
                                   .select(pl.exclude(frame.columns)))
        for clause, e in exprs.items():
            _timed(f"cbdsl: {clause} (on the decoded frame)", times, lambda e=e: frame.select(e.sum()))
        text = frame.get_column("text")
        _timed("  words(text) alone: str.count_matches(\\S+)", times, lambda: text.str.count_matches(r"\S+"))
        _timed("  words(text) > 2 as one search: str.contains(\\S\\s+\\S+\\s+\\S)", times,
               lambda: text.str.contains(r"\S\s+\S+\s+\S"))
        _timed("  len(text) alone: str.len_chars", times, lambda: text.str.len_chars())
        score = frame.get_column(KEY)
        _timed("cbdsl: top() threshold as lowered: full sort, descending", times,
               lambda: score.drop_nulls().sort(descending=True))
        _timed("  alternative: Series.top_k(k + 1).min()", times,
               lambda: score.top_k(int(len(score) * FRACTION) + 1).min())
        _timed("  id hash (kernels.hash_strings) of every row (cbdsl hashes the survivors only)", times,
               lambda: hashing.hash_strings(frame.get_column("id")))
        result = _timed("cbdsl: execute() in process (scan, filters, tail)", times, lambda: execute(low, pool))
        out = tmp_path / "prof-out"
        _timed("cbdsl: export selection.parquet (with the selection check)", times,
               lambda: export(pool, result.selection, out, "parquet"))
        _timed("cbdsl: export subset.npy (as `cbdsl run` does: not checked twice)", times,
               lambda: export(pool, result.selection, out, "datacomp", check=False))
        ids = result.selection.get_column(pool.id_column)
        _timed("  of which uid_pairs (str.to_integer(base=16) twice, Polars sort)", times,
               lambda: uid_pairs(ids, sort=True))
        arr = uid_pairs(ids)
        _timed("  alternative: NumPy sort of the u8,u8 array (DataComp's, cbdsl's before)", times,
               lambda: arr.copy().sort())
        _timed("  the selection check (anti-join against the pool ids), once per run", times,
               lambda: pl.DataFrame({"id": ids}).lazy().join(pool.scan(["id"]), on="id", how="anti").collect())
        full = measure(engine_command("cbdsl", str(pool.path), tmp_path / "cold-out", policy, 1), cwd=tmp)
        times["cold `cbdsl run` on the pool"] = [round(full["wall_s"], 3), round(full["cpu_s"], 3)]
        prof["selected"] = result.selection.height
    prof["times [wall_s, cpu_s]"] = times
    prof["load_avg_after"] = os.getloadavg()
    return prof


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool-dir", required=True, help="where the synthetic pool is (made there if absent)")
    ap.add_argument("--rows", type=int, default=12_800_000)
    ap.add_argument("--shards", type=int, default=None, help="default: 1M-row shards as write_pool cuts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="pandas worker processes (DataComp's num_workers)")
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help="comma-separated, of " + ",".join(ENGINES + EXTRA_ENGINES) + " (sketch, baseline: opt-in)")
    ap.add_argument("--baseline", metavar="DIR",
                    help="a checkout of another cbdsl commit, timed as engine `baseline` (e.g. `git worktree add DIR "
                         "HEAD~1`; add baseline to --engines)")
    ap.add_argument("--keep", help="copy each engine's last subset.npy into this directory")
    ap.add_argument("--profile", action="store_true", help="profile cbdsl's phases instead of the comparison")
    ap.add_argument("--engine", choices=["pandas", "duckdb", "sketch"], help=argparse.SUPPRESS)  # one cold run
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine == "pandas":
        print(json.dumps(run_pandas(args.pool_dir, args.out, args.workers)))
        return
    if args.engine == "duckdb":
        print(json.dumps(run_duckdb(args.pool_dir, args.out, args.threads)))
        return
    if args.engine == "sketch":
        print(json.dumps(run_sketch(args.pool_dir, args.out)))
        return
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(args.engines) - set(ENGINES) - set(EXTRA_ENGINES)
    if unknown:
        ap.error(f"unknown engines: {', '.join(sorted(unknown))}")
    if ("baseline" in args.engines) != bool(args.baseline):
        ap.error("the baseline engine and --baseline DIR go together")
    needed = ["pyarrow", "psutil", *(e for e in ("pandas", "duckdb") if e in args.engines)]  # beyond cbdsl's deps
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: the benchmarks need cbdsl's `bench` extra: "
                         '.venv/bin/python -m pip install -e ".[bench]"')
    result = profile(args) if args.profile else benchmark(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
