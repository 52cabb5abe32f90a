"""The base of the mini vision-language model: LLaVA's stage 1, trained once on clean captions and cached.

Why it exists: LLaVA-1.5 instruction-tunes (stage 2, on the selection) a
model whose projector was first aligned on image captions (stage 1, 558K
LAION/CC/SBU captions), with a vision tower and a language model that were
pretrained before that. Nothing can be downloaded here, so the base is made
the same way from the demo generator, on captions of clean images (stream
``base`` of :mod:`~cbdsl.pipelines.data.demo_it`, disjoint from the pool and
the suite: what each image shows, and the word on a banner where one is
drawn): stage 0 trains the vision tower as a CLIP (cbdsl-tiny's ResNet
tower, contrastively, as LLaVA's tower was), then a byte-level BPE tokenizer
is trained and stage 1 trains the projector and the decoder to caption, the
tower frozen. It never sees an instruction: the formats of the tasks come
from the selection in stage 2, as LLaVA's do. (A captioning-only tower,
trained from scratch through the decoder, stayed at chance on every
attribute after 800 steps: the language model learns the captions' wording
long before it looks at the image.)

The base is a pure function of (architecture, data, recipe):
:func:`base_key` names its folder under
:func:`~cbdsl.scorers.models.tinyclip.models_dir` (``cbdsl-vlm-base-<key>/``:
``model.safetensors``, ``tokenizer.json``, ``base.json``), and a second call,
in any process, loads what the first trained.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cbdsl.pipelines.data import demo_it, instructions as it, synth
from cbdsl.scorers.models import vlm
from cbdsl.scorers.models.recipe import Recipe
from cbdsl.scorers.models.tinyclip import models_dir
from cbdsl.scorers.models.vlm_recipe import BASE, CONFIG, BaseRecipe, VLMConfig, base_key as recipe_key

NAME = "cbdsl-vlm-base"
FORMAT = 1  # bump when the training code changes what a recipe produces
CAPTION_PROMPTS = ("Describe the image briefly.", "Write a short caption for the image.",
                   "What is in the image?", "Summarize the image in a few words.")


def base_key(config: VLMConfig = CONFIG, recipe: BaseRecipe = BASE) -> str:
    return recipe_key(config, recipe, demo_it.BASE_DATA_VERSION)


def base_dir(workdir: str | os.PathLike | None = None, config: VLMConfig = CONFIG,
             recipe: BaseRecipe = BASE) -> Path:
    return Path(workdir or models_dir()) / f"{NAME}-{base_key(config, recipe)}"


def captions(rows: int, seed: int) -> tuple[list[vlm.Turns], list[bytes], list[str], list[str]]:
    """The base's data: one caption turn per clean image (stage 1), the texts the tokenizer is trained on (the
    captions and, for its vocabulary only, clean instructions of every task about the same images), and a
    short caption per image for the CLIP tower (stage 0: CLIP's 24-token context)."""
    rng = np.random.default_rng([seed, demo_it.STREAMS["base"]])
    attrs = synth.sample_attributes(rows, rng)
    names = synth.attribute_names(attrs)
    pictures = synth.render_images(attrs, synth.IMAGE_SIZE, rng)
    words = rng.integers(0, len(synth.RENDERED_WORDS), rows)
    banner = np.flatnonzero(rng.random(rows) < 0.2)
    pictures[banner] = synth.draw_text(pictures[banner], [synth.RENDERED_WORDS[w] for w in words[banner]], rng)
    styles = rng.integers(0, 4, rows)
    draws = rng.random((rows, it.DRAWS)).tolist()
    coco = synth.caption(attrs, "coco", rng)
    has_banner = np.zeros(rows, dtype=bool)
    has_banner[banner] = True
    turns, vocabulary, short = [], [], []
    for i in range(rows):
        a = {k: str(v[i]) for k, v in names.items()}
        text = it.describe(a) if styles[i] < 2 else coco[i][0].upper() + coco[i][1:] + "."
        short.append(coco[i])
        if has_banner[i]:
            text += f" A banner reads {synth.RENDERED_WORDS[words[i]]}."
            short[-1] += f" with the word {synth.RENDERED_WORDS[words[i]]}"
        q = it.pick(CAPTION_PROMPTS, draws[i][0])
        turns.append([(q, text)])
        codes = {k: int(v[i]) for k, v in attrs.items()}
        source = tuple(demo_it.SOURCE_SHARES)[i % len(demo_it.SOURCE_SHARES)]
        task, _ = demo_it.clean_turns(source, a, codes, synth.RENDERED_WORDS[words[i]], draws[i][1], draws[i])
        vocabulary += [q, text, *(x for pair in task for x in pair)]
    return turns, synth.encode_png(pictures), vocabulary, short


def _clip():
    """The CLIP modules (open_clip: imported only where a base is trained or loaded)."""
    from cbdsl.scorers.models import clip_training, tinyclip  # open_clip: off the backend's import

    return clip_training, tinyclip


def vision_tower(images: list[bytes], texts: list[str], recipe: BaseRecipe, device: str):
    """Stage 0: cbdsl-tiny with the ResNet tower (``tinyclip.MINI``) trained contrastively on the captions;
    returns its image tower and the embedding width."""
    clip_training, tinyclip = _clip()
    clip = tinyclip.build(tinyclip.MINI, seed=recipe.seed)
    clip_recipe = Recipe(steps=recipe.clip_steps, batch_size=recipe.clip_batch, lr=recipe.clip_lr, weight_decay=0.1,
                         warmup=20, seed=recipe.seed, threads=recipe.threads)
    clip_training.train(clip, tinyclip.load_images(images, tinyclip.MINI), tinyclip.tokenize(texts, tinyclip.MINI),
                        clip_recipe, device=device)
    return clip.visual.to("cpu"), tinyclip.MINI.embed_dim


def empty_tower():
    """An untrained tower of the base's shape, for loading a saved base."""
    _, tinyclip = _clip()
    return tinyclip.build(tinyclip.MINI, seed=0).visual, tinyclip.MINI.embed_dim


def base(workdir: str | os.PathLike | None = None, *, config: VLMConfig = CONFIG, recipe: BaseRecipe = BASE,
         device: str = "cpu", progress: Callable[[int], None] | None = None):
    """``(model, tokenizer, folder)`` of the base, trained on first use (CPU by default: deterministic)."""
    folder = base_dir(workdir, config, recipe)
    if (folder / "base.json").is_file():
        return load(folder)
    start = time.perf_counter()
    turns, images, vocabulary, short = captions(recipe.rows, recipe.data_seed)
    tower, dim = vision_tower(images, short, recipe, device)
    tok = vlm.train_tokenizer(vocabulary, config.vocab)
    data = vlm.encode(tok, turns, images, config)
    model = vlm.build(config, recipe.seed, tower, dim)
    vlm.train(model, data, recipe, device=device, progress=progress)
    model.to("cpu")
    held = min(1000, recipe.rows)  # the caption loss on a sample, for the record (on training data: a fit, not a test)
    losses = vlm.answer_losses(model, vlm.encode(tok, turns[:held], images[:held], config), threads=recipe.threads)
    meta = {"name": NAME, "key": base_key(config, recipe), "config": asdict(config), "recipe": asdict(recipe),
            "device": device, "torch": torch.__version__, "seconds": round(time.perf_counter() - start, 1),
            "caption_loss": round(float(np.mean(losses)), 4)}
    save(model, tok, folder, meta)
    return load(folder)


def save(model: vlm.MiniVLM, tok, folder: Path, meta: dict) -> None:
    """Write the folder whole or not at all (a temporary folder, then one rename)."""
    from safetensors.torch import save_file

    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        (tmp / "tokenizer.json").write_text(tok.to_str())
        (tmp / "base.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep theirs (the same bytes)
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load(folder: Path):
    from safetensors.torch import load_file

    meta = json.loads((folder / "base.json").read_text())
    model = vlm.MiniVLM(VLMConfig(**meta["config"]), *empty_tower())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), vlm.load_tokenizer((folder / "tokenizer.json").read_text()), folder
