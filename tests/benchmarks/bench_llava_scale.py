"""Benchmark: LLaVA-665K at full size: import, then `cbdsl run` at budgets 10k, 20k and 50k, against plain Polars.

Why: the instruction-tuning track selects 10k-200k conversations of
LLaVA-665K; the import and every run must work, and stay fast and small, on
a pool of 665,298 rows.

1. **Synthesis** (cached under ``--work-dir``): a LLaVA-1.5-mix-shaped JSON of
   ``--rows`` records (default 665,298), seeded. Its sources come in the
   665K file's proportions (llava_instruct 157,712; sharegpt 40,688 without an
   image; VQAv2 82,783 and OKVQA 8,998 on COCO; A-OKVQA 66,160; OCR-VQA 80,000;
   TextCaps 21,953; GQA 72,140; RefCOCO 48,447; VG 86,417; their sum is
   665,298 and the 624,610 with an image are Curation-Bench's Arrow pool),
   with each source's prompt shapes (the short-answer and option-letter
   suffixes, region prompts, boxes) and turn counts and lengths in its range
   (ShareGPT's long multi-turn chats, LLaVA-Instruct's long answers, VQA's
   one-word answers over several turns). Images: ``--image-files`` distinct
   files (a tiny JPEG each) under LLaVA's folder names, shared by the records
   as COCO images are shared in the mix; the import checks every path.
2. **Import**: ``cbdsl pool import llava JSON POOL --image-folder DIR`` in a
   cold process, against a plain script (``json.load``, a Python loop making
   the same columns, ``pl.DataFrame``, ``write_parquet``).
3. **Runs**: for each budget, ``cbdsl run POLICY --pool POOL --format llava``
   (the manifest and the LLaVA JSON the recipe trains on), cold, for two
   policies: ``random`` (``select random(seed=0)``) and ``best-shape``, the
   seed's best policy's shape with a cheap score in place of the proxy loss
   (``filter gpt_chars <= quantile(gpt_chars, 0.95) per source`` and
   ``select top gpt_chars``); each against a plain Polars script over the
   pool's shards doing the same (``sample`` for random; the per-source
   quantile, a sort and ``head`` for best-shape) and writing the same
   ``llava.json``. Checked: every selection has exactly the budget's rows,
   and best-shape selects the same ``gpt_chars`` values as the script (ties
   at the threshold are broken differently: cbdsl by the id's hash).

Every step is a new process, measured as ``bench_datacomp.py`` measures
(wall, CPU, peak RSS of the process tree sampled every 50 ms, GNU time's
largest process); ratios are cbdsl over the plain script. One run of each
(``--runs`` for more; medians). Prints one JSON object; the load average
before and after is in it (a shared 2-core machine skews wall times).

    .venv/bin/python tests/benchmarks/bench_llava_scale.py --work-dir /tmp/llava665k
    .venv/bin/python tests/benchmarks/bench_llava_scale.py --work-dir /tmp/llava66k --rows 66530  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_datacomp import measure  # noqa: E402

SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."

# source -> (records in the 665K mix, image folder or None, pairs (lo, hi), question chars, answer chars, kind)
MIX = {
    "llava_instruct": (157_712, "coco/train2017", (1, 6), (30, 120), (100, 1000), "open"),
    "sharegpt": (40_688, None, (1, 8), (30, 900), (200, 2500), "open"),
    "vqav2": (82_783, "coco/train2017", (2, 10), (20, 60), (1, 12), "short"),
    "okvqa": (8_998, "coco/train2017", (1, 2), (30, 80), (3, 20), "short"),
    "aokvqa": (66_160, "coco/train2017", (1, 1), (60, 160), (1, 1), "letter"),
    "ocr_vqa": (80_000, "ocr_vqa/images", (3, 6), (18, 40), (4, 60), "open"),
    "textcaps": (21_953, "textvqa/train_images", (1, 1), (50, 60), (40, 140), "open"),
    "gqa": (72_140, "gqa/images", (3, 13), (25, 80), (1, 12), "short"),
    "refcoco": (48_447, "coco/train2017", (2, 10), (60, 110), (8, 28), "region"),
    "vg": (86_417, "vg/VG_100K", (3, 10), (60, 110), (8, 40), "region"),
}
BUDGETS = (10_000, 20_000, 50_000)
POLICIES = {
    "random": "budget {budget}\nselect random(seed=0)\n",
    "best-shape": "filter gpt_chars <= quantile(gpt_chars, 0.95) per source\nbudget {budget}\nselect top gpt_chars\n",
}


# --------------------------------------------------------------------------- the synthetic 665K file


def synthesise(path: Path, images: Path, rows: int, image_files: int, seed: int) -> dict:
    """Write the JSON (a record per line inside one list) and the image folder; returns what was written."""
    rng = np.random.default_rng(seed)
    words = np.array(("the a of in on with man woman red blue cat dog table street sign bus train building "
                      "people two three left right small large white black green tree sky water picture image "
                      "shows standing sitting holding near behind front top bottom book title author year what "
                      "is are there how many color kind this that which where why does do can you describe "
                      "detail explain code function python data model answer question text written").split())
    buf = " ".join(rng.choice(words, size=3_000_000)) + " "  # text is sliced from here: fast, realistic words
    total = sum(v[0] for v in MIX.values())
    counts = {s: max(1, round(v[0] * rows / total)) for s, v in MIX.items()}
    counts["llava_instruct"] += rows - sum(counts.values())
    folders = sorted({v[1] for v in MIX.values() if v[1]})
    per_folder = max(1, image_files // len(folders))
    jpeg = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")
    for folder in folders:
        (images / folder).mkdir(parents=True, exist_ok=True)
        for k in range(per_folder):
            (images / folder / f"{k:012d}.jpg").write_bytes(jpeg)

    def text(lo: int, hi: int) -> str:
        n = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, len(buf) - n - 1))
        return buf[start:start + n].strip() or "yes"

    order = np.concatenate([np.full(n, i) for i, n in enumerate(counts.values())])
    rng.shuffle(order)
    names = list(counts)
    serial = 0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        for row, i in enumerate(order):
            source = names[i]
            _n, folder, pairs, qlen, alen, kind = MIX[source]
            turns = []
            for p in range(int(rng.integers(pairs[0], pairs[1] + 1))):
                q = text(*qlen)
                if kind == "short":
                    q += "?\n" + SHORT
                elif kind == "letter":
                    q += "?\nA. " + text(4, 12) + "\nB. " + text(4, 12) + "\nC. " + text(4, 12) + "\n" + LETTER
                elif kind == "region":
                    q = ("Please provide a short description for this region: [0.12, 0.3, 0.55, 0.91]." if p % 2
                         else "Please provide the bounding box coordinate of the region this sentence describes: "
                         + text(8, 30) + ".")
                if p == 0 and folder:
                    q = "<image>\n" + q
                a = ("ABCD"[int(rng.integers(0, 4))] if kind == "letter" else
                     "[0.21, 0.05, 0.67, 0.98]" if kind == "region" and p % 2 == 0 else text(*alen))
                turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
            serial += 1
            rec: dict = {"id": f"{source}-{serial}" if source != "vqav2" else serial}
            if folder:
                rec["image"] = f"{folder}/{int(rng.integers(0, per_folder)):012d}.jpg"
            rec["conversations"] = turns
            fh.write(("" if row == 0 else ",\n") + json.dumps(rec, ensure_ascii=False))
        fh.write("\n]\n")
    return {"rows": int(len(order)), "bytes": path.stat().st_size, "image_files": per_folder * len(folders),
            "per_source": counts}


# --------------------------------------------------------------------------- the plain scripts (separate processes)


def plain_import(src: str, out: str) -> dict:
    """A one-off import: json.load, the same columns in a Python loop, a Polars frame, one parquet file."""
    import polars as pl

    with open(src, encoding="utf-8") as fh:
        data = json.load(fh)
    cols: dict[str, list] = {k: [] for k in ("id", "image", "source", "question", "answer", "text", "n_turns",
                                             "human_chars", "gpt_chars", "record")}
    for rec in data:
        image = rec.get("image")
        values = [t["value"].replace("<image>", "").strip() for t in rec["conversations"]]
        humans = [v for t, v in zip(rec["conversations"], values) if t["from"] == "human"]
        gpts = [v for t, v in zip(rec["conversations"], values) if t["from"] == "gpt"]
        first = humans[0]
        top = image.split("/", 1)[0] if image else None
        source = ("sharegpt" if not image else top if top != "coco" else "vqa" if first.endswith(SHORT)
                  else "aokvqa" if first.endswith(LETTER) else "refcoco" if "region" in first.lower()
                  else "llava_instruct")
        for key, value in (("id", str(rec["id"])), ("image", image), ("source", source), ("question", first),
                           ("answer", gpts[0]), ("text", "\n".join(values)), ("n_turns", len(humans)),
                           ("human_chars", sum(map(len, humans))), ("gpt_chars", sum(map(len, gpts))),
                           ("record", json.dumps(rec, ensure_ascii=False, separators=(",", ":")))):
            cols[key].append(value)
    del data
    frame = pl.DataFrame(cols)
    frame.write_parquet(out, compression="zstd")
    return {"rows": frame.height}


def plain_run(shards: list[str], policy: str, budget: int, out_dir: str) -> dict:
    """The same selection as the policy, in plain Polars over the pool's shards, and its llava.json."""
    import polars as pl

    scan = pl.scan_parquet(shards)
    if policy == "random":
        ids = scan.select("id").collect().sample(n=budget, seed=0)
    else:
        ids = (scan.select("id", "source", "gpt_chars")
               .filter(pl.col("gpt_chars") <= pl.col("gpt_chars").quantile(0.95, "linear").over("source"))
               .sort("gpt_chars", descending=True).head(budget).select("id").collect())
    ids = ids.with_row_index("rank")
    ids.write_parquet(Path(out_dir) / "selection.parquet")
    records = (ids.lazy().join(scan.select("id", "record", "gpt_chars"), on="id", how="left").sort("rank")
               .collect())
    with open(Path(out_dir) / "llava.json", "w", encoding="utf-8") as fh:
        fh.write("[\n" + ",\n".join(records["record"].to_list()) + "\n]\n")
    return {"selected": records.height, "gpt_chars": sorted(records["gpt_chars"].to_list())}


