"""How cbdsl's models train reproducibly: the learning-rate schedule, the CPU thread count, deterministic
kernels.

Why it exists: every model cbdsl trains (the mini CLIP, the demo's teacher, the dynamics proxies, the mini
vision-language model) is recorded by what it scores, so the same recipe and data must give the same weights;
these three pieces are what each training loop shares. Torch only (no open_clip).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read by cuBLAS at its first call: before torch runs any

import torch  # noqa: E402 (after the variable above)


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
def deterministic_algorithms(cuda: bool = False) -> Iterator[None]:
    """Deterministic kernels inside, without filling every new tensor with NaN first.

    ``use_deterministic_algorithms`` also turns on
    ``torch.utils.deterministic.fill_uninitialized_memory``, a debugging aid
    that writes every ``torch.empty`` before use (21,000 fills per 60 mini
    training steps; 60 steps took 9.6 s with it and 9.2 s without, the same
    weights bit for bit), and no result depends on it, since kernels never
    read memory they have not written.

    ``cuda``: the training runs on a GPU, where two more sources of run-to-run
    difference are closed. Scaled-dot-product attention is held to its math
    kernel: the cuDNN, flash and memory-efficient kernels that torch picks on
    a GPU accumulate their backward pass in no fixed order (torch warned
    "cuDNN attention's backward pass is non-deterministic" on the H200), and
    cuDNN's convolutions to deterministic algorithms without autotuning.
    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` before its first call, which
    :func:`cbdsl.process.configure` and this module's import set. The CPU
    path is untouched (its kernels and their results stay as they were).
    """
    import torch.utils.deterministic as det

    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = False
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if cuda:
            from torch.nn.attention import SDPBackend, sdpa_kernel  # only on a GPU: the CPU keeps torch's choice

            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            with sdpa_kernel([SDPBackend.MATH]):
                yield
        else:
            yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        det.fill_uninitialized_memory = previous[2]
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def side_by_side(fn: Callable[[int], T], items: Iterable[int], *, threads: int | None) -> list[T]:
    """``[fn(i) for i in items]``, run in Python threads side by side when ``threads`` is set (CPU), else in turn.

    Why it is safe: each call trains on ``threads`` torch threads, so its
    floating-point order, and its bytes, are those of the same call alone
    (torch's kernels release the GIL). The thread count and the deterministic
    mode are process-wide and the training loop sets and restores them on
    entry and exit; they are set here first, to the same values, so a call
    that ends first restores what the others still run with.
    """
    items = list(items)
    if not threads or len(items) < 2:
        return [fn(i) for i in items]
    with deterministic_algorithms(), torch_threads(threads), ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(fn, items))
