"""Influence toward a target set: the common core of LESS (Xia et al., ICML 2024) and ICONS (Wu et al., 2025).

``influence(*inputs, target="NAME" | ["A", "B"], aggregate="mean")``:

1. Warm-up: the proxy of the inputs (:mod:`cbdsl.scorers.models.proxy`:
   cbdsl-tiny for ``(image, text)``, an MLP for ``(features, label)``, a
   byte-level GPT-2 for ``(text)``, or for ``(question, answer,
   proxy="tiny-lm")`` with the answer's tokens as the loss, the mini
   vision-language model from its base for ``(image, question, answer)``) trains on a seeded random ``warmup``
   share of the pool (LESS: 5%) for ``epochs`` epochs (LESS: 4), with a
   checkpoint at the end of each epoch (``epochs=0``: one, at initialisation).
2. At each checkpoint, every pool row's and every target example's
   per-sample gradient of the loss (the proxy's last layer: the gradient
   GraNd takes the norm of) is randomly projected to ``dims`` numbers
   (:class:`~cbdsl.scorers.models.proxy.Projector`; LESS: 8192) and unit
   normalised. A row's influence on a target task is its mean cosine
   similarity to the task's examples (its inner product with their mean
   unit gradient), summed over checkpoints weighted by the epoch's mean
   learning rate, as LESS does.
3. Aggregation over target tasks: ``mean``; ``max`` (LESS: the best
   subtask); ``vote`` (ICONS' consensus: one vote per task where the row's
   influence is above the task's ``vote_quantile`` quantile over the pool,
   ICONS: 80th percentile; the score is the number of votes).

Targets are pool assets (``cbdsl pool add-asset``), never files: a
``corpus`` (texts, for a text pool) or a ``table``/``labels`` parquet with
the columns the inputs read (so the inputs must be pool columns), e.g.
``image`` and ``text``, ``question`` and ``answer``, or all three. An image
is given as its file's bytes (a Binary column; null: a text-only example),
never as a path: a target cannot reach the pool's image folder. Each named
asset is one task; an asset with a ``task`` column holds one task per value.
An ``eval`` asset is refused.

Departures from the papers: a small proxy trained by cbdsl instead of a
LoRA warm-up of a 7B model; last-layer gradients instead of LoRA gradients
of every layer; plain gradients for the pool rows, where LESS uses
Adam-preconditioned ones; a Kronecker-structured Rademacher projection
instead of TRAK's dense one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from cbdsl.pipelines.data.card import ASSET_NAME
from cbdsl.scorers.api import RunError
from cbdsl.scorers.dynamics import PROXY_HELP
from cbdsl.scorers.registry import Input, Params, model_scorer

TARGET_KINDS = ("corpus", "table", "labels")


class InfluenceParams(Params):
    target: str | list[str] = Field(description="the target asset name(s) of the pool: each is a target task")
    aggregate: Literal["mean", "max", "vote"] = Field(
        default="mean", description='over target tasks: "mean", "max" (LESS) or "vote" (ICONS\' consensus)')
    vote_quantile: float = Field(default=0.8, gt=0, lt=1, description="a task votes for rows above this quantile (ICONS: 0.8)")
    proxy: Literal["tiny", "tiny-lm"] = Field(default="tiny", description=PROXY_HELP)
    epochs: int = Field(default=4, ge=0, le=100, description="warm-up epochs, one checkpoint after each (LESS: 4)")
    warmup: float = Field(default=0.05, gt=0, le=1, description="share of the pool the proxy warms up on (LESS: 5%)")
    dims: int = Field(default=8192, ge=16, le=1 << 16, description="random projection dimension (LESS: 8192)")
    seed: int = Field(default=0, ge=0, lt=2**31, description="seed of the warm-up subset, weights, order and projection")
    batch_size: int = Field(default=128, ge=2, le=65536, description="training and scoring batch")
    lr: float | None = Field(default=None, gt=0, le=1, description="peak learning rate; auto: 2e-3 CLIP, 1e-2 MLP, 3e-3 LM, 1e-3 VLM")

    @field_validator("target")
    @classmethod
    def _asset_names(cls, value):
        names = [value] if isinstance(value, str) else value
        if not names:
            raise PydanticCustomError("target_names", "`target` needs at least one asset name")
        for name in names:
            if not ASSET_NAME.fullmatch(name):
                raise PydanticCustomError(
                    "target_names", "`{name}` is not an asset name: a target is a pool asset registered with "
                    "`cbdsl pool add-asset POOL NAME FILE`, named in lower case (e.g. \"target-tasks\"), never a path",
                    {"name": name})
        return value


@model_scorer("influence", inputs=[Input("inputs", "any", variadic=True, min_count=1)], params=InfluenceParams,
              output="float", method="less", population=True)
def influence(ctx, *inputs):
    """Gradient influence toward target assets (LESS/ICONS core): projected proxy gradients, mean cosine."""
    import numpy as np

    p = ctx.params
    prep = _proxy().prepare(ctx.ids, list(inputs), p.batch_size, p.lr, p.proxy)
    tasks = _tasks(ctx, prep, inputs)
    with _proxy().reproducible():
        scores = task_scores(prep, tasks, p, ctx.progress, ctx.expect)
    if p.aggregate == "mean":
        values = scores.mean(axis=1)
    elif p.aggregate == "max":
        values = scores.max(axis=1)
    else:
        cut = np.quantile(scores, p.vote_quantile, axis=0) if len(scores) else np.zeros(scores.shape[1])
        values = (scores > cut).sum(axis=1).astype(np.float64)
    return prep.column(values, "influence")


def task_scores(prep, tasks: list, p, progress=lambda n: None, expect=lambda n: None):
    """[rows, tasks]: the lr-weighted sum over checkpoints of each row's mean cosine to each task's examples."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    m = prep.rows
    rng = np.random.default_rng(p.seed)
    warm = np.sort(rng.choice(m, size=min(m, max(2, round(p.warmup * m))), replace=False))
    project = _proxy().Projector(p.dims, p.seed)
    target_rows = sum(prep.proxy.size(data) for _name, data in tasks)
    expect(p.epochs * len(warm) + max(1, p.epochs) * (m + target_rows))
    scores = np.zeros((m, len(tasks)))
    rates: list[float] = []

    def unit(data, rows):
        return F.normalize(project(prep.proxy.measure(model, data, rows).blocks), dim=1)

    def checkpoint(weight: float) -> None:
        means = []
        for _name, data in tasks:
            n = prep.proxy.size(data)
            rows = np.array_split(np.arange(n), max(1, -(-n // p.batch_size)))
            means.append(sum(unit(data, r).sum(0) for r in rows if len(r)) / n)
            progress(n)
        means = torch.stack(means)
        for rows in prep.batches(p.batch_size):
            scores[rows] += weight * (unit(prep.data, rows) @ means.T).double().numpy()
            progress(len(rows))

    def hook(idx, _correct, lr, epoch_end, _model) -> None:
        rates.append(lr)
        progress(len(idx))
        if epoch_end:
            checkpoint(float(np.mean(rates)))
            rates.clear()

    model = prep.proxy.build(p.seed)
    if p.epochs == 0:
        checkpoint(1.0)
    else:
        prep.proxy.train(model, _proxy().subset(prep.data, warm), epochs=p.epochs, seed=p.seed, hook=hook)
    return scores


def _tasks(ctx, prep, inputs) -> list:
    """(task name, proxy data) per target task, prepared like the pool's rows (same encoder, same columns)."""
    import polars as pl  # off the `cbdsl check` path

    p = ctx.params
    who = "`influence` parameter `target`"
    columns = ctx.columns or (None,) * len(inputs)
    if None in columns:
        raise RunError("`influence` reads its target assets by the names of its input columns, but an input is an "
                       "expression", ("pass pool columns, e.g. `influence(image, text, target=...)`; name an "
                                      "expression's result in the pool if you need one",))
    tasks = []
    for name in [p.target] if isinstance(p.target, str) else p.target:
        frame = ctx.asset(name, TARGET_KINDS, who)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise RunError(f"{who}: asset `{name}` has no column {', '.join(f'`{c}`' for c in missing)}, which the "
                           f"inputs read (its columns: {', '.join(frame.columns)})",
                           ("a target asset holds examples in the pool's own columns, e.g. `text` (and `image`)",))
        for c, s in zip(columns, inputs):
            if s.dtype == pl.Binary and frame.schema[c] != pl.Binary:
                raise RunError(f"{who}: asset `{name}` holds `{c}` as {frame.schema[c]}, but the inputs read it as "
                               "image bytes: a target asset carries its images' bytes, not paths (it cannot reach "
                               "the pool's image folder)",
                               (f"write the target as a parquet `table` asset whose `{c}` column holds each image's "
                                "file bytes (null for a text-only example): "
                                f"`{c}=[Path(f).read_bytes() for f in files]`",))
        groups = frame.partition_by("task", as_dict=True, maintain_order=True) if "task" in frame.columns else {(name,): frame}
        for key in sorted(groups, key=lambda k: str(k[0])):
            part = groups[key]
            data, ok = prep.proxy.prepare(*(part.get_column(c).cast(s.dtype) for c, s in zip(columns, inputs)))
            if not ok.any():
                raise RunError(f"{who}: no example of asset `{name}`" + (f" task `{key[0]}`" if "task" in frame.columns else "")
                               + " can be used (null values, undecodable images or unknown labels)")
            tasks.append((f"{name}:{key[0]}", data))
    return tasks


def _proxy():
    """The model module `proxy` (torch), imported when a scorer runs, not when `cbdsl check` loads this module."""
    import cbdsl.scorers.models.proxy as proxy  # torch: off `cbdsl check`

    return proxy
