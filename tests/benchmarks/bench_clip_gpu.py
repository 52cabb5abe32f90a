"""Benchmark: the whole ``clip_score`` scorer path against a bare forward loop, same model, same run.

The scorer path is what a policy's ``let clip = clip_score(image, text, ...)``
costs: the pool's parquet read, PNG decode, resize and crop (worker
processes on CUDA, threads on CPU), tokenization, batching, host-to-device
copies, normalization, the forward pass of both towers under bf16 autocast,
and the score file written under the pool's ``scores/``
(:func:`cbdsl.pipelines.engine.scores.provide`). The bare loop runs the same
forward (both towers, normalize, cosine) on one batch already on the
device. The target is a scorer path at >= 85% of the bare loop's images/s.
Each side runs ``--repeats`` times and the best is reported (all runs are
in ``runs``); the decode processes start while the model loads, as in a
real run. ``--procs 8,12,16`` compares process counts.

Seen on an H200 host (16 cores), ViT-L-14, 20,480 rows of 224 px PNGs,
batch 1024: bare 1,713-1,729 images/s; the scorer with threads only 759
(0.44), 16 processes 1,441 (0.84), 12 processes (the default there)
1,369-1,565 (0.80-0.91, two sessions).

Weights are random (open_clip's ``pretrained=None``; for cbdsl-tiny a freshly
built checkpoint, added to the pool as the model asset ``random-tiny``): the cost is the same as with trained weights and nothing
is downloaded. Images are synthetic shapes (``cbdsl.pipelines.data.synth``) at
``--image-size`` pixels, encoded as PNG; at most 2,048 distinct images,
repeated to ``--n`` rows (decode cost does not depend on repetition).

    python tests/benchmarks/bench_clip_gpu.py                          # GPU: ViT-L-14, 224 px, bf16
    python tests/benchmarks/bench_clip_gpu.py --device cpu --model cbdsl-tiny --n 512 --image-size 32

Needs the repo and pip-installable packages only (torch, open_clip_torch,
polars, pydantic, pillow, numpy). Prints one JSON object (with the GPU's
name); ``--out FILE`` also writes it there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from cbdsl.compiler.ir import Col, Score
from cbdsl.pipelines.data import synth
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.writing import add_asset, write_pool
from cbdsl.pipelines.engine.scores import cache_path, provide
from cbdsl.scorers.models import clip_batches, clip_loading, tinyclip
from cbdsl.scorers.registry import registry


def make_pool(path: Path, n: int, size: int, seed: int = 0) -> None:
    """A pool of ``n`` rows: synthetic PNG images of ``size`` pixels and accurate captions."""
    rng = np.random.default_rng(seed)
    distinct = min(n, 2048)
    attrs = synth.sample_attributes(distinct, rng)
    pngs = synth.encode_png(synth.render_images(attrs, size, rng), threads=os.cpu_count() or 1)
    texts = synth.caption(attrs, "coco", rng)
    idx = np.arange(n) % distinct
    frame = pl.DataFrame({
        "id": [f"b{i:08d}" for i in range(n)],
        "image": pl.Series([pngs[i] for i in idx], dtype=pl.Binary),
        "text": [texts[i] for i in idx],
    })
    write_pool(frame, path, name="bench-clip", id_column="id", overwrite=True)


def bare_loop(loaded: clip_batches.Loaded, images: list[bytes], texts: list[str], batch: int, steps: int) -> float:
    """Images/s of the forward alone: one preprocessed batch already on the device, run ``steps`` times."""
    device = loaded.device
    prep = loaded.prep
    pixels, _ = prep.batch(images[:batch])
    x = prep.normalize(torch.from_numpy(pixels).to(device))
    t = loaded.tokenizer(texts[:batch]).to(device)
    model = loaded.model
    cuda = device.startswith("cuda")

    def step():
        img = F.normalize(model.encode_image(x).float(), dim=-1)
        txt = F.normalize(model.encode_text(t).float(), dim=-1)
        return (img * txt).sum(-1)

    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        for _ in range(2):
            step()
        _sync(device)
        start = time.perf_counter()
        out = None
        for _ in range(steps):
            out = step()
        out.float().cpu()  # the last result, as the scorer copies each back
        _sync(device)
        return steps * len(x) / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-L-14")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=20480, help="rows the scorer path scores")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the scorer's (1024 CUDA, 256 CPU)")
    ap.add_argument("--image-size", type=int, default=224, help="side of the synthetic PNGs")
    ap.add_argument("--procs", default="", help="decode processes on CUDA ($CBDSL_DECODE_PROCS; 0: threads), "
                    "comma-separated to try several (default: the scorer's own choice)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each side (the best is reported)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ["CBDSL_DEVICE"] = args.device
    os.environ.setdefault("CBDSL_PROGRESS", "0")
    cuda = args.device.startswith("cuda")
    batch = args.batch_size or (clip_batches.CUDA_BATCH if cuda else clip_batches.CPU_BATCH)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        make_pool(tmp_path / "pool", args.n, args.image_size)
        pool_s = time.perf_counter() - t0
        if args.model == tinyclip.NAME:
            # a policy names weights as a pool model asset, never as a file (NOTES.md, "Model scorers")
            checkpoint = tmp_path / "random-tiny.safetensors"
            tinyclip.save(tinyclip.build(), str(checkpoint))
            add_asset(tmp_path / "pool", "random-tiny", checkpoint, kind="model")
            params = {"model": args.model, "checkpoint": "random-tiny"}
        else:
            params = {"model": args.model, "pretrained": clip_loading.RANDOM}
        params["batch_size"] = batch
        entry = registry().get("clip_score")
        validated = entry.params.model_validate(params)
        pool = Pool.open(tmp_path / "pool")
        t0 = time.perf_counter()
        loaded = clip_loading.load(validated, args.device, clip_loading.checkpoint(pool, validated))
        load_s = time.perf_counter() - t0
        frame = pool.scan(["id", "image", "text"]).collect()
        images, texts = frame["image"].to_list(), frame["text"].to_list()
        steps = max(3, min(20, args.n // batch))
        bare = [bare_loop(loaded, images, texts, batch, steps) for _ in range(args.repeats)]

        step = Score(column="clip", scorer="clip_score", args=(Col(name="image"), Col(name="text")),
                     params=validated.model_dump(mode="json"), cost="gpu_model")
        by_procs: dict[str, list[float]] = {}
        for procs in [w.strip() for w in args.procs.split(",")] if args.procs else ["auto"]:
            if procs == "auto":
                os.environ.pop("CBDSL_DECODE_PROCS", None)
            else:
                os.environ["CBDSL_DECODE_PROCS"] = procs
            full = by_procs.setdefault(procs, [])
            for _ in range(args.repeats):
                path = cache_path(pool, step, entry)
                path.unlink(missing_ok=True)
                _sync(args.device)
                t0 = time.perf_counter()
                out = provide(pool.scan(["id", "image", "text"]), [step], pool, lambda e: pl.col(e.name),
                              registry=registry()).collect()
                _sync(args.device)
                full.append(args.n / (time.perf_counter() - t0))
                assert path.is_file() and out.height == args.n and out["clip"].null_count() == 0
        best = max(by_procs, key=lambda w: max(by_procs[w]))
        full = by_procs[best]

    result = {
        "benchmark": "clip_score scorer path vs bare forward",
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "model": args.model,
        "weights": "random",
        "precision": "bf16 autocast" if cuda else "fp32",
        "image_size": args.image_size,
        "rows": args.n,
        "batch_size": batch,
        "decode_processes": (best if best != "auto" else str(clip_batches.decode_processes())) if cuda else "0 (threads)",
        "bare_images_per_s": round(max(bare), 1),
        "scorer_images_per_s": round(max(full), 1),
        "ratio": round(max(full) / max(bare), 3),
        "target_ratio": 0.85,
        "runs": {"bare": [round(v, 1) for v in bare],
                 **{f"scorer_procs_{w}": [round(v, 1) for v in r] for w, r in by_procs.items()}},
        "model_load_s": round(load_s, 1),
        "pool_build_s": round(pool_s, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