# --------------------------------------------------------------------------- the benchmark


def _cbdsl(*args: str) -> list[str]:
    return [sys.executable, "-m", "cbdsl", *args]


def _self(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _step(cmd: list[str], cwd: Path, runs: int, check=None) -> dict:
    """``runs`` cold runs of cmd: the medians and every run's numbers."""
    results = []
    for _ in range(runs):
        r = measure(cmd, str(cwd))
        if r["rc"] != 0:
            raise SystemExit(f"failed ({r['rc']}): {' '.join(cmd)}\n{r['output'][-3000:]}")
        if check is not None:
            check(r)
        results.append(r)
    keys = ("wall_s", "cpu_s", "peak_rss_tree_mb", "max_rss_one_process_mb")
    return {**{k: statistics.median(r[k] for r in results) for k in keys},
            "runs": [{k: round(r[k], 3) for k in keys} for r in results]}


def _ratio(a: dict, b: dict) -> dict:
    return {"wall": a["wall_s"] / b["wall_s"], "peak_rss": a["peak_rss_tree_mb"] / b["peak_rss_tree_mb"]}


def benchmark(args) -> dict:
    import polars as pl

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    src, images = work / "llava_v1_5_mix665k_synthetic.json", work / "images"
    meta = work / "synthetic.json"
    report: dict = {"load_avg_before": os.getloadavg(), "python": sys.version.split()[0], "rows": args.rows}
    if not (src.is_file() and meta.is_file() and json.loads(meta.read_text())["rows"] == args.rows):
        t = time.perf_counter()
        print(f"synthesising {args.rows} records ...", file=sys.stderr)
        shutil.rmtree(images, ignore_errors=True)
        info = synthesise(src, images, args.rows, args.image_files, args.seed)
        info["seconds"] = time.perf_counter() - t
        meta.write_text(json.dumps(info))
    report["synthetic"] = json.loads(meta.read_text())

    pool = work / "pool"
    print("import: cbdsl ...", file=sys.stderr)
    cbdsl_import = _step(_cbdsl("pool", "import", "llava", str(src), str(pool), "--name", "llava665k",
                                "--image-folder", str(images), "--overwrite"), work, args.runs)
    print("import: plain script ...", file=sys.stderr)
    plain = _step(_self("--plain-import", str(src), "--out", str(work / "plain.parquet")), work, args.runs)
    card = json.loads((pool / "pool.json").read_text())
    report["import"] = {"cbdsl": cbdsl_import, "plain": plain, "ratio": _ratio(cbdsl_import, plain),
                        "pool_rows": card["rows"], "pool_mb": sum(f.stat().st_size for f in pool.rglob("*")
                                                                  if f.is_file()) / 2**20,
                        "sources": card["stats"]["source"]["value_counts"]}
    shards = [str(pool / s["file"]) for s in card["shards"]]

    runs: dict = {}
    for budget in args.budgets:
        for name, body in POLICIES.items():
            key = f"{name}@{budget}"
            print(f"run {key} ...", file=sys.stderr)
            policy = work / f"{name}-{budget}.cur"
            policy.write_text(f'policy "{name}-{budget}"\npool "llava665k"\n' + body.format(budget=budget))
            out, ref = work / "out" / key, work / "ref" / key
            for d in (out, ref):
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
            mine = _step(_cbdsl("run", str(policy), "--pool", str(pool), "--format", "llava", "--out", str(out)),
                         work, args.runs)
            theirs = _step(_self("--plain-run", name, "--budget", str(budget), "--pool", str(pool), "--out",
                                 str(ref)), work, args.runs)
            selected = pl.read_parquet(out / "selection.parquet")
            exported = json.loads((out / "llava.json").read_text())
            check = {"selected": selected.height, "llava_records": len(exported)}
            assert selected.height == budget == len(exported), check
            if name == "best-shape":
                got = sorted(pl.read_parquet(shards, columns=["id", "gpt_chars"])
                             .join(selected.select("id"), on="id")["gpt_chars"].to_list())
                want = json.loads((ref / "result.json").read_text())["gpt_chars"]
                check["same_gpt_chars_as_plain"] = got == want
                assert got == want, "best-shape: cbdsl and the plain script selected different gpt_chars"
            runs[key] = {"cbdsl": mine, "plain": theirs, "ratio": _ratio(mine, theirs), "check": check}
    report["runs"] = runs
    report["load_avg_after"] = os.getloadavg()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", help="where the synthetic JSON, images and pool go (kept); required")
    ap.add_argument("--rows", type=int, default=665_298)
    ap.add_argument("--image-files", type=int, default=20_000, help="distinct image files the records share")
    ap.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=list(BUDGETS))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plain-import", help=argparse.SUPPRESS)
    ap.add_argument("--plain-run", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--pool", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_import:
        print(json.dumps(plain_import(args.plain_import, args.out)))
        return
    if args.plain_run:
        card = json.loads((Path(args.pool) / "pool.json").read_text())
        result = plain_run([str(Path(args.pool) / s["file"]) for s in card["shards"]], args.plain_run, args.budget,
                           args.out)
        (Path(args.out) / "result.json").write_text(json.dumps(result))
        return
    if not args.work_dir:
        ap.error("--work-dir is required")
    print(json.dumps(benchmark(args), indent=2))


if __name__ == "__main__":
    main()
