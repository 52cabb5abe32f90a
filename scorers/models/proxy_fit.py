"""What every proxy of :mod:`~cbdsl.scorers.models.proxy` shares: the fit loop and the measurement record.

Why it exists apart: :mod:`~cbdsl.scorers.models.proxy` picks a proxy by the
scorer's inputs, so it imports every proxy module; a proxy that lives in its
own module (:mod:`~cbdsl.scorers.models.vlm_proxy`) needs these pieces without
importing its picker back.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

StepHook = Callable[[torch.Tensor, torch.Tensor, float, bool, Any], None]  # (indices, correct, lr, epoch_end, model)


@dataclass
class Measure:
    """Per-row measurements of one scoring batch: loss, EL2N (``||softmax - onehot||_2``), whether the model
    gets the row right, and its last-layer gradient as a sum of outer products ``sum_t g_t h_t^T``."""

    loss: np.ndarray  # float64 [b]
    el2n: np.ndarray  # float64 [b]
    correct: np.ndarray  # bool [b]
    blocks: list[tuple[torch.Tensor, torch.Tensor]]  # (g [b, T, a], h [b, T, c]); gradient = sum_t g_t h_t^T


def fit(model: torch.nn.Module, batch_loss: Callable, n: int, *, epochs: int, batch_size: int, lr: float, seed: int,
        hook: StepHook | None = None, weight_decay: float = 0.0) -> None:
    """AdamW over ``epochs`` seeded shuffles of rows ``0..n-1``; the last short batch is kept, so every row is
    presented once an epoch (forgetting counts presentations). Linear warm-up over the first 10% of steps,
    then cosine decay. ``batch_loss(model, idx) -> (losses [b], correct [b])`` before the step; the step
    minimises the mean of the rows' losses. Parameters that get no gradient (a frozen tower) stay as they are."""
    per_epoch = max(1, math.ceil(n / batch_size))
    steps, warmup = epochs * per_epoch, max(1, epochs * per_epoch // 10)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    for _epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for slot in range(per_epoch):
            idx = order[slot * batch_size:(slot + 1) * batch_size]
            rate = lr * (step + 1) / warmup if step < warmup else \
                0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))) * lr
            for group in opt.param_groups:
                group["lr"] = rate
            losses, correct = batch_loss(model, idx)
            opt.zero_grad(set_to_none=True)
            losses.mean().backward()
            opt.step()
            if hook is not None:
                hook(idx, correct.cpu(), rate, slot == per_epoch - 1, model)
            step += 1
    model.eval()


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode without gradients, its mode restored after (measuring inside a training hook)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was)
