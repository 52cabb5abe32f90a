"""The mini vision-language model's architecture and recipes, without torch.

Why it exists: the ``mini-vlm`` backend names its suite by a digest of its
recipe and of the base it starts from, and it is imported (to list its
settings, to name its suite) where no model trains; so what those are lives
here, torch-free, as :mod:`~cbdsl.scorers.models.recipe` does for the CLIP.
Every field is part of the identity of what it trains (hashed with
``dataclasses.asdict`` and sorted keys): rename none.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

BASE_GENERATOR = {"generator": "cbdsl.pipelines.data.demo_it", "stream": "base"}
FORMAT = 1  # bump when the training code changes what a recipe produces


@dataclass(frozen=True)
class VLMConfig:
    """The architecture (:class:`~cbdsl.scorers.models.vlm.MiniVLM`)."""

    vocab: int = 1024
    width: int = 128
    layers: int = 4
    heads: int = 4
    context: int = 128  # visual tokens + text tokens
    visual_tokens: int = 4  # the projector maps the CLIP image embedding to this many tokens


@dataclass(frozen=True, kw_only=True)
class VLMRecipe:
    """Training of ``steps`` AdamW steps of ``batch_size`` conversations: linear warmup then cosine decay,
    ``seed`` for the data order (and the weights when training from scratch), ``threads`` on CPU.
    ``freeze_vision`` keeps the vision tower fixed (LLaVA's stage 2)."""

    steps: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 20
    seed: int = 0
    threads: int | None = 2
    freeze_vision: bool = True


@dataclass(frozen=True, kw_only=True)
class BaseRecipe(VLMRecipe):
    """Stages 0 and 1 on ``rows`` captioned images of the ``base`` stream: the vision tower, a cbdsl-tiny
    CLIP with the ResNet tower (``tinyclip.MINI``), trained contrastively for ``clip_steps`` steps of
    ``clip_batch`` pairs at ``clip_lr`` (the mini backend's recipe); then the projector and the decoder on the
    captions (the fields of :class:`VLMRecipe`), the tower frozen."""

    rows: int = 12_000
    data_seed: int = 0
    clip_steps: int = 1000
    clip_batch: int = 64
    clip_lr: float = 2e-3


CONFIG = VLMConfig()
BASE = BaseRecipe(steps=400, batch_size=48, lr=2e-3, warmup=40, seed=0, threads=2, freeze_vision=True, clip_steps=2000)


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def base_key(config: VLMConfig = CONFIG, recipe: BaseRecipe = BASE, data_version: int = 1) -> str:
    """The base's identity: architecture, recipe, its data's version (``demo_it.BASE_DATA_VERSION``), format."""
    data = {**BASE_GENERATOR, "version": data_version}
    return digest({"config": asdict(config), "recipe": asdict(recipe), "data": data, "format": FORMAT})[:16]
