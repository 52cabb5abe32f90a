"""cbdsl-tiny: a small CLIP in open_clip's architecture, and the demo pool's CLIP teacher.

Why it exists: a ``clip_score`` needs a CLIP model, and without internet no
published weights can be downloaded. cbdsl therefore builds its own: an
``open_clip.CLIP`` (a ViT image tower for 32x32 images, a causal text
transformer, open_clip's BPE tokenizer, which ships its vocabulary inside the
package) that trains in a couple of minutes on a laptop CPU. Three users
share it:

- the CLIP teacher (:func:`teacher`): trained once on clean image-caption
  pairs the pool never sees, cached, and used by ``clip_score(image, text)``
  on the demo pool (``model="cbdsl-tiny"``);
- the ``mini`` train/eval backend, which trains :data:`MINI` (the same text
  tower with a ResNet image tower, which learns the demo's shapes and
  positions) from scratch on a selection (:func:`build` + :func:`train`);
- training-dynamics scorers (EL2N, GraNd, per-sample loss), which train it as
  a proxy and record per-sample losses through :func:`train`'s ``callback``.

The API::

    model = build(config=TINY, seed=0)                 # an open_clip.CLIP
    x = load_images(pngs)                              # bytes -> float [n, 3, 32, 32]
    t = tokenize(captions)                             # str -> int64 [n, context_length]
    train(model, pngs_or_x, captions_or_t, steps=300, callback=record)   # record(TrainStep)
    img = encode_images(model, pngs_or_x)              # L2-normalized float32 [n, embed_dim]
    txt = encode_texts(model, captions_or_t)
    model, path, sha256 = teacher()                    # trained on demand, cached
    save(model, path) -> sha256; load(path)            # safetensors checkpoints
    preprocess(config); image_transform(config)        # open_clip's eval transform; bytes -> tensor
    ImagePrep.from_transform(t, size)                  # any open_clip transform, split for batching
    zero_shot_accuracy(model)                          # what a model knows of the demo's attributes
    register(config, name)                             # make open_clip.create_model(name) build it

Everything is deterministic on CPU for a given seed and thread count
(``train(threads=...)``; the teacher's recipe fixes one thread): weights
are initialised from ``torch.manual_seed(seed)`` (the caller's RNG state is
restored), the data order comes from its own seeded generator, and training
runs with ``torch.use_deterministic_algorithms``. Weights are saved as
safetensors, whose bytes depend only on the tensors, so a checkpoint's
sha256 identifies the weights (it is part of the score cache key).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

NAME = "cbdsl-tiny"
"""The model name policies use: ``clip_score(image, text, model="cbdsl-tiny")``."""

#: open_clip's (OpenAI CLIP's) image normalisation, so the tiny model's inputs look like any CLIP's.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TinyConfig:
    """The architecture: an ``open_clip.CLIP`` with a small image tower and a small text transformer.

    The image tower is open_clip's ViT when ``vision_layers`` is an int, its
    ModifiedResNet (block counts per stage; ``patch_size`` unused) when it
    is a tuple, as in open_clip's own JSON configs.

    The default (:data:`TINY`): a ViT with 4x4 patches (64 tokens), 2 layers
    of width 64; a text transformer of 2 layers, width 64, 24 tokens; 64-d
    embeddings. 3.4M parameters, 3.2M of them the token embedding of
    open_clip's 49,408-entry BPE vocabulary. It was picked by a sweep of ViT
    sizes for the best zero-shot accuracy per CPU-second (patch 8 learns
    shapes and positions worse; wider or deeper towers cost more than they
    give in a two-minute budget). Captions longer than ``context_length``
    tokens (start and end included) are cut, as open_clip does; the demo
    pool's captions are at most 22 tokens.
    """

    embed_dim: int = 64
    image_size: int = 32
    patch_size: int = 4
    vision_width: int = 64
    vision_layers: int | tuple[int, int, int, int] = 2  # a tuple of block counts: open_clip's ModifiedResNet
    vision_head_width: int = 32
    context_length: int = 24
    text_width: int = 64
    text_heads: int = 2
    text_layers: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.vision_layers, list):  # a list means a ResNet as a tuple does (and stays hashable)
            object.__setattr__(self, "vision_layers", tuple(self.vision_layers))

    def open_clip_config(self) -> dict[str, Any]:
        """The model config in open_clip's JSON form (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
        resnet = isinstance(self.vision_layers, tuple)  # open_clip builds a ModifiedResNet for a list of layers
        vision: dict[str, Any] = {"image_size": self.image_size, "width": self.vision_width,
                                  "layers": list(self.vision_layers) if resnet else self.vision_layers,
                                  "head_width": self.vision_head_width}
        if not resnet:
            vision["patch_size"] = self.patch_size
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": vision,
            "text_cfg": {"context_length": self.context_length, "vocab_size": 49408, "width": self.text_width,
                         "heads": self.text_heads, "layers": self.text_layers},
        }

    def digest(self) -> str:
        return _digest(self.open_clip_config())


