"""cbdsl-tiny: a small CLIP in open_clip's architecture, its inputs, embeddings and checkpoints.

Why it exists: a ``clip_score`` needs a CLIP model, and without internet no
published weights can be downloaded. cbdsl therefore builds its own: an
``open_clip.CLIP`` (a ViT image tower for 32x32 images, a causal text
transformer, open_clip's BPE tokenizer, which ships its vocabulary inside the
package) that trains in a couple of minutes on a laptop CPU. Three users
share it:

- the CLIP teacher (:mod:`~cbdsl.scorers.models.teacher`): trained once on
  clean image-caption pairs the pool never sees, cached, and used by
  ``clip_score(image, text)`` on the demo pool (``model="cbdsl-tiny"``);
- the ``mini`` train/eval backend, which trains :data:`MINI` (the same text
  tower with a ResNet image tower, which learns the demo's shapes and
  positions) from scratch on a selection and evaluates it
  (:mod:`~cbdsl.scorers.models.clip_eval`);
- training-dynamics scorers (EL2N, GraNd, per-sample loss), which train it as
  a proxy and record per-sample losses through the training loop's
  ``callback`` (:mod:`~cbdsl.scorers.models.clip_training`).

The API (with the training, teacher and evaluation modules)::

    model = build(config=TINY, seed=0)                 # an open_clip.CLIP
    x = load_images(pngs)                              # bytes -> float [n, 3, 32, 32]
    t = tokenize(captions)                             # str -> int64 [n, context_length]
    clip_training.train(model, pngs_or_x, captions_or_t, Recipe(steps=300, batch_size=128), callback=record)
    img = encode_images(model, pngs_or_x)              # L2-normalized float32 [n, embed_dim]
    txt = encode_texts(model, captions_or_t)
    model, path, sha256 = teacher.teacher()            # trained on demand, cached
    save(model, path) -> sha256; load(path)            # safetensors checkpoints
    preprocess(config); image_transform(config)        # open_clip's eval transform; bytes -> tensor
    clip_eval.zero_shot_accuracy(model)                # what a model knows of the demo's attributes
    register(config, name)                             # make open_clip.create_model(name) build it

Everything is deterministic on CPU for a given seed and thread count:
weights are initialised from ``torch.manual_seed(seed)`` (the caller's RNG
state is restored), and training fixes its data order and kernels (see
:func:`~cbdsl.scorers.models.clip_training.train`). Weights are saved as
safetensors, whose bytes depend only on the tensors, so a checkpoint's
sha256 identifies the weights (it is part of the score cache key).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cbdsl.home import home
from cbdsl.pipelines.data.hashing import sha256_file
from cbdsl.scorers.models.images import ImagePrep, decode

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
        return json_sha256(self.open_clip_config())


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
        atomic_write(path, text.encode())
    open_clip.add_model_config(path)
    return name


def models_dir() -> Path:
    """Where cbdsl keeps models it trains: ``$CBDSL_HOME/models``, default ``~/.cbdsl/models``."""
    return home() / "models"


# ---------------------------------------------------------------- inputs


def preprocess(config: TinyConfig = TINY):
    """open_clip's eval transform for this config (PIL image -> normalized float tensor [3, S, S]).

    The same kind of object ``open_clip.create_model_and_transforms`` returns,
    so a scorer treats cbdsl-tiny like any open_clip model: shortest side
    resized to ``image_size`` (bicubic), centre crop, RGB, ToTensor, Normalize.
    """
    import open_clip

    return open_clip.image_transform(config.image_size, is_train=False, mean=MEAN, std=STD)


def image_transform(config: TinyConfig = TINY) -> Callable[[Any], torch.Tensor]:
    """Image bytes or a PIL image -> normalized float tensor [3, S, S] (decode, then :func:`preprocess`)."""
    transform = preprocess(config)

    def apply(image) -> torch.Tensor:
        return transform(decode(image) if isinstance(image, (bytes, bytearray, memoryview)) else image)

    return apply


def image_prep(config: TinyConfig = TINY) -> ImagePrep:
    """:func:`preprocess` split for batches (:class:`~cbdsl.scorers.models.images.ImagePrep`)."""
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


def image_inputs(model, images: Sequence[bytes] | torch.Tensor) -> torch.Tensor:
    """``images`` as ``model`` takes them: a tensor as it is, image bytes through :func:`load_images`."""
    if isinstance(images, torch.Tensor):
        return images
    return load_images(images, config_of(model))


def text_inputs(model, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
    """``texts`` as ``model`` takes them: a tensor as it is, captions through :func:`tokenize`."""
    if isinstance(texts, torch.Tensor):
        return texts
    return tokenize(texts, config_of(model))


def config_of(model) -> TinyConfig:
    """The TinyConfig a built model was made from (its image size and context length are what inputs need)."""
    size = model.visual.image_size
    return dataclasses.replace(TINY, image_size=size[0] if isinstance(size, tuple) else size,
                               context_length=model.context_length)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torch.manual_seed(seed) inside, the global RNG state restored after (callers' randomness is theirs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ---------------------------------------------------------------- encoding


def encode_images(model, images: Sequence[bytes] | torch.Tensor, *, batch_size: int = 512, device: str = "cpu",
                  normalize: bool = True) -> torch.Tensor:
    """Image embeddings, float32 on CPU [n, embed_dim], L2-normalized unless ``normalize=False``.

    Batched, under ``torch.no_grad``, bf16 autocast on CUDA.
    """
    x = image_inputs(model, images)
    return _encode(model.encode_image, model, x, batch_size, device, normalize)


def encode_texts(model, texts: Sequence[str] | torch.Tensor, *, batch_size: int = 512, device: str = "cpu",
                 normalize: bool = True) -> torch.Tensor:
    """Text embeddings, float32 on CPU [n, embed_dim], L2-normalized unless ``normalize=False``."""
    t = text_inputs(model, texts)
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
    atomic_write(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def load(path: str | os.PathLike, config: TinyConfig = TINY) -> torch.nn.Module:
    """A model of ``config`` with the weights of a checkpoint (safetensors, or a torch state dict), in eval mode."""
    import open_clip

    model = build(config)
    open_clip.load_checkpoint(model, str(path))
    return model.eval()


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a checkpoint file (the identity of its weights)."""
    return sha256_file(path)


# ---------------------------------------------------------------- helpers


def json_sha256(obj: Any) -> str:
    """sha256 of an object's JSON with sorted keys: a config's or a recipe's identity."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

