"""The CLIP scorers' batch loop: decode ahead on threads or worker processes, feed the model, read back late.

Why it exists: at ViT-L-14 speed on a GPU, decoding images in the main
process starves the model. Rows go through in batches; batches are prepared
a few ahead of the model: images decoded, resized and cropped into uint8
buffers (pinned on CUDA, :class:`~cbdsl.scorers.models.images.ImagePrep`),
texts tokenized. On CUDA worker processes do it (:func:`decode_processes`;
threads cannot, the GIL caps them below a large model's rate); on CPU a few
threads (``$CBDSL_DECODE_THREADS``), since the model needs the cores.
Normalization runs on the device, the forward pass under bf16 autocast on
CUDA, and results are read back one batch late, so the GPU does not wait
for the host. On an H200 with ViT-L-14 the whole path (parquet read to
score file) ran at 0.80-0.91 of the bare forward loop's images/s
(``tests/benchmarks/bench_clip_gpu.py``).

Worker processes import this module (not the model loading), so it stays
small: numpy, torch, and :mod:`~cbdsl.scorers.models.images`.
"""

from __future__ import annotations

import atexit
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cbdsl.scorers.models.images import decode

CUDA_BATCH, CPU_BATCH = 1024, 256


@dataclass
class Loaded:
    """A model ready to score: the module on its device, how to prepare images and texts."""

    model: Any  # torch.nn.Module, eval mode, on ``device``
    prep: Any  # images.ImagePrep, or None when the transform does not split (then ``transform`` runs per image)
    transform: Callable[[Any], Any]  # PIL image -> float tensor [3, H, W]
    tokenizer: Callable[[list[str]], Any]  # texts -> int64 tensor [n, context_length]
    device: str
    dim: int
    identity: str
    #: How a worker process makes the same tokenizer, when it can without the network (open_clip's BPE):
    #: ``("bpe", context_length)``; None keeps tokenizing in the main process.
    tokenizer_spec: tuple | None = None


def is_cuda(device: str) -> bool:
    """A CUDA device name (``cuda``, ``cuda:1``)."""
    return str(device).startswith("cuda")


def decode_processes() -> int:
    """How many worker processes decode images on CUDA (``$CBDSL_DECODE_PROCS``; 0 means threads).

    Threads cannot keep a large model fed: per image, Pillow's Python-level
    work and the tokenizer hold the GIL for a few tenths of a millisecond,
    which capped a thread pool near 750 images/s on a 16-core H200 host where
    ViT-L-14 runs 1,700. Processes have no such cap. The default leaves four
    cores to the main process (tokenizing, copying, feeding the GPU): on that
    host 12 processes fed 91% of the bare forward rate and 16 only 84%. On CPU
    the model needs the cores itself, so threads decode.
    """
    env = os.environ.get("CBDSL_DECODE_PROCS")
    if env is not None:
        return max(0, int(env))
    return min(16, max(1, (os.cpu_count() or 1) - 4))


_POOLS: dict[int, Any] = {}


def process_pool(workers: int):
    """A persistent pool of ``spawn`` worker processes (fork is unsafe after CUDA and threads), started once."""
    pool = _POOLS.get(workers)
    if pool is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        for _ in range(workers):  # start them all now, so they import while the model loads
            pool.submit(_warm)
        if not _POOLS:
            atexit.register(_shutdown_pools)
        _POOLS[workers] = pool
    return pool


def _shutdown_pools() -> None:
    """At exit: stop the worker processes (atexit)."""
    for pool in _POOLS.values():
        pool.shutdown(wait=True, cancel_futures=True)
    _POOLS.clear()


def _warm() -> None:
    """In a new worker process: import what decoding needs, so the first batch does not wait for it."""
    import PIL.PngImagePlugin  # noqa: F401
    import torchvision.transforms  # noqa: F401


def _decode_chunk(prep, images: list | None, spec: tuple | None = None, texts: list | None = None):
    """In a worker process: decode and resize images, tokenize texts (either may be None).

    Returns (uint8 [m, H, W, 3] or None, int64 ndarray [m, context] or None, ok [m]).
    """
    pixels, ok = prep.batch(images) if images is not None else (None, None)
    tokens = None
    if texts is not None:
        good = np.asarray([t is not None for t in texts], dtype=bool)
        ok = good if ok is None else ok & good
        tokens = _tokenizer_from(spec)(["" if t is None else t for t in texts]).numpy()
    return pixels, tokens, ok


