"""The vision-language proxy of the training-dynamics and influence scorers: the mini VLM on (image, question, answer).

Why it exists: on an instruction pool the loss that matters is the one
LLaVA trains on, the answer's tokens given the image and the question. So for
``el2n/loss/grand/forgetting/influence(image, question, answer)`` the proxy
is the ``mini-vlm`` backend's own model (:mod:`~cbdsl.scorers.models.vlm`),
starting from its cached base (:mod:`~cbdsl.scorers.models.vlm_base`,
LLaVA's stage 1) and fine-tuned on the pool's rows as stage 2 is, the vision
tower frozen (``VLMRecipe(freeze_vision=True)``).

A row is one turn, laid out as the model trains on conversations:
``USER: {question} ASSISTANT: {answer}</s>`` after the visual tokens of its
image (a null image is a zero image, as LLaVA trains text-only records). The
loss and every measurement count the answer's tokens and its ``</s>`` only
(the targets of :func:`~cbdsl.scorers.models.vlm.encode_conversation`). A
row scores null when its question or answer is null, its image does not
decode, or its answer gets no token inside the context.

The frozen tower: its image embeddings are the same at every step, so they
are computed once, when the rows are prepared, with the tower in eval mode
(its batch norms on their running statistics, as :func:`vlm.train
<cbdsl.scorers.models.vlm.train>` keeps a frozen tower); training and
measurement run the projector and the decoder on them.

Training is the proxies' loop (:func:`~cbdsl.scorers.models.proxy_fit.fit`):
every row once an epoch in a seeded order, the last short batch kept, warm-up
then cosine decay, AdamW without weight decay (LLaVA's stage 2). Each step
minimises the batch's mean of the rows' mean answer-token losses (LLaVA's
trainer averages over the batch's tokens, so a long answer weighs more
there). The weights always start from the base: ``seed`` orders the data, so
seeds differ by the order alone (GraNd at ``epochs=0`` is the same for every
seed).

Measurement, per row over its answer tokens t (p_t the softmax, y_t the
one-hot of the next token): loss = mean NLL; EL2N = mean ``||p_t - y_t||_2``;
correct = more than half of them predicted; the last layer is the head, tied
to the token embedding (logits = ``h @ E^T`` with h the final LayerNorm's
output), so its gradient of the mean NLL is ``sum_t (p_t - y_t) h_t^T / T``
(``blocks``, as the language proxy gives them).

Threads: :data:`THREADS` torch threads (the mini-vlm recipe's), a fixed
count, so the scores are the same bytes on any machine.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cbdsl.scorers.models import vlm, vlm_base
from cbdsl.scorers.models.proxy_fit import Measure, StepHook, evaluating, fit
from cbdsl.scorers.models.training import deterministic_algorithms, torch_threads
from cbdsl.scorers.models.vlm_recipe import BASE as BASE_RECIPE, CONFIG, BaseRecipe, VLMConfig

VERSION = 1  # bump when the row layout or the training changes what a proxy scores; part of its key
THREADS = 2
LR = 1e-3  # the mini-vlm backend's stage 2
CHUNK = 1024  # images decoded and embedded at a time


@dataclass(frozen=True)
class Base:
    """The base the proxy starts from: its architecture, its recipe, and its folder (default
    :func:`~cbdsl.scorers.models.tinyclip.models_dir`); trained on first use, as the backend's is."""

    config: VLMConfig = CONFIG
    recipe: BaseRecipe = BASE_RECIPE
    workdir: str | os.PathLike | None = None

    def key(self) -> str:
        return vlm_base.base_key(self.config, self.recipe)

    def load(self):
        return vlm_base.base(self.workdir, config=self.config, recipe=self.recipe)


BASE = Base()


