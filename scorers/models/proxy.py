"""Proxy models for the training-dynamics and influence scorers: train one on the pool, measure every row.

Why: EL2N, GraNd, forgetting, per-sample loss and LESS/ICONS influence all
read how a model learns each example. No large model runs here, so cbdsl
trains a small proxy of the pool's kind, picked by the scorer's inputs
(:func:`make_proxy`):

- ``(image, text)`` -> :class:`ContrastiveProxy`: cbdsl-tiny
  (:mod:`~cbdsl.scorers.models.tinyclip`) trained with CLIP's InfoNCE
  (:mod:`~cbdsl.scorers.models.clip_training`).
  Its "classifier" is the in-batch similarity: a pair's image->text and
  text->image softmax over the logits of its batch, the one-hot at itself.
- ``(features, label)`` -> :class:`ClassifierProxy`: a one-hidden-layer MLP
  on a standardised embedding, or on hashed word uni+bigram counts of a text
  (:mod:`~cbdsl.scorers.models.classifier`).
- ``(text)`` -> :class:`LanguageProxy`: a byte-level GPT-2 of
  :mod:`~cbdsl.scorers.models.lm`'s kind; each next token is a classification.
- ``(question, answer)`` with ``proxy="tiny-lm"`` -> the same GPT-2 on the
  pair, question first: only the answer's tokens are scored (the assistant
  loss of instruction tuning; LLaVA and Vicuna train on the answer alone).
  Two strings without ``proxy="tiny-lm"`` stay (text, class label): the
  inputs' types cannot tell an answer from a label, and a switch on the
  data's values would change the model under a policy's feet.
- ``(image, question, answer)`` -> :class:`~cbdsl.scorers.models.vlm_proxy.VisionLanguageProxy`:
  the mini vision-language model of the ``mini-vlm`` backend, from its cached
  base, its vision tower frozen; the loss on the answer's tokens given the
  image and the question (LLaVA's stage-2 loss). Image bytes first, then two
  strings: the types say which is which.

Rows are used in id-hash order (:func:`~cbdsl.scorers.models.kmeans.canonical_order`),
so results do not depend on the pool's row order. A proxy measures rows in
*scoring batches*: that order cut into consecutive batches of ``batch_size``
(for the contrastive proxy the batch is also the set of candidates).

A measurement gives per row the loss, EL2N (``||softmax - onehot||_2``),
whether the model gets it right, and its last-layer gradient as a sum of
outer products ``sum_t g_t h_t^T`` (``blocks``): ``g`` the loss gradient at
the layer's output, ``h`` its input (with a 1 for the bias). That is what
DeepCore's GraNd computes (``[g, g * h]`` for a classifier) and what the
influence scorer projects.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cbdsl.scorers.api import RunError
from cbdsl.scorers.models import classifier, clip_training, kmeans, lm, tinyclip, vlm_proxy
from cbdsl.scorers.models.proxy_fit import Measure, StepHook, evaluating, fit
from cbdsl.scorers.models.recipe import Recipe


def grad_norm(blocks: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """Frobenius norm of each row's last-layer gradient ``sum_t g_t h_t^T`` over every block."""
    total = 0
    for g, h in blocks:
        if g.shape[1] == 1:  # ||g h^T|| = ||g|| ||h||
            total = total + (g[:, 0].norm(dim=1) * h[:, 0].norm(dim=1)) ** 2
        else:
            total = total + torch.einsum("bta,btc->bac", g, h).pow(2).sum(dim=(1, 2))
    return torch.sqrt(total).double().numpy()


@contextlib.contextmanager
def reproducible() -> Iterator[None]:
    """One torch thread and deterministic kernels inside: float sums depend on the thread count, and a
    proxy's scores must be the same bytes on any machine (the image-text proxy trains the same way)."""
    with clip_training.deterministic_algorithms(), clip_training.torch_threads(1):
        yield


