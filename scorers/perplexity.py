"""Perplexity under a causal language model, and CCNet's head / middle / tail buckets.

CCNet (Wenzek et al., LREC 2020; facebookresearch/cc_net) scores each
document with a 5-gram KenLM model of Wikipedia in its language and splits
each language into three buckets by perplexity: ``PerplexityBucket`` puts a
document in "head" if its perplexity is below the language's 30th
percentile, "middle" if below the 60th, else "tail" (the cutoffs come from a
table of percentiles of each language's perplexities).

In cbdsl:

- ``perplexity(text, model="cbdsl-tiny-lm", checkpoint="")`` is exp(mean
  token NLL) under a transformers causal LM (:mod:`cbdsl.scorers.models.lm`):
  with no checkpoint, ``cbdsl-tiny-lm``, a tiny byte-level GPT-2 that cbdsl
  trains on the pool's own text (deterministic, cached under the pool's
  ``scores/models``); with ``checkpoint="NAME"``, the pool's ``model`` asset
  of that name, a ``from_pretrained`` directory (never a path: ``cbdsl pool
  add-asset POOL NAME DIR --kind model``). It is a population scorer: the
  tiny LM is trained on every row.
- ``ccnet_bucket(text, ...)`` applies PerplexityBucket with cutoffs computed
  over the pool itself (NumPy's linear-interpolation percentiles of the
  perplexities), per language (``lang(text)``) unless ``by_language=false``.

Departures from CCNet: one model for all languages instead of one per
language; perplexity per model token (bytes for the tiny LM) instead of
10 ** (-sum(log10 p) / (words + 1)); cutoffs from the pool instead of
cc_net's precomputed ``cutoff.csv``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cbdsl.scorers.models.assets import asset_name, model_asset
from cbdsl.scorers.registry import Input, Params, model_scorer
from cbdsl.scorers.text import identify, langid_version


class PerplexityParams(Params):
    model: Literal["cbdsl-tiny-lm"] = Field(
        default="cbdsl-tiny-lm",
        description="the model when no checkpoint is given: a tiny byte-level GPT-2 that cbdsl trains on the pool",
    )
    checkpoint: str = Field(
        default="",
        description="a model asset of the pool: a transformers causal-LM directory (save_pretrained); "
                    "empty: train the tiny model",
    )

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_asset(cls, value: str) -> str:
        return asset_name("checkpoint", value) if value else value


class BucketParams(PerplexityParams):
    head_quantile: float = Field(default=0.3, gt=0, lt=1, description="perplexity below this quantile is \"head\"")
    tail_quantile: float = Field(default=0.6, gt=0, le=1,
                                 description="perplexity at or above this quantile is \"tail\" (between: \"middle\")")
    by_language: bool = Field(default=True, description="cutoffs per language (`lang(text)`), as CCNet does")

    @model_validator(mode="after")
    def _ordered(self) -> BucketParams:
        if self.head_quantile >= self.tail_quantile:
            raise PydanticCustomError(
                "quantiles_ordered", "`head_quantile` ({head}) must be below `tail_quantile` ({tail})",
                {"head": self.head_quantile, "tail": self.tail_quantile},
            )
        return self


def _version(params: PerplexityParams) -> str:
    return _lm().checkpoint_version(params.checkpoint)


def _bucket_version(params: BucketParams) -> str:
    version = _version(params)
    if params.by_language:
        version += "|" + langid_version()
    return version


def _perplexities(ctx, text):
    name = ctx.params.checkpoint
    lm = _lm().load_checkpoint(*model_asset(ctx.pool, name, "the perplexity parameter `checkpoint`"), ctx.device,
                         name) if name else None
    return _lm().perplexities(text.to_list(), [str(i) for i in ctx.ids.to_list()], checkpoint=lm, workdir=ctx.workdir,
                        device=ctx.device, progress=ctx.progress)


@model_scorer("perplexity", inputs=[Input("text", "str")], params=PerplexityParams, output="float",
              cost="cpu_model", method="ccnet_perplexity", population=True, version=_version)
def perplexity(ctx, text):
    """Perplexity of a text under a causal LM: exp(mean token NLL); the tiny LM is trained on the pool."""
    import polars as pl

    return pl.Series("perplexity", _perplexities(ctx, text), dtype=pl.Float64).fill_nan(None)


@model_scorer("ccnet_bucket", inputs=[Input("text", "str")], params=BucketParams, output="str",
              cost="cpu_model", method="ccnet_perplexity", population=True, version=_bucket_version)
def ccnet_bucket(ctx, text):
    """CCNet's perplexity bucket: "head" below the 30th percentile, "middle" below the 60th, else "tail"."""
    import polars as pl

    ppl = _perplexities(ctx, text)
    groups = None
    if ctx.params.by_language:
        groups, _scores = identify(text, lambda n: None)
    return pl.Series("ccnet_bucket", buckets(ppl, groups, ctx.params.head_quantile, ctx.params.tail_quantile),
                     dtype=pl.String)


def buckets(ppl, groups, head: float, tail: float) -> list[str | None]:
    """PerplexityBucket with cutoffs from the values themselves: (linear) quantiles per group.

    ``ppl`` is a float array (NaN: no perplexity, bucket null); ``groups`` a
    list of labels or None for one group.
    """
    import numpy as np

    ppl = np.asarray(ppl, dtype=np.float64)
    labels = np.array([str(g) for g in groups] if groups is not None else [""] * len(ppl), dtype=object)
    valid = ~np.isnan(ppl)
    cut_head = np.full(len(ppl), np.nan)
    cut_tail = np.full(len(ppl), np.nan)
    for label in sorted(set(labels[valid])):
        rows = np.flatnonzero(valid & (labels == label))
        cut_head[rows], cut_tail[rows] = np.quantile(ppl[rows], [head, tail])
    names = np.where(ppl < cut_head, "head", np.where(ppl < cut_tail, "middle", "tail")).astype(object)
    names[~valid] = None
    return names.tolist()


def _lm():
    """The model module `lm` (NumPy and torch), imported when a scorer runs, not when `cbdsl check` loads this module."""
    import cbdsl.scorers.models.lm as lm  # NumPy and torch: off `cbdsl check`

    return lm
