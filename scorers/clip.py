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
  cached (:func:`cbdsl.scorers.models.tinyclip.teacher`);
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
1024 on CUDA). Batches are prepared a few ahead of the model: images
decoded, resized and cropped into uint8 buffers (pinned on CUDA), texts
tokenized. On CUDA worker processes do it (:func:`decode_processes`;
threads cannot, the GIL caps them below a large model's rate); on CPU a few
threads (``$CBDSL_DECODE_THREADS``), since the model needs the cores.
Normalization runs on the device, the forward pass under bf16 autocast on
CUDA, and results are read back one batch late, so the GPU does not wait
for the host. On an H200 with ViT-L-14 the whole path (parquet read to
score file) ran at 0.80-0.91 of the bare forward loop's images/s
(``tests/benchmarks/bench_clip_gpu.py``). Scores depend on the batch size
only through float rounding, but ``batch_size`` is a parameter like any
other and so part of the cache key: leave it on auto unless memory asks.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cbdsl.dsl.diagnostics import did_you_mean
from cbdsl.scorers.api import Progress, RunError
from cbdsl.scorers.models.assets import LOCAL_DIR, asset_name, looks_like_path, path_error
from cbdsl.scorers.registry import Input, Params, model_scorer

TINY_NAME = "cbdsl-tiny"  # = tinyclip.NAME (not imported here: this module must import without torch)
RANDOM = "random"
CUDA_BATCH, CPU_BATCH = 1024, 256


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


class ClipError(RuntimeError):
    """Weights that cannot be found or loaded; the message says which and what to do."""

    def __init__(self, message: str, hints: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.hints = hints


def _run_error(err: ClipError):
    """The executor's RunError for a ClipError (so `cbdsl run` prints it with its hints, no traceback)."""
    return RunError(err.message, err.hints)


# ---------------------------------------------------------------- scorers


def version(params: ClipParams) -> str:
    """The identity of the weights, for the score cache key: the teacher's sha256, the checkpoint asset's name
    (the cache key adds the asset's sha256, as for every asset a parameter names), or the model name and tag."""
    try:
        return _identity(params, params.checkpoint)
    except ClipError as err:
        raise _run_error(err) from err


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
    cos, ok = _run(ctx, image.to_list(), _with_prefix(text.to_list(), p.prefix))
    values = np.maximum(cos, 0) * 2.5 if p.scale == "clipscore" else cos
    return _with_nulls(pl.Series("value", values.astype(np.float32), dtype=pl.Float32), ok)


@model_scorer("image_embedding", inputs=[Input("image", "image")], params=ClipParams, output="embedding",
              cost="gpu_model", method="clip_score", version=version)
def image_embedding(ctx, image):
    """CLIP image embedding, L2-normalized float32 (for semantic dedup, k-center, clustering)."""
    emb, ok = _run(ctx, image.to_list(), None)
    return _embedding_series(emb, ok)


@model_scorer("text_embedding", inputs=[Input("text", "str")], params=TextClipParams, output="embedding",
              cost="gpu_model", method="clip_score", version=version)
def text_embedding(ctx, text):
    """CLIP text embedding, L2-normalized float32."""
    emb, ok = _run(ctx, None, _with_prefix(text.to_list(), ctx.params.prefix))
    return _embedding_series(emb, ok)


def _with_prefix(texts: list, prefix: str) -> list:
    return [None if t is None else f"{prefix} {t}" for t in texts] if prefix else texts


def _with_nulls(series, ok):
    import polars as pl

    if ok.all():
        return series
    frame = pl.DataFrame({"value": series, "ok": ok})
    return frame.select(pl.when(pl.col("ok")).then(pl.col("value")).alias("value")).to_series()


def _embedding_series(emb, ok):
    import polars as pl

    series = pl.Series("value", emb, dtype=pl.Array(pl.Float32, emb.shape[1]))
    return _with_nulls(series, ok)


# ---------------------------------------------------------------- models


@dataclass
class Loaded:
    """A model ready to score: the module on its device, how to prepare images and texts."""

    model: Any  # torch.nn.Module, eval mode, on ``device``
    prep: Any  # tinyclip.ImagePrep, or None when the transform does not split (then ``transform`` runs per image)
    transform: Callable[[Any], Any]  # PIL image -> float tensor [3, H, W]
    tokenizer: Callable[[list[str]], Any]  # texts -> int64 tensor [n, context_length]
    device: str
    dim: int
    identity: str
    #: How a worker process makes the same tokenizer, when it can without the network (open_clip's BPE):
    #: ``("bpe", context_length)``; None keeps tokenizing in the main process.
    tokenizer_spec: tuple | None = None


_LOADED: OrderedDict[tuple, Loaded] = OrderedDict()  # a process keeps its last two models
_IDENTITY: dict[tuple, str] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint asset found in the pool: its file or folder and sha256."""

    path: Path
    sha256: str


def checkpoint(pool, params: ClipParams, who: str = "the CLIP parameter `checkpoint`") -> Checkpoint | None:
    """The model asset ``params.checkpoint`` names, looked up in ``pool`` (None without one); RunError if absent."""
    if not params.checkpoint:
        return None
    from cbdsl.scorers.models.assets import model_asset

    return Checkpoint(*model_asset(pool, params.checkpoint, who))


def load(params: ClipParams, device: str = "cpu", weights: Checkpoint | None = None) -> Loaded:
    """The model ``params`` name, on ``device`` (cached per process), with ``weights`` when ``params`` names a
    checkpoint (:func:`checkpoint`). Raises ClipError when the weights are missing."""
    if params.checkpoint and weights is None:
        raise ClipError(f"checkpoint `{params.checkpoint}` is a pool asset: look it up first",
                        ("pass clip.checkpoint(pool, params) as `weights`",))
    with _LOCK:
        identity = _identity(params, weights.sha256 if weights is not None else "")
        key = (identity, params.model, device)
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
        loaded = _load(params, device, weights, identity)
        _LOADED[key] = loaded
        while len(_LOADED) > 2:
            _LOADED.popitem(last=False)
        return loaded


def _load(params: ClipParams, device: str, weights: Checkpoint | None, identity: str) -> Loaded:
    from cbdsl.scorers.models import tinyclip

    if _is_cuda(device) and decode_processes():
        _process_pool(decode_processes())  # the decoders start while the model loads

    if weights is not None and weights.path.is_dir():
        if params.model != TINY_NAME:
            raise ClipError(f"checkpoint `{params.checkpoint}` is an open_clip model folder, which names its own "
                            f"architecture, so `model=\"{params.model}\"` has no say",
                            (f'leave `model` out: clip_score(image, text, checkpoint="{params.checkpoint}")',))
        model, transform, tokenizer = _open_clip(params, folder=weights.path)
        size = transform_size(model)
    elif params.model == TINY_NAME:
        if weights is not None:
            try:
                model = tinyclip.load(weights.path)
            except Exception as err:  # noqa: BLE001 - a file of another architecture, or not weights at all
                raise ClipError(f"checkpoint `{params.checkpoint}` does not hold cbdsl-tiny weights: {_short(err)}",
                                ("give a checkpoint saved from cbdsl-tiny (tinyclip.save), or name the open_clip "
                                 f'model it was trained as: model="ViT-B-32", checkpoint="{params.checkpoint}"',)
                                ) from err
        else:
            model, _path, _sha = _teacher()
        transform = tinyclip.preprocess()
        tokenizer = tinyclip.tokenizer()
        size: Any = tinyclip.TINY.image_size
    else:
        model, transform, tokenizer = _open_clip(params, weights=weights)
        size = transform_size(model)
    model = model.to(device).eval()
    prep = tinyclip.ImagePrep.from_transform(transform, size) if size is not None else None
    projection = getattr(model, "text_projection", None)
    dim = int(projection.shape[1]) if projection is not None else _probe_dim(model, tokenizer)
    return Loaded(model=model, prep=prep, transform=transform, tokenizer=tokenizer, device=device, dim=dim,
                  identity=identity, tokenizer_spec=_tokenizer_spec(tokenizer))


def _tokenizer_spec(tokenizer) -> tuple | None:
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


def transform_size(model) -> Any:
    """The (H, W) a model's images are prepared at, from open_clip's preprocess config (None if unknown)."""
    cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    size = cfg.get("size") if isinstance(cfg, dict) else None
    if size is None:
        size = getattr(getattr(model, "visual", None), "image_size", None)
    if isinstance(size, int):
        return (size, size)
    return tuple(size) if size is not None else None


def _probe_dim(model, tokenizer) -> int:
    import torch

    with torch.no_grad():
        return int(model.encode_text(tokenizer(["a"]).to(next(model.parameters()).device)).shape[-1])


def _teacher():
    from cbdsl.scorers.models import tinyclip

    progress = Progress("training the cbdsl-tiny CLIP teacher (once; cached under "
                         f"{tinyclip.models_dir()})", tinyclip.TEACHER.steps)
    try:
        return tinyclip.teacher(progress=progress)
    finally:
        progress.close()


def _open_clip(params: ClipParams, weights: Checkpoint | None = None, folder: Path | None = None):
    """open_clip's model, eval transform and tokenizer, or a ClipError that says which weights are missing.

    ``folder``: an open_clip model folder (a checkpoint asset), loaded as open_clip's ``local-dir:`` model."""
    import open_clip

    name = f"{LOCAL_DIR}{folder}" if folder is not None else params.model
    if folder is not None and not (folder / "open_clip_config.json").is_file():
        raise ClipError(f"checkpoint `{params.checkpoint}` is a folder without open_clip_config.json",
                        ("register an open_clip model folder (open_clip_config.json and open_clip_model.safetensors), "
                         "or a weights file and name its architecture: model=\"ViT-B-32\"",))
    if folder is None and not name.startswith("hf-hub:") and open_clip.get_model_config(name.replace("/", "-")) is None:
        raise ClipError(f"open_clip has no model `{name}`",
                        tuple(did_you_mean(name, open_clip.list_models()))
                        + ("`python -c 'import open_clip; print(open_clip.list_models())'` lists them",))
    pretrained = None if params.pretrained in ("", RANDOM) else params.pretrained
    if pretrained and not open_clip.get_pretrained_cfg(name, pretrained):
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ClipError(f"open_clip has no pretrained tag `{pretrained}` for model `{name}`",
                        (f"its tags are: {', '.join(tags)}" if tags else f"open_clip lists no tags for `{name}`",
                         "or give local weights as a model asset of the pool: `cbdsl pool add-asset POOL NAME FILE "
                         '--kind model`, then checkpoint="NAME"'))
    try:
        with _hub_offline_unless_reachable():
            model, _, transform = open_clip.create_model_and_transforms(name, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(name)
    except Exception as err:  # noqa: BLE001 - open_clip raises RuntimeError, hub errors, OSError...
        if folder is not None:
            raise ClipError(f"checkpoint `{params.checkpoint}` is not a loadable open_clip model folder: {_short(err)}",
                            ("register the folder open_clip saved (open_clip_config.json and its weights)",)) from err
        what = f"the `{pretrained}` weights of open_clip model `{name}`" if pretrained else f"open_clip model `{name}`"
        raise ClipError(
            f"could not load {what}: {_short(err)}",
            (f"without internet, open_clip cannot download them: fetch them where there is (run "
             f"`open_clip.create_model_and_transforms({name!r}, pretrained={pretrained!r})` once: the Hugging Face "
             "cache under ~/.cache/huggingface is then used offline), or register the weights file as a model "
             "asset of the pool (`cbdsl pool add-asset POOL NAME FILE --kind model`) and write "
             f'clip_score(image, text, model="{name}", checkpoint="NAME")',),
        ) from err
    if weights is not None:
        try:
            open_clip.load_checkpoint(model, str(weights.path))
        except Exception as err:  # noqa: BLE001
            raise ClipError(f"checkpoint `{params.checkpoint}` does not fit open_clip model `{name}`: {_short(err)}",
                            ("give weights of this architecture (an open_clip or OpenAI CLIP state dict)",)) from err
    return model, transform, tokenizer


@contextmanager
def _hub_offline_unless_reachable():
    """Without a route to the Hugging Face Hub, make huggingface_hub use its cache only (as HF_HUB_OFFLINE=1 does).

    Otherwise, offline, each download retries for about a minute before it fails;
    with the switch, a cached file loads at once and a missing one fails at once.
    """
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    if constants.HF_HUB_OFFLINE or _hub_reachable(constants.ENDPOINT):
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    from urllib.parse import urlparse

    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _identity(params: ClipParams, checkpoint_id: str) -> str:
    """The weights' identity: ``checkpoint_id`` (the asset's sha256, or its name in the cache key) with a
    checkpoint, the teacher's sha256 (memoized by file size and mtime), else the model name and tag."""
    from cbdsl.scorers.models import tinyclip

    if params.checkpoint:
        return f"{params.model}:checkpoint:{checkpoint_id}"
    if params.model == TINY_NAME:
        path = tinyclip.teacher_path()
        if not path.is_file():
            _teacher()
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _IDENTITY:
            _IDENTITY[key] = tinyclip.file_sha256(path)
        return f"{TINY_NAME}:teacher:{_IDENTITY[key]}"
    return f"{params.model}:{params.pretrained}"


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ---------------------------------------------------------------- the batch pipeline


def _run(ctx, images: list | None, texts: list | None):
    """Embed ``images`` and/or ``texts`` in batches; returns (values, ok).

    With both, values are the cosines, float32 [n]; with one, its embeddings,
    float32 [n, dim]. ``ok`` marks the rows whose inputs were all usable.
    """
    weights = checkpoint(ctx.pool, ctx.params)
    try:
        loaded = load(ctx.params, ctx.device, weights)
    except ClipError as err:
        raise _run_error(err) from err
    batch = ctx.params.batch_size or (CUDA_BATCH if _is_cuda(ctx.device) else CPU_BATCH)
    return encode(loaded, images, texts, batch_size=batch, progress=ctx.progress)


def _is_cuda(device: str) -> bool:
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


def _process_pool(workers: int):
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
    for pool in _POOLS.values():
        pool.shutdown(wait=True, cancel_futures=True)
    _POOLS.clear()


def _warm() -> None:
    import PIL.PngImagePlugin  # noqa: F401
    import torchvision.transforms  # noqa: F401


def _decode_chunk(prep, images: list | None, spec: tuple | None = None, texts: list | None = None):
    """In a worker process: decode and resize images, tokenize texts (either may be None).

    Returns (uint8 [m, H, W, 3] or None, int64 ndarray [m, context] or None, ok [m]).
    """
    import numpy as np

    pixels, ok = prep.batch(images) if images is not None else (None, None)
    tokens = None
    if texts is not None:
        good = np.asarray([t is not None for t in texts], dtype=bool)
        ok = good if ok is None else ok & good
        tokens = _tokenizer_from(spec)(["" if t is None else t for t in texts]).numpy()
    return pixels, tokens, ok


def encode(loaded: Loaded, images: Sequence | None, texts: Sequence | None, *, batch_size: int,
           progress: Callable[[int], None] = lambda n: None, workers: int | None = None,
           processes: int | None = None, depth: int = 3):
    """The scorer's batch loop (public for the benchmark): see :func:`_run` for what it returns.

    Batch ``b + depth`` is being decoded while batch ``b`` runs: by worker
    processes on CUDA (:func:`decode_processes`), else by ``workers`` threads,
    into a ring of ``depth + 2`` uint8 buffers (pinned on CUDA). A buffer is
    refilled only after the copy out of it finished: batch ``b``'s result is
    read back (which waits for its copy and forward) before batch ``b + 2``'s
    buffer is reused.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    n = len(images) if images is not None else len(texts)  # type: ignore[arg-type]
    cuda = _is_cuda(loaded.device)
    workers = workers or int(os.environ.get("CBDSL_DECODE_THREADS", 0)) or (
        min(16, os.cpu_count() or 1) if cuda else min(4, os.cpu_count() or 1))
    prep = loaded.prep
    processes = decode_processes() if processes is None and cuda else (processes or 0)
    if images is not None and prep is None:  # a transform that does not split runs whole, on threads
        processes = 0
    procs = _process_pool(processes) if processes and n > batch_size else None
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
                jobs["pixels"] = [threads.submit(_transform_each, loaded.transform, images[s:e], torch) for s, e in chunks]
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


def _transform_each(transform, images: Sequence, torch):
    """The slow path for a transform that does not split: the whole transform per image on the CPU."""
    import numpy as np

    from cbdsl.scorers.models.tinyclip import decode

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