TINY = TinyConfig()

MINI = TinyConfig(vision_layers=(1, 1, 1, 1), vision_width=16, vision_head_width=16)
"""The ``mini`` backend's model: :data:`TINY` with open_clip's ModifiedResNet (CLIP's RN50 design: an
attention-pooled ResNet, here one block per stage, 16 channels wide) instead of the ViT.

Why not the ViT: at 4x4 patches it learns colour, size and texture from scratch in the mini recipe's
64,000 samples but leaves shape and position at chance whatever the data, so two of the suite's seven
scores carried no signal and the arms spanned 0.075. The convolutional tower costs no more on CPU (a
mini submission: 61-86 s on 2 cores, against about 100 s with the ViT) and learns position, shape and
retrieval from good data: random 0.38, the CLIP-filtered examples 0.51-0.54
(tests/benchmarks/bench_validity.py, which reports both numbers).
The teacher stays on :data:`TINY` (the demo's CLIP scores do not change).
"""


def build(config: TinyConfig = TINY, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised ``open_clip.CLIP`` of ``config``; the same seed gives the same weights."""
    import open_clip

    cfg = config.open_clip_config()
    with _seeded(seed):
        model = open_clip.CLIP(cfg["embed_dim"], open_clip.CLIPVisionCfg(**cfg["vision_cfg"]),
                               open_clip.CLIPTextCfg(**cfg["text_cfg"]))
    return model.eval()


def register(config: TinyConfig = TINY, name: str = NAME, directory: str | os.PathLike | None = None) -> str:
    """Make ``open_clip.create_model(name, pretrained=checkpoint)`` build this architecture.

    open_clip reads model configs from JSON files; this writes ``<name>.json``
    into ``directory`` (default :func:`models_dir`) and adds it with
    ``open_clip.add_model_config``. cbdsl's own scorers do not need it (they
    call :func:`build`); it is for code that only speaks open_clip.
    """
    import open_clip

    folder = Path(directory) if directory is not None else models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    text = json.dumps(config.open_clip_config(), indent=2, sort_keys=True) + "\n"
    if not path.is_file() or path.read_text() != text:
        _atomic_write(path, text.encode())
    open_clip.add_model_config(path)
    return name


# ---------------------------------------------------------------- inputs


def preprocess(config: TinyConfig = TINY):
    """open_clip's eval transform for this config (PIL image -> normalized float tensor [3, S, S]).

    The same kind of object ``open_clip.create_model_and_transforms`` returns,
    so a scorer treats cbdsl-tiny like any open_clip model: shortest side
    resized to ``image_size`` (bicubic), centre crop, RGB, ToTensor, Normalize.
    """
    import open_clip

    return open_clip.image_transform(config.image_size, is_train=False, mean=MEAN, std=STD)


def decode(data: bytes):
    """Image file bytes (PNG, JPEG, ...) -> a PIL image (loaded, so the bytes can go)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def image_transform(config: TinyConfig = TINY) -> Callable[[Any], torch.Tensor]:
    """Image bytes or a PIL image -> normalized float tensor [3, S, S] (decode, then :func:`preprocess`)."""
    transform = preprocess(config)

    def apply(image) -> torch.Tensor:
        return transform(decode(image) if isinstance(image, (bytes, bytearray, memoryview)) else image)

    return apply