def tokenizer_spec(tokenizer) -> tuple | None:
    """How a worker process makes the same tokenizer without the network: ``("bpe", context_length)`` for
    open_clip's default BPE tokenizer, else None (the main process tokenizes)."""
    import open_clip

    if (type(tokenizer) is open_clip.SimpleTokenizer and getattr(tokenizer, "reduction_fn", None) is None
            and getattr(tokenizer.clean_fn, "__name__", "") == "_clean_lower"
            and tokenizer.all_special_ids == open_clip.SimpleTokenizer().all_special_ids):
        return ("bpe", int(tokenizer.context_length))  # the default BPE tokenizer, only the context length set
    return None


_TOKENIZERS: dict[tuple, Any] = {}


def _tokenizer_from(spec: tuple):
    """In a worker process: the tokenizer ``spec`` names, made once."""
    if spec not in _TOKENIZERS:
        import open_clip

        _TOKENIZERS[spec] = open_clip.SimpleTokenizer(context_length=spec[1])
    return _TOKENIZERS[spec]


def encode(loaded: Loaded, images: Sequence | None, texts: Sequence | None, *, batch_size: int,
           progress: Callable[[int], None] = lambda n: None, workers: int | None = None,
           processes: int | None = None, depth: int = 3):
    """Embed ``images`` and/or ``texts`` in batches of ``batch_size``; returns (values, ok).

    With both, values are the cosines, float32 [n]; with one, its embeddings,
    float32 [n, dim]. ``ok`` marks the rows whose inputs were all usable.

    Batch ``b + depth`` is being decoded while batch ``b`` runs: by worker
    processes on CUDA (:func:`decode_processes`), else by ``workers`` threads,
    into a ring of ``depth + 2`` uint8 buffers (pinned on CUDA). A buffer is
    refilled only after the copy out of it finished: batch ``b``'s result is
    read back (which waits for its copy and forward) before batch ``b + 2``'s
    buffer is reused.
    """
    n = len(images) if images is not None else len(texts)  # type: ignore[arg-type]
    cuda = is_cuda(loaded.device)
    workers = workers or int(os.environ.get("CBDSL_DECODE_THREADS", 0)) or (
        min(16, os.cpu_count() or 1) if cuda else min(4, os.cpu_count() or 1))
    prep = loaded.prep
    processes = decode_processes() if processes is None and cuda else (processes or 0)
    if images is not None and prep is None:  # a transform that does not split runs whole, on threads
        processes = 0
    procs = process_pool(processes) if processes and n > batch_size else None
    texts_in_procs = procs is not None and texts is not None and loaded.tokenizer_spec is not None
    if procs is not None and images is None and not texts_in_procs:
        procs = None
    starts = list(range(0, n, batch_size))
    ring: list = [None] * (depth + 2)
    dim = loaded.dim
    values = np.zeros(n, dtype=np.float32) if images is not None and texts is not None else np.zeros((n, dim), np.float32)
    ok = np.ones(n, dtype=bool)

    def slot(b: int, rows: int):
        buf = ring[b % len(ring)]
        if buf is None or buf.shape[0] < rows:
            buf = torch.empty((rows, *prep.size, 3), dtype=torch.uint8, pin_memory=cuda)
            ring[b % len(ring)] = buf
        return buf[:rows]

    def decode_into(part: list, out) -> np.ndarray:
        return prep.batch(part, out.numpy())[1]

    def gather_into(futures: list, offsets: list[int], out):
        """Wait for a batch's worker results; pixels go into the ring buffer, tokens and ok come back."""
        target = out.numpy() if out is not None else None
        tokens, oks = [], []
        for future, offset in zip(futures, offsets):
            pixels, toks, good = future.result()
            if pixels is not None:
                target[offset : offset + len(good)] = pixels
            if toks is not None:
                tokens.append(torch.from_numpy(toks))
            oks.append(good)
        return np.concatenate(oks), (torch.cat(tokens) if tokens else None)

    def tokenize(part: list):
        good = np.asarray([t is not None for t in part], dtype=bool)
        return loaded.tokenizer(["" if t is None else t for t in part]), good

    def submit(threads, b: int) -> dict[str, list[Future]]:
        start = starts[b]
        stop = min(start + batch_size, n)
        step = max(16, -(-(stop - start) // (processes if procs is not None else workers)))
        chunks = [(s, min(s + step, stop)) for s in range(start, stop, step)]
        jobs: dict[str, list[Future]] = {}
        if images is not None:
            if prep is None:
                jobs["pixels"] = [threads.submit(_transform_each, loaded.transform, images[s:e]) for s, e in chunks]
            elif procs is None:
                out = slot(b, stop - start)
                jobs["ok"] = [threads.submit(decode_into, images[s:e], out[s - start : e - start]) for s, e in chunks]
        if procs is not None:
            spec = loaded.tokenizer_spec if texts_in_procs else None
            parts = [procs.submit(_decode_chunk, prep, images[s:e] if images is not None else None, spec,
                                  texts[s:e] if spec is not None else None) for s, e in chunks]
            out = slot(b, stop - start) if images is not None else None
            jobs["procs"] = [threads.submit(gather_into, parts, [s - start for s, _ in chunks], out)]
        if texts is not None and not texts_in_procs:
            jobs["tokens"] = [threads.submit(tokenize, texts[s:e]) for s, e in chunks]
        return jobs

    pending = None  # (start, stop, device result, ok) of the previous batch, read back one batch late

    def finish(item) -> None:
        start, stop, result, good = item
        values[start:stop] = result.float().cpu().numpy()
        ok[start:stop] = good
        progress(stop - start)

    model = loaded.model
    with ThreadPoolExecutor(workers, thread_name_prefix="clip-prep") as threads, torch.no_grad(), \
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        queue: deque[dict[str, list[Future]]] = deque(submit(threads, b) for b in range(min(depth, len(starts))))
        for b, start in enumerate(starts):
            stop = min(start + batch_size, n)
            jobs = {k: [f.result() for f in v] for k, v in queue.popleft().items()}
            if b + depth < len(starts):
                queue.append(submit(threads, b + depth))
            good = np.ones(stop - start, dtype=bool)
            img = txt = None
            if "procs" in jobs:
                proc_ok, proc_tokens = jobs["procs"][0]
                good &= proc_ok
                if proc_tokens is not None:
                    jobs["tokens"] = [(proc_tokens, proc_ok)]
            if images is not None:
                if "ok" in jobs:
                    good &= np.concatenate(jobs["ok"])
                if prep is not None:
                    x = prep.normalize(ring[b % len(ring)][: stop - start].to(loaded.device, non_blocking=True))
                else:
                    good &= np.concatenate([p[1] for p in jobs["pixels"]])
                    x = torch.cat([p[0] for p in jobs["pixels"]]).to(loaded.device, non_blocking=True)
                img = F.normalize(model.encode_image(x).float(), dim=-1)
            if texts is not None:
                good &= np.concatenate([p[1] for p in jobs["tokens"]])
                t = torch.cat([p[0] for p in jobs["tokens"]]).to(loaded.device, non_blocking=True)
                txt = F.normalize(model.encode_text(t).float(), dim=-1)
            result = (img * txt).sum(-1) if img is not None and txt is not None else (img if img is not None else txt)
            if pending is not None:
                finish(pending)  # waits for the previous batch only; this one is already queued on the GPU
            pending = (start, stop, result, good)
        if pending is not None:
            finish(pending)
    return values, ok


def _transform_each(transform, images: Sequence):
    """The slow path for a transform that does not split: the whole transform per image on the CPU."""
    out, good = [], np.ones(len(images), dtype=bool)
    shape = None
    for i, data in enumerate(images):
        try:
            tensor = transform(decode(data))
            shape = tensor.shape
        except Exception:  # noqa: BLE001 - an undecodable image scores null
            tensor, good[i] = None, False
        out.append(tensor)
    if shape is None:
        shape = (3, 224, 224)
    return torch.stack([t if t is not None else torch.zeros(shape) for t in out]), good

