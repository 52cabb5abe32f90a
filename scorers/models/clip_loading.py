"""The weights a CLIP scorer uses, loaded: cbdsl-tiny (the demo teacher or a checkpoint) or an open_clip model.

Why it exists: a policy names weights (``model``, ``pretrained``,
``checkpoint``; see :mod:`cbdsl.scorers.clip`), and this finds and loads
them, or says which are missing and how to get them (:class:`ClipError`).
:func:`identity` is the weights' identity for the score cache key;
:func:`embed` is what a CLIP scorer runs: its model over its rows, in the
batch loop of :mod:`~cbdsl.scorers.models.clip_batches`.

A process keeps its last two models loaded (:func:`load`).
"""

from __future__ import annotations

import socket
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from cbdsl.dsl.diagnostics import did_you_mean
from cbdsl.scorers.api import Progress, RunError, ScoreContext
from cbdsl.scorers.models import teacher, tinyclip
from cbdsl.scorers.models.assets import LOCAL_DIR, model_asset
from cbdsl.scorers.models.clip_batches import (CPU_BATCH, CUDA_BATCH, Loaded, decode_processes, encode, is_cuda,
                                               process_pool, tokenizer_spec)
from cbdsl.scorers.models.images import ImagePrep

RANDOM = "random"
"""``pretrained="random"``: untrained weights, for timing only."""


class ClipWeights(Protocol):
    """What loading reads of a CLIP scorer's parameters (:class:`cbdsl.scorers.clip.ClipParams`)."""

    model: str
    pretrained: str
    checkpoint: str


class ClipError(RunError):
    """Weights that cannot be found or loaded; the message says which and what to do (``cbdsl run`` prints both)."""


_LOADED: OrderedDict[tuple, Loaded] = OrderedDict()  # a process keeps its last two models
_IDENTITY: dict[tuple, str] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint asset found in the pool: its file or folder and sha256."""

    path: Path
    sha256: str


def checkpoint(pool, params: ClipWeights, who: str = "the CLIP parameter `checkpoint`") -> Checkpoint | None:
    """The model asset ``params.checkpoint`` names, looked up in ``pool`` (None without one); RunError if absent."""
    if not params.checkpoint:
        return None
    return Checkpoint(*model_asset(pool, params.checkpoint, who))


def load(params: ClipWeights, device: str = "cpu", weights: Checkpoint | None = None) -> Loaded:
    """The model ``params`` name, on ``device`` (cached per process), with ``weights`` when ``params`` names a
    checkpoint (:func:`checkpoint`). Raises ClipError when the weights are missing."""
    if params.checkpoint and weights is None:
        raise ClipError(f"checkpoint `{params.checkpoint}` is a pool asset: look it up first",
                        ("pass clip_loading.checkpoint(pool, params) as `weights`",))
    with _LOCK:
        weights_id = identity(params, weights.sha256 if weights is not None else "")
        key = (weights_id, params.model, device)
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
        loaded = _load(params, device, weights, weights_id)
        _LOADED[key] = loaded
        while len(_LOADED) > 2:
            _LOADED.popitem(last=False)
        return loaded


def _load(params: ClipWeights, device: str, weights: Checkpoint | None, weights_id: str) -> Loaded:
    if is_cuda(device) and decode_processes():
        process_pool(decode_processes())  # the decoders start while the model loads

    if weights is not None and weights.path.is_dir():
        if params.model != tinyclip.NAME:
            raise ClipError(f"checkpoint `{params.checkpoint}` is an open_clip model folder, which names its own "
                            f"architecture, so `model=\"{params.model}\"` has no say",
                            (f'leave `model` out: clip_score(image, text, checkpoint="{params.checkpoint}")',))
        model, transform, tokenizer = _open_clip(params, folder=weights.path)
        size = transform_size(model)
    elif params.model == tinyclip.NAME:
        if weights is not None:
            try:
                model = tinyclip.load(weights.path)
            except Exception as err:  # noqa: BLE001 - a file of another architecture, or not weights at all
                raise ClipError(f"checkpoint `{params.checkpoint}` does not hold cbdsl-tiny weights: {_short(err)}",
                                ("give a checkpoint saved from cbdsl-tiny (tinyclip.save), or name the open_clip "
                                 f'model it was trained as: model="ViT-B-32", checkpoint="{params.checkpoint}"',)
                                ) from err
        else:
            model, _path, _sha = _trained_teacher()
        transform = tinyclip.preprocess()
        tokenizer = tinyclip.tokenizer()
        size: Any = tinyclip.TINY.image_size
    else:
        model, transform, tokenizer = _open_clip(params, weights=weights)
        size = transform_size(model)
    model = model.to(device).eval()
    prep = ImagePrep.from_transform(transform, size) if size is not None else None
    projection = getattr(model, "text_projection", None)
    dim = int(projection.shape[1]) if projection is not None else _probe_dim(model, tokenizer)
    return Loaded(model=model, prep=prep, transform=transform, tokenizer=tokenizer, device=device, dim=dim,
                  identity=weights_id, tokenizer_spec=tokenizer_spec(tokenizer))


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
    """The embedding width of a model without a ``text_projection``: embed one text."""
    with torch.no_grad():
        return int(model.encode_text(tokenizer(["a"]).to(next(model.parameters()).device)).shape[-1])


def _trained_teacher():
    """The demo teacher, trained (once) with a progress bar when it is not cached yet."""
    progress = Progress("training the cbdsl-tiny CLIP teacher (once; cached under "
                         f"{tinyclip.models_dir()})", teacher.TEACHER.steps)
    try:
        return teacher.teacher(progress=progress)
    finally:
        progress.close()


def _open_clip(params: ClipWeights, weights: Checkpoint | None = None, folder: Path | None = None):
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


def identity(params: ClipWeights, checkpoint_id: str) -> str:
    """The weights' identity: ``checkpoint_id`` (the asset's sha256, or its name in the cache key) with a
    checkpoint, the teacher's sha256 (memoized by file size and mtime), else the model name and tag."""
    if params.checkpoint:
        return f"{params.model}:checkpoint:{checkpoint_id}"
    if params.model == tinyclip.NAME:
        path = teacher.teacher_path()
        if not path.is_file():
            _trained_teacher()
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _IDENTITY:
            _IDENTITY[key] = tinyclip.file_sha256(path)
        return f"{tinyclip.NAME}:teacher:{_IDENTITY[key]}"
    return f"{params.model}:{params.pretrained}"


def _short(err: BaseException) -> str:
    """An exception's first line, at most 300 characters: enough to say what failed inside a ClipError."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def embed(ctx: ScoreContext, images: list | None, texts: list | None):
    """What a CLIP scorer computes: its model (``ctx.params``) over its rows, in batches; returns (values, ok).

    With both ``images`` and ``texts``, values are the cosines, float32 [n];
    with one, its embeddings, float32 [n, dim]. ``ok`` marks the rows whose
    inputs were all usable. The batch size is the parameter's, or 256 on CPU
    and 1024 on CUDA.
    """
    loaded = load(ctx.params, ctx.device, checkpoint(ctx.pool, ctx.params))
    batch = ctx.params.batch_size or (CUDA_BATCH if is_cuda(ctx.device) else CPU_BATCH)
    return encode(loaded, images, texts, batch_size=batch, progress=ctx.progress)