class VisionLanguageProxy:
    """The mini VLM from its base on (image bytes, question, answer); see the module docstring."""

    kind = "vision-language"

    def __init__(self, batch_size: int, lr: float, base: Base | None = None):
        self.batch_size, self.lr = batch_size, lr
        self.base = base if base is not None else BASE
        self._loaded = None

    def _base(self):
        """(model, tokenizer) of the base, loaded (or trained) once per proxy."""
        if self._loaded is None:
            model, tok, _folder = self.base.load()
            for p in model.vision.parameters():
                p.requires_grad_(False)
            self._loaded = (model.eval(), tok)
        return self._loaded

    def prepare(self, images, questions, answers):
        """((image embeddings, ids, targets, lengths) of the usable rows, bool mask of them)."""
        model, tok = self._base()
        ok = np.array((~questions.is_null() & ~answers.is_null()).to_list(), dtype=bool)
        turns = [[(q, a)] for q, a, good in zip(questions.to_list(), answers.to_list(), ok) if good]
        ids, target, length = vlm.encode_texts(tok, turns, model.config, dtype=torch.int32)
        rows = np.flatnonzero(ok)
        counted = target.any(1).numpy()  # an answer pushed out of the context by its question has no token
        ok[rows[~counted]] = False
        keep = np.flatnonzero(counted)
        pictures = images.to_list()
        parts, decoded = [], np.ones(len(keep), dtype=bool)
        with torch_threads(THREADS), deterministic_algorithms(), evaluating(model):
            for start in range(0, len(keep), CHUNK):
                chunk = [pictures[i] for i in rows[keep[start:start + CHUNK]]]
                pixels, has = vlm.load_images(chunk, strict=False)
                decoded[start:start + len(chunk)] = has.numpy() | np.asarray([b is None for b in chunk], dtype=bool)
                parts.append(model.features(pixels).float())
        features = torch.cat(parts) if parts else torch.zeros(0, model.projector[0].in_features)
        ok[rows[keep[~decoded]]] = False
        use = torch.from_numpy(keep[decoded])
        return (features[torch.from_numpy(np.flatnonzero(decoded))], ids[use], target[use], length[use]), ok

    def key(self) -> dict:
        return {"proxy": "mini-vlm", "base": self.base.key(), "threads": THREADS, "version": VERSION}

    def build(self, seed: int):
        """A copy of the base (every seed starts from it; ``seed`` orders the data)."""
        return copy.deepcopy(self._base()[0])

    def size(self, data) -> int:
        return len(data[3])

    def _forward(self, model, data, idx):
        """(final states [b, T-1, width], logits [b, T-1, vocab], next ids [b, T-1], counted [b, T-1]) of the
        rows ``idx``, cut to their longest: position t predicts id t + 1."""
        features, ids, target, length = data
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.int64)
        t = int(length[idx].max())
        tokens = ids[idx, :t].long()
        k = model.config.visual_tokens
        hidden = model.hidden(tokens, model.project(features[idx]))[:, k:-1]
        return hidden, hidden @ model.embed.weight.T, tokens[:, 1:], target[idx, 1:t].float()

    def train(self, model, data, *, epochs: int, seed: int, hook: StepHook | None = None) -> None:
        def batch_loss(m, idx):
            _h, logits, target, mask = self._forward(m, data, idx)
            loss, correct, _count = _per_row(logits, target, mask)
            return loss, correct

        with torch_threads(THREADS), torch.random.fork_rng(devices=[]):
            fit(model, batch_loss, self.size(data), epochs=epochs, batch_size=self.batch_size, lr=self.lr, seed=seed,
                hook=hook)

    def measure(self, model, data, rows: np.ndarray) -> Measure:
        """Mean answer-token NLL and EL2N, most answer tokens right, the head's gradient factors."""
        with torch_threads(THREADS), evaluating(model):
            hidden, logits, target, mask = self._forward(model, data, rows)
            loss, correct, count = _per_row(logits, target, mask)
            g = logits.float().softmax(-1)
            g.scatter_add_(-1, target[..., None], torch.full_like(target[..., None], -1, dtype=g.dtype))
            el2n = (g.norm(dim=-1) * mask).sum(1) / count
            g = g * (mask / count[:, None])[..., None]
        return Measure(loss=loss.double().numpy(), el2n=el2n.double().numpy(), correct=correct.numpy(),
                       blocks=[(g, hidden.float())])


def _per_row(logits, target, mask):
    """(mean NLL over the counted tokens, more than half of them predicted, their count) per row."""
    nll = F.cross_entropy(logits.transpose(1, 2).float(), target, reduction="none") * mask
    count = mask.sum(1)
    hits = ((logits.argmax(-1) == target).float() * mask).sum(1)
    return nll.sum(1) / count, hits / count > 0.5, count
