"""CLIP scorers: ``clip_score``, ``image_embedding``, ``text_embedding``, through open_clip.

As a policy writes them (the inputs are required, like every scorer's: the
pool's ``image`` and ``text`` columns, or any expression of that type)::

    let clip = clip_score(image, text)                                   # the demo teacher (cbdsl-tiny)
    let clip = clip_score(image, text, model="ViT-L-14", pretrained="openai")
    let cs   = clip_score(image, text, model="ViT-B-32", pretrained="openai", scale="clipscore",
                          prefix="A photo depicts")
    dedup semantic(image_embedding(image, model="ViT-B-32", pretrained="openai"), eps=0.05)

``clip_score`` is DataComp's definition: the cosine similarity of the
L2-normalized image and text embeddings (in [-1, 1]). ``scale="clipscore"``
gives Hessel et al.'s CLIPScore, ``2.5 * max(cos, 0)``. The embeddings are
L2-normalized float32 vectors (output ``embedding``; the score cache stores
them as a fixed-size Array column). A row whose image does not decode or
whose input is null scores null.

Weights:

- ``model="cbdsl-tiny"`` (the default) is the demo pool's CLIP teacher,
  trained by cbdsl on clean data the pool never sees, on first use and
  cached (:func:`cbdsl.scorers.models.teacher.teacher`);
- any other name is an open_clip model (``open_clip.list_models()``, or an
  ``hf-hub:ORG/REPO`` name) with ``pretrained`` (a tag of
  ``open_clip.list_pretrained()``, downloaded by open_clip or found in its
  cache); ``pretrained="random"`` gives untrained weights, for timing only;
- ``checkpoint="NAME"`` names a ``model`` asset of the pool (design rule 8:
  never a path; ``cbdsl pool add-asset POOL NAME FILE --kind model``): a
  weights file for ``model`` (cbdsl-tiny by default), or an open_clip model
  folder (``open_clip_config.json`` and weights, what open_clip's
  ``local-dir:`` loads), which names its own architecture.

The score cache key includes the weights' identity: the teacher's sha256
(``Entry.version``), the checkpoint asset's sha256 (the cache key hashes
every asset a parameter names), or the model name and tag.

Speed: rows go through in batches (``batch_size``; auto is 256 on CPU and
1024 on CUDA), prepared a few ahead of the model, on worker processes on
CUDA (:mod:`cbdsl.scorers.models.clip_batches`). Scores depend on the batch
size only through float rounding, but ``batch_size`` is a parameter like any
other and so part of the cache key: leave it on auto unless memory asks.

This module holds the registrations and their parameters, and imports
without torch (``cbdsl check`` imports it when a policy names a CLIP
scorer); the weights are found and loaded by
:mod:`cbdsl.scorers.models.clip_loading`, imported when a scorer runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cbdsl.scorers.models.assets import asset_name, looks_like_path, path_error
from cbdsl.scorers.registry import Input, Params, model_scorer

TINY_NAME = "cbdsl-tiny"  # = tinyclip.NAME (not imported here: this module must import without torch)


class ClipParams(Params):
    """The model a CLIP scorer uses, and how it batches."""

    model: str = Field(TINY_NAME, description='"cbdsl-tiny" (the demo teacher), an open_clip model name, e.g. '
                       '"ViT-L-14", or "hf-hub:ORG/REPO"')
    pretrained: str = Field("", description='an open_clip pretrained tag, e.g. "openai"; "random" for untrained weights')
    checkpoint: str = Field("", description="a model asset of the pool: weights for `model`, or an open_clip model "
                            "folder (instead of a pretrained tag)")
    batch_size: int | None = Field(None, ge=1, le=65536, description="rows per forward pass; auto: 256 on CPU, 1024 on CUDA")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_asset(cls, value: str) -> str:
        return asset_name("checkpoint", value) if value else value

    @field_validator("pretrained")
    @classmethod
    def _pretrained_tag(cls, value: str) -> str:
        if value and looks_like_path(value):
            raise path_error("pretrained", value, fix_param="checkpoint")
        return value

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not value.startswith("hf-hub:") and looks_like_path(value, slash=False):
            raise path_error("model", value, fix_param="checkpoint")
        return value

    @model_validator(mode="after")
    def _weights_named(self):
        if self.pretrained and self.checkpoint:
            raise PydanticCustomError("clip_weights", "give `pretrained` or `checkpoint`, not both")
        if self.model == TINY_NAME:
            if self.pretrained:
                raise PydanticCustomError(
                    "clip_weights", 'cbdsl-tiny has no pretrained tags: leave `pretrained` out (the demo teacher) '
                    'or give `checkpoint`')
        elif not (self.pretrained or self.checkpoint or self.model.startswith("hf-hub:")):
            raise PydanticCustomError(
                "clip_weights", 'model "{model}" needs weights: pretrained="openai" (an open_clip tag), '
                'checkpoint="NAME" (a model asset of the pool), or pretrained="random" (untrained, for timing only)',
                {"model": self.model})
        return self


class TextClipParams(ClipParams):
    prefix: str = Field("", description='words put before every caption, e.g. "A photo depicts" (CLIPScore)')


class ClipScoreParams(TextClipParams):
    scale: Literal["cosine", "clipscore"] = Field(
        "cosine", description='"cosine" (DataComp) or "clipscore" (Hessel et al.: 2.5 * max(cos, 0))')


def _models():
    """:mod:`~cbdsl.scorers.models.clip_loading`, imported on first use: the model code stays off ``cbdsl check``."""
    import cbdsl.scorers.models.clip_loading as clip_loading  # torch and open_clip: off `cbdsl check`, which imports this module

    return clip_loading


def version(params: ClipParams) -> str:
    """The identity of the weights, for the score cache key: the teacher's sha256, the checkpoint asset's name
    (the cache key adds the asset's sha256, as for every asset a parameter names), or the model name and tag."""
    return _models().identity(params, params.checkpoint)


@model_scorer("clip_score", inputs=[Input("image", "image"), Input("text", "str")], params=ClipScoreParams,
              output="float", cost="gpu_model", method="clip_score", version=version)
def clip_score(ctx, image, text):
    """CLIP similarity of an image and its caption: cosine of L2-normalized embeddings (DataComp); CLIPScore with scale.

    Written ``clip_score(image, text, ...)``: like every scorer's, its inputs
    are positional and required (the registry has no default inputs), which
    also lets a policy score another column or expression. With
    ``scale="clipscore"`` the value is ``2.5 * max(cos, 0)``; ``prefix`` is put
    before each caption ("A photo depicts", as CLIPScore does).
    """
    import numpy as np
    import polars as pl

    p: ClipScoreParams = ctx.params
    cos, ok = _models().embed(ctx, image.to_list(), _with_prefix(text.to_list(), p.prefix))
    values = np.maximum(cos, 0) * 2.5 if p.scale == "clipscore" else cos
    return _with_nulls(pl.Series("value", values.astype(np.float32), dtype=pl.Float32), ok)


@model_scorer("image_embedding", inputs=[Input("image", "image")], params=ClipParams, output="embedding",
              cost="gpu_model", method="clip_score", version=version)
def image_embedding(ctx, image):
    """CLIP image embedding, L2-normalized float32 (for semantic dedup, k-center, clustering)."""
    emb, ok = _models().embed(ctx, image.to_list(), None)
    return _embedding_series(emb, ok)


@model_scorer("text_embedding", inputs=[Input("text", "str")], params=TextClipParams, output="embedding",
              cost="gpu_model", method="clip_score", version=version)
def text_embedding(ctx, text):
    """CLIP text embedding, L2-normalized float32."""
    emb, ok = _models().embed(ctx, None, _with_prefix(text.to_list(), ctx.params.prefix))
    return _embedding_series(emb, ok)


def _with_prefix(texts: list, prefix: str) -> list:
    """Each caption with ``prefix`` before it (nulls stay null)."""
    return [None if t is None else f"{prefix} {t}" for t in texts] if prefix else texts


def _with_nulls(series, ok):
    """``series`` with null where ``ok`` is false: an unusable input scores null."""
    import polars as pl

    if ok.all():
        return series
    frame = pl.DataFrame({"value": series, "ok": ok})
    return frame.select(pl.when(pl.col("ok")).then(pl.col("value")).alias("value")).to_series()


def _embedding_series(emb, ok):
    """float32 [n, dim] embeddings as an Array column, null where ``ok`` is false."""
    import polars as pl

    series = pl.Series("value", emb, dtype=pl.Array(pl.Float32, emb.shape[1]))
    return _with_nulls(series, ok)