@dataclass(frozen=True)
class ImagePrep:
    """An open_clip eval transform split in two, so that batches are cheap to make and move.

    ``steps`` are the transform's PIL steps (resize, crop, RGB), run per image
    by :meth:`to_uint8` on CPU threads or worker processes into a uint8
    [H, W, 3] array; :meth:`normalize` is its ``ToTensor`` + ``Normalize`` on
    a whole uint8 batch, wherever the batch is (on the GPU it moves a quarter
    of the bytes float32 would). The result equals the transform's own output
    up to float rounding. It pickles, so worker processes can use it.
    """

    steps: tuple[Any, ...]
    size: tuple[int, int]  # (H, W) of the output
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_transform(cls, transform, size: int | tuple[int, int]) -> ImagePrep | None:
        """Split a torchvision ``Compose`` ending in ToTensor, Normalize; None if it has another shape."""
        from torchvision import transforms as T

        steps = list(getattr(transform, "transforms", ()))
        if len(steps) < 2 or not isinstance(steps[-2], T.ToTensor) or not isinstance(steps[-1], T.Normalize):
            return None
        norm = steps[-1]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(steps=tuple(steps[:-2]), size=size, mean=tuple(float(m) for m in norm.mean),
                   std=tuple(float(s) for s in norm.std))

    def pil(self, image):
        """The PIL steps on one image, ending in RGB."""
        for step in self.steps:
            image = step(image)
        return image if image.mode == "RGB" else image.convert("RGB")

    def to_uint8(self, data: bytes) -> np.ndarray:
        """Image bytes -> uint8 [H, W, 3] after the PIL steps (raises on an undecodable file)."""
        array = np.asarray(self.pil(decode(data)))
        if array.shape != (*self.size, 3):
            raise ValueError(f"preprocessed image has shape {array.shape}, expected {(*self.size, 3)}")
        return array

    def batch(self, images: Sequence[bytes | None], out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [n, H, W, 3] and a bool mask of the images that decoded (a null or broken file stays zeros)."""
        out = np.zeros((len(images), *self.size, 3), dtype=np.uint8) if out is None else out
        ok = np.zeros(len(images), dtype=bool)
        for i, data in enumerate(images):
            if data is None:
                continue
            try:
                out[i] = self.to_uint8(data)
            except Exception:  # noqa: BLE001 - any undecodable image scores null, it does not stop the run
                continue
            ok[i] = True
        return out, ok

    def normalize(self, batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 [n, H, W, 3] -> normalized ``dtype`` [n, 3, H, W] (ToTensor then Normalize), on ``batch``'s device."""
        mean, std = _mean_std(self.mean, self.std, batch.device)
        x = batch.permute(0, 3, 1, 2).float().div_(255)
        return x.sub_(mean).div_(std).to(dtype).contiguous()


@functools.lru_cache(maxsize=16)
def _mean_std(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalization constants on a device, made once (no host-to-device copy per batch)."""
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1))


def image_prep(config: TinyConfig = TINY) -> ImagePrep:
    prep = ImagePrep.from_transform(preprocess(config), config.image_size)
    assert prep is not None  # open_clip's eval transform always splits
    return prep


def load_images(images: Sequence[bytes], config: TinyConfig = TINY, *, workers: int | None = None) -> torch.Tensor:
    """Decode and preprocess image bytes on a thread pool: float32 [n, 3, S, S] in input order.

    Raises ValueError naming the first image that does not decode (training data must be clean).
    """
    prep = image_prep(config)
    n = len(images)
    out = np.zeros((n, *prep.size, 3), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = max(256, math.ceil(n / (4 * workers)))

    def run(start: int) -> None:
        stop = min(start + chunk, n)
        ok[start:stop] = prep.batch(images[start:stop], out[start:stop])[1]

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, range(0, n, chunk)))
    if not ok.all():
        raise ValueError(f"image {int(np.flatnonzero(~ok)[0])} does not decode")
    return prep.normalize(torch.from_numpy(out))


@functools.cache
def _tokenizer(context_length: int):
    import open_clip

    return open_clip.SimpleTokenizer(context_length=context_length)


def tokenizer(config: TinyConfig = TINY):
    """open_clip's BPE ``SimpleTokenizer`` at this config's context length (its vocabulary ships with open_clip)."""
    return _tokenizer(config.context_length)


def tokenize(texts: Sequence[str], config: TinyConfig = TINY) -> torch.Tensor:
    """Captions -> int64 token ids [n, context_length] with open_clip's BPE tokenizer (no download)."""
    return _tokenizer(config.context_length)(list(texts))


def _as_images(model, images, config: TinyConfig | None) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images
    return load_images(images, config or _config_of(model))


def _as_tokens(model, texts, config: TinyConfig | None) -> torch.Tensor:
    if isinstance(texts, torch.Tensor):
        return texts
    return tokenize(texts, config or _config_of(model))


def _config_of(model) -> TinyConfig:
    """The TinyConfig a built model was made from (its image size and context length are what inputs need)."""
    size = model.visual.image_size
    return dataclasses.replace(TINY, image_size=size[0] if isinstance(size, tuple) else size,
                               context_length=model.context_length)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainStep:
    """What :func:`train` tells its ``callback`` after each optimizer step.

    ``indices`` are the rows (positions in the training lists) of this step's
    batch and ``losses`` their per-sample contrastive losses (float32, CPU,
    computed before the step): the mean of the image->text and text->image
    cross-entropies of each row against its batch, so ``losses.mean()`` is
    CLIP's InfoNCE loss. ``epoch_end`` is true on the last step of a pass over
    the data, which is where EL2N/GraNd-style scorers take their measurement
    (with ``model``, in train mode; call ``model.eval()`` and restore it).
    """

    step: int  # 0-based
    epoch: int  # 0-based
    epoch_end: bool
    indices: torch.Tensor
    losses: torch.Tensor
    loss: float
    lr: float
    model: torch.nn.Module
    #: bool [batch]: the pair retrieves itself both ways in its batch (the forgetting scorer's "learned").
    correct: torch.Tensor | None = None


def per_sample_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE per row of a batch: (CE(image->texts) + CE(text->images)) / 2; its mean is CLIP's loss."""
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels, reduction="none") + F.cross_entropy(logits.T, labels, reduction="none")) / 2


