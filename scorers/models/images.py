"""Image bytes to model inputs: decode, and an open_clip eval transform split for fast batches.

Why it exists: every CLIP here (the scorers' open_clip models, cbdsl-tiny,
the mini backend's model, the dynamics proxy) reads images as file bytes and
needs them as normalized tensors. :class:`ImagePrep` does the per-image PIL
work (resize, crop, RGB) into uint8 arrays, on threads or worker processes,
and the float work (ToTensor, Normalize) on whole batches, wherever the
batch is. The scorers' batch loop (:mod:`~cbdsl.scorers.models.clip_batches`)
and :func:`cbdsl.scorers.models.tinyclip.load_images` build on it.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def decode(data: bytes):
    """Image file bytes (PNG, JPEG, ...) -> a PIL image (loaded, so the bytes can go)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


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