def _softmax_stats(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``logits`` [m, k]: (cross-entropy, ||softmax - onehot||_2, softmax - onehot)."""
    p = logits.float().softmax(-1)
    g = p.clone()
    g[torch.arange(len(target)), target] -= 1
    return F.cross_entropy(logits.float(), target, reduction="none"), g.norm(dim=-1), g


# ---------------------------------------------------------------- the proxies


class ContrastiveProxy:
    """cbdsl-tiny on (image bytes, caption) pairs; trained by :func:`clip_training.train`, one CPU thread."""

    kind = "contrastive"

    def __init__(self, batch_size: int, lr: float):
        self.batch_size, self.lr = batch_size, lr

    def prepare(self, images, texts) -> tuple[tuple[torch.Tensor, torch.Tensor], np.ndarray]:
        """((pixels, tokens) of the usable rows, bool mask of them): an undecodable image or null caption is out."""
        prep = tinyclip.image_prep()
        pixels, ok = prep.batch(images.to_list())
        ok &= (~texts.is_null()).to_numpy()
        tokens = tinyclip.tokenize(texts.fill_null("").to_list())
        keep = torch.from_numpy(np.flatnonzero(ok))
        return (prep.normalize(torch.from_numpy(pixels)[keep]), tokens[keep]), ok

    def key(self) -> dict:
        return {"proxy": "cbdsl-tiny", "config": tinyclip.TINY.digest()}

    def build(self, seed: int):
        return tinyclip.build(tinyclip.TINY, seed)

    def size(self, data) -> int:
        return len(data[0])

    def train(self, model, data, *, epochs: int, seed: int, hook: StepHook | None = None) -> None:
        n = len(data[0])
        if epochs == 0 or n < 2:
            return
        steps = epochs * max(1, n // min(self.batch_size, n))

        def callback(step) -> None:
            if hook is not None:
                hook(step.indices, step.correct, step.lr, step.epoch_end, step.model)

        recipe = Recipe(steps=steps, batch_size=self.batch_size, lr=self.lr, warmup=max(1, steps // 10), seed=seed,
                        threads=1)
        clip_training.train(model, data[0], data[1], recipe, callback=callback)

    def measure(self, model, data, rows: np.ndarray) -> Measure:
        """In-batch InfoNCE of the pairs ``rows`` (one scoring batch), and its own-path projection gradients.

        For pair i with unit embeddings u_i, v_i, logits s u V^T (image->text) and s v U^T (text->image):
        P, Q their softmaxes; loss = (CE_P + CE_Q) / 2, EL2N = (||P_i - e_i|| + ||Q_i - e_i||) / 2, and
        dloss/du_i = s/2 ((P_i - e_i) V + (Q_ii - 1) v_i) (the other rows held fixed), through the
        normalisation to the embedding e = h @ proj, so the projection's gradient is g (x) h.
        """
        idx = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        with evaluating(model), _unprojected(model):
            hv = model.encode_image(data[0][idx]).float()
            ht = model.encode_text(data[1][idx]).float()
            scale = model.logit_scale.exp().float()
        e, f = hv @ model.visual.proj.detach().float(), ht @ model.text_projection.detach().float()
        u, v = F.normalize(e, dim=-1), F.normalize(f, dim=-1)
        logits = scale * u @ v.T
        target = torch.arange(len(idx))
        ce_p, el_p, gp = _softmax_stats(logits, target)
        ce_q, el_q, gq = _softmax_stats(logits.T, target)
        diag_p, diag_q = gp.diagonal(), gq.diagonal()  # P_ii - 1, Q_ii - 1
        du = scale / 2 * (gp @ v + diag_q[:, None] * v)
        dv = scale / 2 * (gq @ u + diag_p[:, None] * u)
        de = (du - (du * u).sum(-1, keepdim=True) * u) / e.norm(dim=-1, keepdim=True)
        df = (dv - (dv * v).sum(-1, keepdim=True) * v) / f.norm(dim=-1, keepdim=True)
        correct = clip_training.in_batch_hits(u, v).numpy()
        return Measure(loss=((ce_p + ce_q) / 2).double().numpy(), el2n=((el_p + el_q) / 2).double().numpy(),
                       correct=correct, blocks=[(de[:, None], hv[:, None]), (df[:, None], ht[:, None])])


@contextlib.contextmanager
def _unprojected(model) -> Iterator[None]:
    """open_clip's encoders without their final projections: they return the pooled features h."""
    proj, text_proj = model.visual.proj, model.text_projection
    model.visual.proj, model.text_projection = None, None
    try:
        yield
    finally:
        model.visual.proj, model.text_projection = proj, text_proj


class ClassifierProxy:
    """A one-hidden-layer MLP classifier of the label from the features (:mod:`.classifier`)."""

    kind = "classifier"

    def __init__(self, batch_size: int, lr: float, features=None, labels=None):
        self.batch_size, self.lr = batch_size, lr
        self.encoder = classifier.Encoder.fit(features, labels)

    def prepare(self, features, labels):
        return self.encoder.encode(features, labels)

    def key(self) -> dict:
        return {"proxy": "mlp", "hidden": classifier.HIDDEN, "encoder": self.encoder.key()}

    def build(self, seed: int):
        return classifier.build(self.encoder.width, len(self.encoder.classes), seed)

    def size(self, data) -> int:
        return len(data[1])

    def train(self, model, data, *, epochs: int, seed: int, hook: StepHook | None = None) -> None:
        x, y = data

        def batch_loss(m, idx):
            logits = m(x[idx])
            return F.cross_entropy(logits, y[idx], reduction="none"), logits.argmax(1) == y[idx]

        fit(model, batch_loss, len(y), epochs=epochs, batch_size=self.batch_size, lr=self.lr, seed=seed, hook=hook)

    def measure(self, model, data, rows: np.ndarray) -> Measure:
        x, y = data
        idx = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        with evaluating(model):
            h = model.hidden(x[idx])
            logits = model.head(h)
        ce, el2n, g = _softmax_stats(logits, y[idx])
        h1 = torch.cat([torch.ones(len(h), 1), h], dim=1)  # the bias's input is 1
        return Measure(loss=ce.double().numpy(), el2n=el2n.double().numpy(),
                       correct=(logits.argmax(1) == y[idx]).numpy(), blocks=[(g[:, None], h1[:, None])])


class LanguageProxy:
    """A byte-level GPT-2 half as wide as cbdsl-tiny-lm, 128 bytes of context (it trains seeds x epochs
    times); a text is "right" when most of its scored next bytes are predicted.

    ``pair=True``: rows are (question, answer) and only the answer's bytes (and its closing EOS) count, in
    the loss it trains on and in every measurement (:func:`pair_sequences`); the data is then
    ``(sequences, first scored position per row)``."""

    kind = "language"

    def __init__(self, batch_size: int, lr: float, pair: bool = False):
        self.batch_size, self.lr, self.pair = batch_size, lr, pair
        self.spec = replace(lm.SPEC, n_embd=64, n_head=2, n_positions=128)

    def prepare(self, texts, answers=None):
        if not self.pair:
            seqs = lm.byte_sequences(texts.to_list(), self.spec.n_positions)
            ok = np.asarray([s is not None and len(s) >= 2 for s in seqs], dtype=bool)
            return [s for s, good in zip(seqs, ok) if good], ok
        seqs, first = pair_sequences(texts.to_list(), answers.to_list(), self.spec.n_positions)
        ok = np.asarray([s is not None for s in seqs], dtype=bool)
        return ([s for s, good in zip(seqs, ok) if good], torch.from_numpy(first[ok])), ok

    def key(self) -> dict:
        key = {"proxy": "byte-gpt2", "spec": asdict(self.spec)}
        if self.pair:
            key["pair"] = PAIR_FORMAT
        return key

    def build(self, seed: int):
        from transformers import GPT2Config, GPT2LMHeadModel

        s = self.spec
        config = GPT2Config(vocab_size=lm.BYTE_VOCAB, n_positions=s.n_positions, n_embd=s.n_embd, n_layer=s.n_layer,
                            n_head=s.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=lm.EOS, eos_token_id=lm.EOS, pad_token_id=lm.PAD)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return GPT2LMHeadModel(config).eval()

    def size(self, data) -> int:
        return len(data[0]) if self.pair else len(data)

    def _forward(self, model, data, idx):
        """(final hidden states [b, L-1, d], logits [b, L-1, V], targets [b, L-1], scored [b, L-1])."""
        seqs, first = data if self.pair else (data, None)
        ids, mask = lm.pad_batch([seqs[int(i)] for i in idx])
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        hidden = model.transformer(input_ids=ids_t, attention_mask=mask_t).last_hidden_state[:, :-1]
        scored = mask_t[:, 1:].float()
        if first is not None:  # target t is token t + 1: the question's tokens are context only
            position = torch.arange(1, ids.shape[1])
            scored = scored * (position[None, :] >= first[torch.as_tensor(idx, dtype=torch.int64)][:, None])
        return hidden, model.lm_head(hidden), ids_t[:, 1:], scored

    def _per_text(self, logits, target, mask):
        nll = F.cross_entropy(logits.transpose(1, 2).float(), target, reduction="none") * mask
        count = mask.sum(1)
        hits = ((logits.argmax(-1) == target).float() * mask).sum(1)
        return nll.sum(1) / count, hits / count > 0.5, count

    def train(self, model, data, *, epochs: int, seed: int, hook: StepHook | None = None) -> None:
        def batch_loss(m, idx):
            _h, logits, target, mask = self._forward(m, data, idx)
            loss, correct, _count = self._per_text(logits, target, mask)
            return loss, correct

        with torch.random.fork_rng(devices=[]):  # no dropout, but keep the caller's RNG untouched
            fit(model, batch_loss, self.size(data), epochs=epochs, batch_size=self.batch_size, lr=self.lr, seed=seed,
                hook=hook, weight_decay=0.01)

    def measure(self, model, data, rows: np.ndarray) -> Measure:
        """Mean token NLL, mean token EL2N; the head's gradient of the mean NLL is sum_t (p_t - y_t) h_t^T / T."""
        with evaluating(model):
            hidden, logits, target, mask = self._forward(model, data, rows)
        loss, correct, count = self._per_text(logits, target, mask)
        p = logits.float().softmax(-1)
        g = p - F.one_hot(target, p.shape[-1]).float()
        el2n = (g.norm(dim=-1) * mask).sum(1) / count
        g = g * (mask / count[:, None])[..., None]
        return Measure(loss=loss.double().numpy(), el2n=el2n.double().numpy(), correct=correct.numpy(),
                       blocks=[(g, hidden.float())])


def make_proxy(inputs: list, batch_size: int, lr: float | None = None, proxy: str = "tiny"):
    """The proxy for these input columns (Polars Series), or a RunError saying which inputs fit.

    ``proxy="tiny"`` picks by the inputs' types; ``"tiny-lm"`` is the byte GPT-2 of ``(text)`` or of
    ``(question, answer)``, its loss on the answer alone."""
    import polars as pl

    dtypes = [s.dtype for s in inputs]
    if proxy == "tiny-lm":
        if len(inputs) in (1, 2) and all(d == pl.String for d in dtypes):
            return LanguageProxy(batch_size, lr or 3e-3, pair=len(inputs) == 2)
        raise RunError(f'`proxy="tiny-lm"` reads (text) or (question, answer), both text; got '
                       f"({', '.join(map(str, dtypes))})",
                       ('e.g. `loss(question, answer, proxy="tiny-lm")`; leave `proxy` out for the proxy '
                        "the inputs pick (`loss(image, question, answer)`: the vision-language model)",))
    if len(inputs) == 2 and dtypes[0] == pl.Binary and dtypes[1] == pl.String:
        return ContrastiveProxy(batch_size, lr or 2e-3)
    if len(inputs) == 3 and dtypes == [pl.Binary, pl.String, pl.String]:
        return vlm_proxy.VisionLanguageProxy(batch_size, lr or vlm_proxy.LR)
    if len(inputs) == 3 and pl.Binary in dtypes:
        raise RunError(f"the vision-language proxy reads (image, question, answer) in that order; got "
                       f"({', '.join(map(str, dtypes))})", ("e.g. `loss(image, question, answer)`",))
    if len(inputs) == 3 and dtypes == [pl.String] * 3:
        raise RunError("the first of three inputs holds text, not images: the vision-language proxy reads "
                       "(image, question, answer) with `image` a pool column of type image (paths into the "
                       "pool's image folder, read as bytes)",
                       ("import the pool with its images (`cbdsl pool import llava FILE --image-folder DIR`, or "
                        '`cbdsl pool make-demo --track it`); without images, `loss(question, answer, proxy="tiny-lm")`',))
    if len(inputs) == 1 and dtypes[0] == pl.String:
        return LanguageProxy(batch_size, lr or 3e-3)
    if len(inputs) == 2 and (dtypes[0] == pl.String or isinstance(dtypes[0], (pl.Array, pl.List))) \
            and not dtypes[1].is_float() and not isinstance(dtypes[1], (pl.Array, pl.List, pl.Binary)):
        _check_labels(inputs[1])
        return ClassifierProxy(batch_size, lr or 1e-2, inputs[0], inputs[1])
    raise RunError(
        "a proxy model needs (image, text) for an image-text pool, (features, label) for a labelled pool "
        "(an embedding or a text, and a class), (text) for a text pool, (image, question, answer) for an "
        f'instruction pool with images, or (question, answer) with `proxy="tiny-lm"`; got '
        f'({", ".join(map(str, dtypes))})',
        ("e.g. `el2n(image, text)`, `el2n(image_embedding(image), label)`, `el2n(text)`, "
         '`el2n(image, question, answer)` or `el2n(question, answer, proxy="tiny-lm")`',))


def _check_labels(labels) -> None:
    """A text label with about one row per value is not a class: most likely an answer column, which
    would make a classifier with a class per row. Say which call was meant."""
    import polars as pl

    if labels.dtype != pl.String:
        return
    present = labels.drop_nulls()
    distinct = present.n_unique()
    if len(present) >= 4 and distinct > len(present) // 2:
        raise RunError(f"the second input reads as a class label, but it has {distinct} distinct values over "
                       f"{len(present)} rows: a classifier proxy would learn a class per row",
                       ('for an instruction pair, score the answer\'s tokens after the question: '
                        '`loss(question, answer, proxy="tiny-lm")`; for a classifier, pass a column of classes',))


PAIR_FORMAT = 1  # pair_sequences' layout; part of the proxy's key


def pair_sequences(questions, answers, max_len: int) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Per (question, answer): ``[EOS] + question bytes + [EOS] + answer bytes + [EOS]`` in ``max_len`` ids,
    and the position of the answer's first byte (every later token is scored: the answer and its EOS).

    When the pair is longer than the window, the question keeps its last bytes (those next to the answer),
    at most half the window unless the answer leaves it more, and the answer is cut at the end of the
    window. None (and position 0) for a row with a null question or answer.
    """
    room = max_len - 3
    seqs: list[np.ndarray | None] = []
    first = np.zeros(len(questions), dtype=np.int64)
    q_ids = lm.byte_sequences(questions, 1 << 62)
    a_ids = lm.byte_sequences(answers, 1 << 62)
    for i, (q, a) in enumerate(zip(q_ids, a_ids, strict=True)):
        if q is None or a is None:
            seqs.append(None)
            continue
        q, a = q[1:-1], a[1:]  # bare question bytes; answer bytes + EOS
        keep = min(len(q), max(room // 2, room + 1 - len(a)))
        seq = np.concatenate([[lm.EOS], q[len(q) - keep:], [lm.EOS], a]).astype(np.int64)[:max_len]
        first[i] = keep + 2
        seqs.append(seq)
    return seqs, first


# ---------------------------------------------------------------- pool rows in canonical order


@dataclass
class Prepared:
    """A proxy and its data: the usable rows of the input, in id-hash order."""

    proxy: Any
    data: Any
    order: np.ndarray  # int64 [n]: input row of each canonical position
    valid: np.ndarray  # bool [n] in canonical order: the proxy could use the row

    @property
    def rows(self) -> int:
        return int(self.valid.sum())

    def column(self, values, name: str):
        """Values of the usable rows (canonical order) -> a Float64 Series in the input's row order, null elsewhere."""
        import polars as pl

        full = np.full(len(self.valid), np.nan)
        full[self.valid] = values
        out = np.empty_like(full)
        out[self.order] = full
        return pl.Series(name, out, dtype=pl.Float64).fill_nan(None)

    def batches(self, batch_size: int) -> list[np.ndarray]:
        """The scoring batches: the usable rows cut into near-equal consecutive batches of at most ``batch_size``."""
        m = self.rows
        return [b for b in np.array_split(np.arange(m), max(1, math.ceil(m / batch_size))) if len(b)]

    def digest(self, **options) -> str:
        """A content hash of the prepared data and ``options`` (the key of cached traces)."""
        return kmeans.digest(*_arrays(self.data), self.valid, kind=self.proxy.kind, **self.proxy.key(), **options)


def _arrays(data) -> list[np.ndarray]:
    if isinstance(data, torch.Tensor):
        return [data.numpy()]
    if isinstance(data, tuple):
        return [a for part in data for a in _arrays(part)]
    lengths = np.asarray([len(s) for s in data], dtype=np.int64)
    return [lengths, np.concatenate(data) if len(data) else np.zeros(0, np.int64)]


def prepare(ids, inputs: list, batch_size: int, lr: float | None = None, proxy: str = "tiny") -> Prepared:
    """The proxy for ``inputs`` (Series aligned with ``ids``) and its data in id-hash order."""
    import polars as pl

    order = kmeans.canonical_order(ids)
    take = pl.Series(order)
    inputs = [s.gather(take) for s in inputs]
    proxy = make_proxy(inputs, batch_size, lr, proxy)
    data, valid = proxy.prepare(*inputs)
    return Prepared(proxy, data, order, np.asarray(valid, dtype=bool))


def subset(data, idx: np.ndarray):
    """The rows ``idx`` of a proxy's data (tensors, tuples of them, or a list of sequences)."""
    if isinstance(data, torch.Tensor):
        return data[torch.from_numpy(np.asarray(idx, dtype=np.int64))]
    if isinstance(data, tuple):
        return tuple(subset(part, idx) for part in data)
    return [data[int(i)] for i in idx]


class Projector:
    """Random projection of last-layer gradients ``sum_t g_t h_t^T`` to about ``dims`` numbers per row.

    Each block gets ``dims // blocks`` numbers. A block whose gradient is no
    larger is kept exact (flattened); a larger one (a x c) is projected by
    a Kronecker product of two seeded Rademacher matrices R1 (k1 x a) and
    R2 (k2 x c), scaled by 1/sqrt(k): (R1 (x) R2) vec(sum g h^T) =
    vec(sum (R1 g)(R2 h)^T), computed without forming the gradient. As for a
    dense Johnson-Lindenstrauss projection (TRAK's, which LESS uses), inner
    products are preserved in expectation.
    """

    def __init__(self, dims: int, seed: int):
        self.dims, self.seed = dims, seed
        self._mats: dict[tuple, tuple] = {}

    def _matrices(self, block: int, a: int, c: int, budget: int):
        key = (block, a, c, budget)
        if key not in self._mats:
            if a * c <= budget:
                self._mats[key] = (None, None)
            else:
                k1 = min(a, max(1, math.isqrt(budget)))
                k2 = min(c, max(1, budget // k1))
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + block)
                self._mats[key] = tuple(
                    None if k == n else (torch.randint(0, 2, (k, n), generator=gen).float() * 2 - 1) / math.sqrt(k)
                    for k, n in ((k1, a), (k2, c)))
        return self._mats[key]

    def __call__(self, blocks: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        budget = max(1, self.dims // len(blocks))
        parts = []
        for b, (g, h) in enumerate(blocks):
            r1, r2 = self._matrices(b, g.shape[2], h.shape[2], budget)
            if r1 is not None:
                g = g @ r1.T
            if r2 is not None:
                h = h @ r2.T
            parts.append(torch.einsum("bta,btc->bac", g, h).flatten(1))
        return torch.cat(parts, dim=1)