def in_batch_hits(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """bool [n]: row i's caption is its image's best in-batch match and its image the caption's best."""
    sim = image_features @ text_features.T
    rows = torch.arange(len(sim), device=sim.device)
    return (sim.argmax(1) == rows) & (sim.argmax(0) == rows)


def train(
    model: torch.nn.Module,
    images: Sequence[bytes] | torch.Tensor,
    texts: Sequence[str] | torch.Tensor,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 0.1,
    warmup: int = 20,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    callback: Callable[[TrainStep], None] | None = None,
) -> torch.nn.Module:
    """Train ``model`` contrastively (CLIP's InfoNCE) on aligned ``(images, texts)``; returns it in eval mode.

    Inputs are image bytes and caption strings, or what :func:`load_images`
    and :func:`tokenize` made of them (pass tensors to reuse them). The recipe
    is open_clip's: AdamW (betas 0.9/0.98, eps 1e-6; no decay on gains,
    biases and the logit scale), linear warmup then cosine decay to zero, the
    logit scale clamped at 100. Batches are consecutive slices of a seeded
    permutation per epoch (``drop_last``; a dataset smaller than one batch is
    one batch), drawn on the main thread. On CUDA the forward runs under bf16
    autocast. ``threads`` fixes torch's CPU thread count for the run (the
    result depends on it; one thread is also fastest on a busy machine).
    ``progress(1)`` is called per step; ``callback`` gets a :class:`TrainStep`
    per step.
    """
    x = _as_images(model, images, None)
    t = _as_tokens(model, texts, None)
    n = len(x)
    if n != len(t):
        raise ValueError(f"{n} images but {len(t)} texts")
    if n < 2:
        raise ValueError("contrastive training needs at least 2 pairs")
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    decay = [p for name, p in model.named_parameters() if _decays(name, p)]
    no_decay = [p for name, p in model.named_parameters() if not _decays(name, p)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    cuda = torch.device(device).type == "cuda"
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    order = torch.empty(0, dtype=torch.long)
    with deterministic_algorithms(), torch_threads(threads):
        for step in range(steps):
            epoch, slot = divmod(step, per_epoch)
            if slot == 0:
                order = torch.randperm(n, generator=gen)
            idx = order[slot * batch_size : (slot + 1) * batch_size]
            rate = _lr_at(step, steps, lr, warmup)
            for group in opt.param_groups:
                group["lr"] = rate
            xb = x[idx].to(device, non_blocking=True)
            tb = t[idx].to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                img, txt, scale = model(xb, tb)
            losses = per_sample_loss(img.float(), txt.float(), scale.float())
            loss = losses.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            if progress is not None:
                progress(1)
            if callback is not None:
                callback(TrainStep(step=step, epoch=epoch, epoch_end=slot == per_epoch - 1 or step == steps - 1,
                                   indices=idx, losses=losses.detach().float().cpu(), loss=float(loss.detach()), lr=rate,
                                   model=model, correct=in_batch_hits(img.detach(), txt.detach()).cpu()))
    return model.eval()


def _decays(name: str, p: torch.Tensor) -> bool:
    """open_clip's rule: no weight decay on gains, biases, norms and the logit scale."""
    return not (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name)


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span)) * lr


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torch.manual_seed(seed) inside, the global RNG state restored after (callers' randomness is theirs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


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


# ---------------------------------------------------------------- encoding


def encode_images(model, images: Sequence[bytes] | torch.Tensor, *, batch_size: int = 512, device: str = "cpu",
                  normalize: bool = True) -> torch.Tensor:
    """Image embeddings, float32 on CPU [n, embed_dim], L2-normalized unless ``normalize=False``.

    Batched, under ``torch.no_grad``, bf16 autocast on CUDA.
    """
    x = _as_images(model, images, None)
    return _encode(model.encode_image, model, x, batch_size, device, normalize)


def encode_texts(model, texts: Sequence[str] | torch.Tensor, *, batch_size: int = 512, device: str = "cpu",
                 normalize: bool = True) -> torch.Tensor:
    """Text embeddings, float32 on CPU [n, embed_dim], L2-normalized unless ``normalize=False``."""
    t = _as_tokens(model, texts, None)
    return _encode(model.encode_text, model, t, batch_size, device, normalize)


def _encode(fn, model, inputs: torch.Tensor, batch_size: int, device: str, normalize: bool) -> torch.Tensor:
    cuda = torch.device(device).type == "cuda"
    was_training = model.training
    model.to(device).eval()
    out = []
    try:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            for start in range(0, len(inputs), batch_size):
                feats = fn(inputs[start : start + batch_size].to(device, non_blocking=True)).float()
                out.append((F.normalize(feats, dim=-1) if normalize else feats).cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.empty(0, model.text_projection.shape[1] if hasattr(model, "text_projection") else 0)
    return torch.cat(out)


# ---------------------------------------------------------------- checkpoints


def save(model: torch.nn.Module, path: str | os.PathLike) -> str:
    """Write the state dict as safetensors (atomically); returns the file's sha256."""
    from safetensors.torch import save as to_bytes

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = to_bytes(state)
    _atomic_write(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def load(path: str | os.PathLike, config: TinyConfig = TINY) -> torch.nn.Module:
    """A model of ``config`` with the weights of a checkpoint (safetensors, or a torch state dict), in eval mode."""
    import open_clip

    model = build(config)
    open_clip.load_checkpoint(model, str(path))
    return model.eval()


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a checkpoint file (the identity of its weights)."""
    from cbdsl.pipelines.data.hashing import sha256_file

    return sha256_file(path)


# ---------------------------------------------------------------- the teacher


@dataclass(frozen=True)
class Recipe:
    """How the teacher is trained: fixed, so the teacher is a pure function of (config, data, recipe).

    500 steps of 128 pairs (3.2 epochs of 20,000) on one thread: about 0.23 s
    of CPU a step on a 2-core Xeon, so about two minutes with the data made
    and decoded (10 s); ``steps`` is the knob if that is too long.
    """

    rows: int = 20_000  # generate_clean(rows, seed=data_seed, stream="teacher")
    data_seed: int = 0
    steps: int = 500
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 25
    seed: int = 0  # weight init and data order
    threads: int = 1  # part of the result; one thread is deterministic on any machine and fastest when it is busy


TEACHER = Recipe()
_FORMAT = 1  # bump when the training code changes what a recipe produces


def models_dir() -> Path:
    """Where cbdsl keeps models it trains: ``$CBDSL_HOME/models``, default ``~/.cbdsl/models``."""
    from cbdsl.home import home

    return home() / "models"


def teacher_key(config: TinyConfig | None = None, recipe: Recipe | None = None) -> str:
    """The cache key of a teacher: a hash of the architecture, the data generator and the recipe."""
    from cbdsl.pipelines.data import demo

    config, recipe = config or TINY, recipe or TEACHER
    # The generator's name before it moved to pipelines/data/: part of the teacher's identity (its weights' key).
    data = {"generator": "cbdsl.pipelines.demo.generate_clean", "stream": "teacher",
            "demo_version": getattr(demo, "DEMO_VERSION", None)}
    return _digest({"config": config.open_clip_config(), "data": data, "recipe": dataclasses.asdict(recipe),
                    "format": _FORMAT})[:16]


def teacher_path(workdir: str | os.PathLike | None = None, config: TinyConfig | None = None,
                 recipe: Recipe | None = None) -> Path:
    """Where the teacher of (config, recipe) is cached (it may not exist yet); defaults :data:`TINY`, :data:`TEACHER`."""
    folder = Path(workdir) if workdir is not None else models_dir()
    return folder / f"{NAME}-teacher-{teacher_key(config, recipe)}.safetensors"


def teacher(
    workdir: str | os.PathLike | None = None,
    *,
    config: TinyConfig | None = None,
    recipe: Recipe | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.nn.Module, Path, str]:
    """The demo pool's CLIP teacher: ``(model, checkpoint_path, sha256)``, trained on first use and cached.

    It is cbdsl-tiny trained on ``generate_clean(recipe.rows, recipe.data_seed,
    stream="teacher")``: clean, accurate captions from a generator the pool
    never shares, so the teacher has not seen the pool's rows or defects. The
    checkpoint is ``<workdir>/cbdsl-tiny-teacher-<key>.safetensors`` (default
    folder :func:`models_dir`), keyed by :func:`teacher_key`; a present file is
    reused. Training is on CPU by default, where it is deterministic: every
    fresh training gives the same sha256 with the same torch build and CPU
    type (the recipe fixes the thread count). A sidecar ``.json`` records the
    recipe, the time it took and the zero-shot accuracy on held-out clean
    images (:func:`zero_shot_accuracy`).
    """
    config, recipe = config or TINY, recipe or TEACHER
    path = teacher_path(workdir, config, recipe)
    if not path.is_file():
        from cbdsl.pipelines.data.demo import generate_clean

        start = time.perf_counter()
        data = generate_clean(recipe.rows, recipe.data_seed, stream="teacher")
        model = build(config, recipe.seed)
        x = load_images(data.get_column("image").to_list(), config)
        t = tokenize(data.get_column("text").to_list(), config)
        prepared = time.perf_counter() - start
        train(model, x, t, steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr,
              weight_decay=recipe.weight_decay, warmup=recipe.warmup, seed=recipe.seed, device=device,
              threads=recipe.threads if device == "cpu" else None, progress=progress)
        model.to("cpu")
        seconds = time.perf_counter() - start
        path.parent.mkdir(parents=True, exist_ok=True)
        sha = save(model, path)
        accuracy = zero_shot_accuracy(model, config=config, rows=min(1000, recipe.rows))
        meta = {"name": NAME, "key": teacher_key(config, recipe), "sha256": sha, "config": config.open_clip_config(),
                "recipe": dataclasses.asdict(recipe), "device": device, "torch": torch.__version__,
                "threads": recipe.threads, "seconds": round(seconds, 1), "data_seconds": round(prepared, 1),
                "zero_shot_accuracy": accuracy}
        _atomic_write(path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
        return model, path, sha
    return load(path, config), path, file_sha256(path)


#: Single-word prompts of :func:`zero_shot_accuracy`: one per attribute value, naming only that attribute.
PROMPTS: dict[str, str] = {
    "shape": "a {}", "color": "a {} shape", "size": "a {} shape", "texture": "a {} shape", "position": "a shape in the {}",
}
_POSITION_WORDS = {"center": "center", "top left": "top left corner", "top right": "top right corner",
                   "bottom left": "bottom left corner", "bottom right": "bottom right corner"}


def zero_shot_accuracy(model, *, rows: int = 1000, seed: int = 1, config: TinyConfig | None = None,
                       device: str = "cpu", ensemble: int = 32) -> dict[str, Any]:
    """How well a model knows the demo's attributes, on held-out clean images; chance included.

    The images are ``generate_clean(rows, seed, stream="teacher")`` with a
    seed other than the teacher's (1 by default; the teacher trains on seed
    0), so none was trained on. Three measures:

    - ``words``: zero-shot accuracy per attribute with single-word prompts
      (:data:`PROMPTS` filled with each value: "a red shape", "a circle"); a
      row is right when its true value's prompt is the nearest text.
    - ``captions``: the same with prompt ensembles, CLIP's own practice: each
      value's text embedding is the mean over ``ensemble`` captions in the
      training style that name that value with the other attributes drawn at
      random ("a small red striped circle in the center", ...).
    - ``mismatch_auc``: the probability that an image's true caption scores
      higher than a caption whose every attribute is wrong (the demo pool's
      "mismatched" defect); 0.5 is chance.

    Chance for accuracy is 1 / number of values (shape 1/6, color 1/8, size
    1/2, position 1/5, texture 1/3); each dict has ``mean`` and ``chance``.
    """
    from cbdsl.pipelines.data import synth
    from cbdsl.pipelines.data.demo import generate_clean

    config = config or _config_of(model)
    data = generate_clean(rows, seed, stream="teacher")
    img = encode_images(model, load_images(data.get_column("image").to_list(), config), device=device)
    rng = np.random.default_rng([seed, 7])
    word_prompts: list[str] = []
    caption_prompts: list[str] = []
    for attr, template in PROMPTS.items():  # every prompt first, so the model runs on two big batches
        for code, value in enumerate(synth.ATTRIBUTES[attr]):
            word_prompts.append(template.format(_POSITION_WORDS[value] if attr == "position" else value))
            attrs = synth.sample_attributes(ensemble, rng)
            attrs[attr][:] = code
            caption_prompts.extend(synth.caption(attrs, "coco", rng))
    word_emb = encode_texts(model, tokenize(word_prompts, config), device=device)
    caption_emb = encode_texts(model, tokenize(caption_prompts, config), device=device)
    words: dict[str, float] = {}
    captions: dict[str, float] = {}
    chance = []
    start = 0
    for attr in PROMPTS:
        values = synth.ATTRIBUTES[attr]
        truth = np.asarray([values.index(v) for v in data.get_column(attr).to_list()])
        stop = start + len(values)
        words[attr] = round(float(((img @ word_emb[start:stop].T).argmax(1).numpy() == truth).mean()), 4)
        means = F.normalize(caption_emb[start * ensemble : stop * ensemble].view(len(values), ensemble, -1).mean(1), dim=1)
        captions[attr] = round(float(((img @ means.T).argmax(1).numpy() == truth).mean()), 4)
        chance.append(1 / len(values))
        start = stop
    for table in (words, captions):
        table["mean"] = round(float(np.mean([table[a] for a in PROMPTS])), 4)
        table["chance"] = round(float(np.mean(chance)), 4)
    codes = {a: np.asarray([synth.ATTRIBUTES[a].index(v) for v in data.get_column(a).to_list()]) for a in PROMPTS}
    wrong = {a: (c + rng.integers(1, len(synth.ATTRIBUTES[a]), len(c))) % len(synth.ATTRIBUTES[a]) for a, c in codes.items()}
    true_txt = encode_texts(model, tokenize(data.get_column("text").to_list(), config), device=device)
    wrong_txt = encode_texts(model, tokenize(synth.caption(wrong, "coco", rng), config), device=device)
    matched = (img * true_txt).sum(1).numpy()
    mismatched = (img * wrong_txt).sum(1).numpy()
    auc = float((matched[:, None] > mismatched[None, :]).mean() + 0.5 * (matched[:, None] == mismatched[None, :]).mean())
    return {"words": words, "captions": captions, "mismatch_auc": round(auc, 4)}


# ---------------------------------------------------------------- helpers


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
