"""How cbdsl's models train reproducibly: the learning-rate schedule, the CPU thread count, deterministic
kernels.

Why it exists: every model cbdsl trains (the mini CLIP, the demo's teacher, the dynamics proxies, the mini
vision-language model) is recorded by what it scores, so the same recipe and data must give the same weights;
these three pieces are what each training loop shares. Torch only (no open_clip).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """open_clip's schedule: linear warmup over ``warmup`` steps to ``lr``, then cosine decay to zero."""
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span)) * lr


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside (unchanged when ``n`` is None), restored after."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Deterministic kernels inside, without filling every new tensor with NaN first.

    ``use_deterministic_algorithms`` also turns on
    ``torch.utils.deterministic.fill_uninitialized_memory``, a debugging aid
    that writes every ``torch.empty`` before use (21,000 fills per 60 mini
    training steps; 60 steps took 9.6 s with it and 9.2 s without, the same
    weights bit for bit), and no result depends on it, since kernels never
    read memory they have not written.
    """
    import torch.utils.deterministic as det

    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        det.fill_uninitialized_memory = previous[2]


