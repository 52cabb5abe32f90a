"""The demo pool's CLIP teacher: cbdsl-tiny trained on clean data the pool never sees, on first use, and cached.

Why it exists: ``clip_score(image, text)`` on the demo pool needs a CLIP that
knows the demo's images, and none can be downloaded. The teacher is a pure
function of (architecture, data, recipe), so :func:`teacher_key` names its
checkpoint and a second call, in any process, loads what the first trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cbdsl.pipelines.data.demo import DEMO_VERSION, generate_clean
from cbdsl.scorers.models.clip_eval import zero_shot_accuracy
from cbdsl.scorers.models.clip_training import train
from cbdsl.scorers.models.recipe import Recipe
from cbdsl.scorers.models.tinyclip import (NAME, TINY, TinyConfig, atomic_write, build, file_sha256, json_sha256,
                                           load, load_images, models_dir, save, tokenize)


@dataclass(frozen=True, kw_only=True)
class TeacherRecipe(Recipe):
    """A training :class:`~cbdsl.scorers.models.recipe.Recipe` and the clean data it trains on.

    Fixed, so the teacher is a pure function of (config, data, recipe); every
    field is part of :func:`teacher_key`.
    """

    rows: int  # generate_clean(rows, seed=data_seed, stream="teacher")
    data_seed: int = 0


TEACHER = TeacherRecipe(rows=20_000, data_seed=0, steps=500, batch_size=128, lr=3e-3, weight_decay=0.1, warmup=25,
                        seed=0, threads=1)
"""500 steps of 128 pairs (3.2 epochs of 20,000) on one thread: about 0.23 s of CPU a step on a 2-core Xeon,
so about two minutes with the data made and decoded (10 s); ``steps`` is the knob if that is too long. One
thread is part of the result: it is deterministic on any machine, and fastest when the machine is busy."""

FORMAT = 1  # bump when the training code changes what a recipe produces


def teacher_key(config: TinyConfig | None = None, recipe: TeacherRecipe | None = None) -> str:
    """The cache key of a teacher: a hash of the architecture, the data generator and the recipe."""
    config, recipe = config or TINY, recipe or TEACHER
    # The generator's name before it moved to pipelines/data/: part of the teacher's identity (its weights' key).
    data = {"generator": "cbdsl.pipelines.demo.generate_clean", "stream": "teacher", "demo_version": DEMO_VERSION}
    return json_sha256({"config": config.open_clip_config(), "data": data, "recipe": dataclasses.asdict(recipe),
                        "format": FORMAT})[:16]


def teacher_path(workdir: str | os.PathLike | None = None, config: TinyConfig | None = None,
                 recipe: TeacherRecipe | None = None) -> Path:
    """Where the teacher of (config, recipe) is cached (it may not exist yet); defaults :data:`TINY`, :data:`TEACHER`."""
    folder = Path(workdir) if workdir is not None else models_dir()
    return folder / f"{NAME}-teacher-{teacher_key(config, recipe)}.safetensors"


def teacher(
    workdir: str | os.PathLike | None = None,
    *,
    config: TinyConfig | None = None,
    recipe: TeacherRecipe | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.nn.Module, Path, str]:
    """The demo pool's CLIP teacher: ``(model, checkpoint_path, sha256)``, trained on first use and cached.

    It is cbdsl-tiny trained on ``generate_clean(recipe.rows, recipe.data_seed,
    stream="teacher")``: clean, accurate captions from a generator the pool
    never shares, so the teacher has not seen the pool's rows or defects. The
    checkpoint is ``<workdir>/cbdsl-tiny-teacher-<key>.safetensors`` (default
    folder :func:`~cbdsl.scorers.models.tinyclip.models_dir`), keyed by
    :func:`teacher_key`; a present file is reused. Training is on CPU by
    default, where it is deterministic: every fresh training gives the same
    sha256 with the same torch build and CPU type (the recipe fixes the
    thread count). A sidecar ``.json`` records the recipe, the time it took
    and the zero-shot accuracy on held-out clean images
    (:func:`~cbdsl.scorers.models.clip_eval.zero_shot_accuracy`).
    """
    config, recipe = config or TINY, recipe or TEACHER
    path = teacher_path(workdir, config, recipe)
    if path.is_file():
        return load(path, config), path, file_sha256(path)
    start = time.perf_counter()
    data = generate_clean(recipe.rows, recipe.data_seed, stream="teacher")
    model = build(config, recipe.seed)
    x = load_images(data.get_column("image").to_list(), config)
    t = tokenize(data.get_column("text").to_list(), config)
    prepared = time.perf_counter() - start
    train(model, x, t, recipe, device=device, progress=progress)
    model.to("cpu")
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    sha = save(model, path)
    accuracy = zero_shot_accuracy(model, config=config, rows=min(1000, recipe.rows))
    meta = {"name": NAME, "key": teacher_key(config, recipe), "sha256": sha, "config": config.open_clip_config(),
            "recipe": dataclasses.asdict(recipe), "device": device, "torch": torch.__version__,
            "threads": recipe.threads, "seconds": round(seconds, 1), "data_seconds": round(prepared, 1),
            "zero_shot_accuracy": accuracy}
    atomic_write(path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return model, path, sha
