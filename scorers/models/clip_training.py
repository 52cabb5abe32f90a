"""Contrastive training of a CLIP (CLIP's InfoNCE) with a :class:`~cbdsl.scorers.models.recipe.Recipe`, reproducibly.

Why it exists: the mini backend, the demo's CLIP teacher and the dynamics
proxy all train an ``open_clip.CLIP`` from scratch, and their results are
recorded (the mini metrics, the teacher's sha256), so the loop must give
the same weights for the same model, data and recipe: the data order comes
from its own seeded generator, kernels are deterministic
(:func:`~cbdsl.scorers.models.training.deterministic_algorithms`) and the CPU thread count is the
recipe's (:func:`~cbdsl.scorers.models.training.torch_threads`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cbdsl.scorers.models.recipe import Recipe
from cbdsl.scorers.models.tinyclip import image_inputs, text_inputs
from cbdsl.scorers.models.training import deterministic_algorithms, lr_at, side_by_side, torch_threads  # noqa: F401 (theirs too)


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
    recipe: Recipe,
    *,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    callback: Callable[[TrainStep], None] | None = None,
) -> torch.nn.Module:
    """Train ``model`` contrastively (CLIP's InfoNCE) on aligned ``(images, texts)``; returns it in eval mode.

    Inputs are image bytes and caption strings, or what
    :func:`~cbdsl.scorers.models.tinyclip.load_images` and
    :func:`~cbdsl.scorers.models.tinyclip.tokenize` made of them (pass
    tensors to reuse them). The ``recipe``'s schedule is open_clip's: AdamW
    (betas 0.9/0.98, eps 1e-6; no decay on gains, biases and the logit
    scale), linear warmup then cosine decay to zero, the logit scale clamped
    at 100. Batches are consecutive slices of a seeded permutation per epoch
    (``drop_last``; a dataset smaller than one batch is one batch), drawn on
    the main thread. On CUDA the forward runs under bf16 autocast. On CPU
    ``recipe.threads`` fixes torch's thread count for the run (the result
    depends on it; one thread is also fastest on a busy machine).
    ``progress(1)`` is called per step; ``callback`` gets a :class:`TrainStep`
    per step.
    """
    x = image_inputs(model, images)
    t = text_inputs(model, texts)
    n = len(x)
    if n != len(t):
        raise ValueError(f"{n} images but {len(t)} texts")
    if n < 2:
        raise ValueError("contrastive training needs at least 2 pairs")
    steps, lr = recipe.steps, recipe.lr
    batch_size = min(recipe.batch_size, n)
    per_epoch = n // batch_size
    decay = [p for name, p in model.named_parameters() if _decays(name, p)]
    no_decay = [p for name, p in model.named_parameters() if not _decays(name, p)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    cuda = torch.device(device).type == "cuda"
    threads = recipe.threads if torch.device(device).type == "cpu" else None
    gen = torch.Generator().manual_seed(recipe.seed)
    model.to(device).train()
    order = torch.empty(0, dtype=torch.long)
    with deterministic_algorithms(cuda), torch_threads(threads):
        for step in range(steps):
            epoch, slot = divmod(step, per_epoch)
            if slot == 0:
                order = torch.randperm(n, generator=gen)
            idx = order[slot * batch_size : (slot + 1) * batch_size]
            rate = lr_at(step, steps, lr, recipe.warmup)
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
