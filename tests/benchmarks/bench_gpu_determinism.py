"""Benchmark: is a mini training on the GPU the same bytes run to run? (issue 16, part 5)

Trains the ``mini`` backend's recipe (``--steps`` of it, default all) twice on the same selection of the demo pool on
``--device`` and compares the sha256 of the two models' weights and their suite scores; ``--vlm`` does
the same for ``mini-vlm``'s stage 2 from its cached base. On a CPU the answer was always yes (the thread
count is fixed); on a GPU, cbdsl's training context (``training.deterministic_algorithms(cuda=True)``:
attention held to its math kernel, deterministic cuDNN, a fixed cuBLAS workspace) is what makes it so.

    CBDSL_DEVICE=cuda python tests/benchmarks/bench_gpu_determinism.py --pool-dir /tmp/pools [--vlm]

Prints one JSON object: per model, the two hashes, whether they match, the scores and the seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import polars as pl
import torch

from cbdsl.pipelines.data.demo import make_demo
from cbdsl.pipelines.data.pool import Pool
from cbdsl.scorers.api import device as chosen_device


def weights_sha(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def clip_once(pool: Pool, rows: int, steps: int, dev: str) -> dict:
    from cbdsl.pipelines.loop.backends.mini import RECIPE
    from cbdsl.scorers.models import clip_eval, clip_training, tinyclip
    from dataclasses import replace

    data = pool.scan(["id", "image", "text"]).head(rows).collect()
    images = tinyclip.load_images(data.get_column("image").to_list())
    texts = tinyclip.tokenize(data.get_column("text").to_list())
    recipe = replace(RECIPE, steps=steps or RECIPE.steps)
    start = time.perf_counter()
    model = tinyclip.build(tinyclip.MINI, seed=recipe.seed)
    clip_training.train(model, images, texts, recipe, device=dev)
    scores = clip_eval.evaluate(model, device=dev)
    return {"sha": weights_sha(model), "scores": scores, "seconds": round(time.perf_counter() - start, 2)}


def vlm_once(pool: Pool, rows: int, steps: int, dev: str) -> dict:
    from dataclasses import replace

    from cbdsl.pipelines.loop.backends.mini_vlm import RECIPE
    from cbdsl.scorers.models import vlm, vlm_base

    data = pool.scan(["id", "record", "image"]).head(rows).collect()
    turns = [vlm.turns_of(r) for r in data.get_column("record").to_list()]
    images = pool.read_images(data.get_column("image").to_list())
    model, tok, _ = vlm_base.base()
    start = time.perf_counter()
    recipe = replace(RECIPE, steps=steps or RECIPE.steps)
    vlm.train(model, vlm.encode(tok, turns, images, model.config), recipe, device=dev)
    return {"sha": weights_sha(model), "seconds": round(time.perf_counter() - start, 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool-dir", required=True, help="where the demo pools are (made if missing)")
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps (default: each recipe's, 250 for mini and 800 for mini-vlm's stage 2)")
    ap.add_argument("--vlm", action="store_true", help="also mini-vlm's stage 2 (needs the demo-it pool and base)")
    args = ap.parse_args(argv)
    dev = chosen_device()
    root = Path(args.pool_dir)
    if not (root / "demo" / "pool.json").is_file():
        make_demo(root / "demo")
    out: dict = {"device": dev, "gpu": torch.cuda.get_device_name() if dev == "cuda" else None,
                 "torch": torch.__version__}
    runs = [clip_once(Pool.open(root / "demo"), args.rows, args.steps, dev) for _ in range(2)]
    out["mini"] = {"same_bytes": runs[0]["sha"] == runs[1]["sha"], "same_scores": runs[0]["scores"] == runs[1]["scores"],
                   "runs": runs}
    if args.vlm:
        from cbdsl.pipelines.data.demo_it import make_demo_it

        if not (root / "demo-it" / "pool.json").is_file():
            make_demo_it(root / "demo-it")
        runs = [vlm_once(Pool.open(root / "demo-it"), 4000, args.steps, dev) for _ in range(2)]
        out["mini-vlm"] = {"same_bytes": runs[0]["sha"] == runs[1]["sha"], "runs": runs}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
