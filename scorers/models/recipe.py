"""How a CLIP trains: one recipe, for the mini backend, the demo's CLIP teacher and the dynamics proxy.

Why it exists: :func:`~cbdsl.scorers.models.clip_training.train` takes a
:class:`Recipe`, and what the recipe holds is part of what each user keys
its results by: the mini backend's ``suite`` hashes it, the teacher's cache
key hashes it (:class:`~cbdsl.scorers.models.teacher.TeacherRecipe` adds the
data it trains on). Both hash ``dataclasses.asdict`` with sorted keys, so a
field's name is part of every recorded suite and teacher key: rename none.

No torch here: the mini backend holds a recipe, and its module imports
without torch (tests/test_process.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Contrastive training (CLIP's InfoNCE) of ``steps`` optimizer steps of ``batch_size`` pairs.

    open_clip's schedule: AdamW with ``weight_decay`` (none on gains, biases
    and the logit scale), a linear warmup over ``warmup`` steps to ``lr``,
    then cosine decay to zero. ``seed`` draws the weights and the data order.
    ``threads`` fixes torch's CPU thread count while training on CPU (None
    leaves it): float sums depend on it, so it is part of the result there.
    """

    steps: int
    batch_size: int
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 20
    seed: int = 0
    threads: int | None = None
