"""The ``mini`` backend: the embedded fixed train/eval of the demo loop.

It trains cbdsl-tiny (a small CLIP in open_clip's architecture,
:mod:`cbdsl.scorers.models.tinyclip`) from scratch on the selected
image-caption pairs with a fixed recipe, then evaluates it on a held-out
suite of clean images the pool never contains:

- zero-shot classification of each attribute of the demo images (shape,
  color, size, position, texture), with prompt ensembles in the captions'
  style, as CLIP evaluates;
- image-to-text and text-to-image retrieval recall@1 over the suite's pairs.

The aggregate is the mean of the seven scores. Compute is fixed as DataComp
fixes it: the same number of samples seen (``steps * batch_size``) whatever
the selection's size, a fixed seed, optimizer and schedule. The recipe and
the suite are versioned (:attr:`MiniBackend.suite`): the ledger never
compares results of different versions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from cbdsl.pipelines.backends import BackendError, Job

SUITE_VERSION = 1
EVAL_ROWS = 1000
EVAL_SEED = 0
ATTRIBUTES = ("shape", "color", "size", "position", "texture")


@dataclass
class MiniBackend:
    seed: int = 0
    steps: int = 150  # 150 x 128 = 19,200 samples seen, whatever the selection's size (about 2 CPU minutes)
    batch_size: int = 128
    lr: float = 2e-3
    threads: int = 2  # training is deterministic for a fixed thread count
    eval_rows: int = EVAL_ROWS
    name: str = "mini"
    format: str = "parquet"

    @property
    def suite(self) -> str:
        recipe = {k: v for k, v in asdict(self).items() if k not in ("name", "format")}
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]
        return f"mini-v{SUITE_VERSION}-{digest}"

    def run(self, job: Job) -> dict[str, Any]:
        from cbdsl.pipelines.scores import device
        from cbdsl.scorers.models import tinyclip

        pool = job.pool
        if not {"image", "text"} <= set(pool.schema):
            raise BackendError(f"the mini backend trains on image-caption pairs; pool `{pool.name}` has no "
                               "`image` and `text` columns (use the command backend for other pools)")
        ids = job.selection.get_column(pool.id_column)
        rows = (pool.scan([pool.id_column, "image", "text"])
                .filter(pl.col(pool.id_column).is_in(ids.implode())).collect()
                .join(job.selection.select(pool.id_column, "rank"), on=pool.id_column).sort("rank"))
        if rows.height < 2:
            raise BackendError("the mini backend needs at least 2 selected rows")
        dev = device()
        job.log(f"mini: training cbdsl-tiny on {rows.height} pairs ({self.steps} steps x {self.batch_size}) on {dev}")
        images = tinyclip.load_images(rows.get_column("image").to_list())
        texts = tinyclip.tokenize(rows.get_column("text").fill_null("").to_list())
        model = tinyclip.build(seed=self.seed)
        tinyclip.train(model, images, texts, steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                       seed=self.seed, device=dev, threads=self.threads if dev == "cpu" else None)
        job.log("mini: evaluating on the held-out suite")
        benchmarks = evaluate(model, rows=self.eval_rows, device=dev)
        return {"benchmarks": benchmarks, "aggregate": float(np.mean(list(benchmarks.values()))),
                "suite": self.suite, "train_rows": rows.height}


def eval_set(rows: int = EVAL_ROWS) -> pl.DataFrame:
    """The held-out suite: clean pairs from the generator's eval stream (never in the pool)."""
    from cbdsl.pipelines.demo import generate_clean

    return generate_clean(rows, EVAL_SEED, stream="eval")


def evaluate(model, *, rows: int = EVAL_ROWS, device: str = "cpu", ensemble: int = 16) -> dict[str, float]:
    """Zero-shot accuracy per attribute and retrieval recall@1 on the suite."""
    import torch
    import torch.nn.functional as F

    from cbdsl.pipelines import synth
    from cbdsl.scorers.models import tinyclip

    data = eval_set(rows)
    img = tinyclip.encode_images(model, tinyclip.load_images(data.get_column("image").to_list()), device=device)
    txt = tinyclip.encode_texts(model, tinyclip.tokenize(data.get_column("text").to_list()), device=device)
    rng = np.random.default_rng([EVAL_SEED, 11])
    out: dict[str, float] = {}
    for attr in ATTRIBUTES:
        values = synth.ATTRIBUTES[attr]
        truth = np.asarray([values.index(v) for v in data.get_column(attr).to_list()])
        prototypes = []
        for code in range(len(values)):
            attrs = synth.sample_attributes(ensemble, rng)
            attrs[attr][:] = code
            emb = tinyclip.encode_texts(model, tinyclip.tokenize(synth.caption(attrs, "coco", rng)), device=device)
            prototypes.append(F.normalize(emb.mean(0), dim=0))
        predicted = (img @ torch.stack(prototypes).T).argmax(1).numpy()
        out[f"zeroshot_{attr}"] = float((predicted == truth).mean())
    sim = (img @ txt.T).numpy()
    target = np.arange(len(sim))
    out["retrieval_image_to_text_r1"] = float((sim.argmax(1) == target).mean())
    out["retrieval_text_to_image_r1"] = float((sim.argmax(0) == target).mean())
    return out


def eval_asset(rows: int = EVAL_ROWS) -> pl.DataFrame:
    """The suite as a pool asset for the contamination audit: ids, captions and image hashes."""
    data = eval_set(rows)
    return pl.DataFrame({
        "id": data.get_column("id"),
        "text": data.get_column("text"),
        "image_sha256": [hashlib.sha256(b).hexdigest() for b in data.get_column("image").to_list()],
    })
