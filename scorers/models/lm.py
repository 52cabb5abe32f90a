"""Causal language models for the perplexity scorers: cbdsl's own tiny LM, or a local checkpoint.

Why it exists: CCNet ranks text by its perplexity under a language model of
clean text. No model can be downloaded here, so with no checkpoint cbdsl
trains its own: ``cbdsl-tiny-lm``, a 2-layer, 128-wide GPT-2 (transformers'
``GPT2LMHeadModel``) over UTF-8 bytes, trained on the pool's own text for a
fixed number of steps with fixed seeds (:class:`TinyLMSpec`). It is saved
with ``save_pretrained`` under the scorer's work directory (the pool's
``scores/models/perplexity/``), keyed by the spec and a digest of the training
texts, so a second run loads it instead of training. Its tokenizer is
transformers' ``ByT5Tokenizer(extra_ids=0)`` (byte ``b`` is token ``b + 3``;
pad 0, eos 1, unk 2), which needs no vocabulary file; cbdsl encodes bytes
itself for speed, with the same ids.

A checkpoint (a ``save_pretrained`` directory registered into the pool as a
``model`` asset, loaded with ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer``, never from the network) replaces the tiny LM.

Perplexity of a text = exp(mean over its tokens of -log p(token | previous
tokens)). Every token is scored: the sequence starts with the tokenizer's BOS
token (its EOS where it has none, as GPT-2 does), which is not itself scored.
Texts longer than the model's context are truncated to it.

torch and transformers are imported inside the functions: the registry
imports the scorer modules, and ``cbdsl check`` must stay light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cbdsl.scorers.api import RunError

TINY_LM = "cbdsl-tiny-lm"
PAD, EOS, UNK, BYTE_OFFSET = 0, 1, 2, 3  # ByT5Tokenizer(extra_ids=0)'s ids
BYTE_VOCAB = 256 + BYTE_OFFSET
LOGIT_BUDGET = 1 << 25  # floats of logits per forward pass (batch x length x vocab): 128 MiB


@dataclass(frozen=True)
class TinyLMSpec:
    """Architecture and training of ``cbdsl-tiny-lm``; every field is part of the model's cache key."""

    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    format: int = 1


SPEC = TinyLMSpec()


_FILE_DIGESTS: dict[tuple, str] = {}


def files_version(path: Path) -> str:
    """sha256 over the names and bytes of a file or of every file under a directory (memoised by stat)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        key = (str(f), st.st_size, st.st_mtime_ns)
        if key not in _FILE_DIGESTS:
            digest = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
            _FILE_DIGESTS[key] = digest.hexdigest()
        h.update(str(f.relative_to(path) if f != path else f.name).encode() + b"\0" + _FILE_DIGESTS[key].encode())
    return h.hexdigest()


def checkpoint_version(checkpoint: str) -> str:
    """The identity of what ``perplexity`` scores with, for the score cache key: the tiny LM's spec, or the
    checkpoint asset's name (the cache key adds the asset's sha256, as for every asset a parameter names)."""
    if not checkpoint:
        return f"{TINY_LM}:{json.dumps(asdict(SPEC), sort_keys=True)}"
    return f"checkpoint:{checkpoint}"


# --- byte sequences (the tiny LM's tokenizer, vectorised) --------------------------------------------------


def byte_sequences(texts: Sequence[str | None], max_len: int) -> list[np.ndarray | None]:
    """``[EOS] + (utf-8 bytes + 3) + [EOS]`` per text, at most ``max_len`` ids; None for a null text.

    The same ids as ``ByT5Tokenizer(extra_ids=0)(text)`` with EOS prepended as the start token.
    """
    out: list[np.ndarray | None] = []
    encoded = [t.encode("utf-8", errors="replace") if t is not None else None for t in texts]
    for b in encoded:
        if b is None:
            out.append(None)
            continue
        seq = np.empty(len(b) + 2, dtype=np.int64)
        seq[0] = EOS
        seq[1:-1] = np.frombuffer(b, dtype=np.uint8)
        seq[1:-1] += BYTE_OFFSET
        seq[-1] = EOS
        out.append(seq[:max_len])
    return out


def texts_digest(texts: Sequence[str | None]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(b"\x01" if t is None else t.encode("utf-8", errors="replace") + b"\x00")
    return h.hexdigest()


# --- models --------------------------------------------------------------------------------------------


@dataclass
class CausalLM:
    """A loaded model and how to turn texts into scored sequences."""

    model: Any
    tokenizer: Any  # None: the byte tokenizer of cbdsl-tiny-lm (byte_sequences)
    device: str
    max_len: int
    key: str  # identity, for the in-process memo

    def sequences(self, texts: Sequence[str | None]) -> list[np.ndarray | None]:
        if self.tokenizer is None:
            return byte_sequences(texts, self.max_len)
        return tokenize(self.tokenizer, texts, self.max_len)


def tokenize(tokenizer, texts: Sequence[str | None], max_len: int, batch: int = 1024) -> list[np.ndarray | None]:
    """Token ids per text with the start token prepended (BOS, else EOS, unless the tokenizer already added it)."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    out: list[np.ndarray | None] = [None] * len(texts)
    present = [i for i, t in enumerate(texts) if t is not None]
    for lo in range(0, len(present), batch):
        index = present[lo:lo + batch]
        ids = tokenizer([texts[i] for i in index], add_special_tokens=True)["input_ids"]
        for i, seq in zip(index, ids, strict=True):
            if start is not None and (not seq or seq[0] != start):
                seq = [start, *seq]
            out[i] = np.asarray(seq[:max_len], dtype=np.int64)
    return out


def _context_length(config) -> int:
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 1:
            return value
    return 1024


def load_checkpoint(path: Path, sha256: str, device: str, name: str = "") -> CausalLM:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a local directory (never the network); ``sha256`` is its
    content hash (the model asset's). A folder that is not a causal LM is a RunError, not a traceback."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError...

        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise RunError(f"checkpoint `{name or path}` is not a transformers causal LM with its tokenizer: {first}",
                       ("register the directory that `model.save_pretrained(DIR)` and `tokenizer.save_pretrained(DIR)` "
                        "wrote: `cbdsl pool add-asset POOL NAME DIR --kind model`",)) from err
    if type(tokenizer).__name__ == "ByT5Tokenizer":
        tokenizer = None  # the same ids, encoded without the Python tokenizer's per-character loop
    return CausalLM(model, tokenizer, device, _context_length(model.config), "checkpoint:" + sha256)


def tiny_lm(texts: Sequence[str | None], workdir: Path, device: str, spec: TinyLMSpec | None = None) -> CausalLM:
    """``cbdsl-tiny-lm`` trained on ``texts`` (in a fixed order), from the cache under ``workdir`` when there."""
    from transformers import GPT2LMHeadModel

    spec = spec or SPEC
    digest = texts_digest(texts)
    key = hashlib.sha256(json.dumps({"spec": asdict(spec), "texts": digest}, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(workdir) / "perplexity" / f"{TINY_LM}-{key}"
    if not (path / "config.json").is_file():
        train_tiny_lm(texts, path, device, spec)
    with _quiet():
        model = GPT2LMHeadModel.from_pretrained(path, local_files_only=True).to(device).eval()
    return CausalLM(model, None, device, spec.n_positions, f"{TINY_LM}:{key}")


def train_tiny_lm(texts: Sequence[str | None], path: Path, device: str, spec: TinyLMSpec | None = None) -> Path:
    """Train ``cbdsl-tiny-lm`` on ``texts`` and ``save_pretrained`` it (with its tokenizer) at ``path``.

    Deterministic on one machine and device: fixed seeds for the weights and
    for the batches (drawn with replacement from ``texts`` in the given order),
    no dropout, a linear warm-up then cosine decay of the learning rate.
    """
    import torch
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel

    spec = spec or SPEC
    seqs = [s for s in byte_sequences(texts, spec.n_positions) if s is not None]
    if not seqs:
        raise RunError("cannot train the perplexity model: the pool has no text",
                       ("perplexity needs a text column with values",))
    config = GPT2Config(
        vocab_size=BYTE_VOCAB, n_positions=spec.n_positions, n_embd=spec.n_embd, n_layer=spec.n_layer,
        n_head=spec.n_head, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's random state
        torch.manual_seed(spec.seed)
        model = GPT2LMHeadModel(config)
    model = model.to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)

    def lr_at(step: int) -> float:
        if step < spec.warmup:
            return (step + 1) / spec.warmup
        progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return 0.5 * (1.0 + np.cos(np.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    rng = np.random.default_rng(spec.seed)
    losses = []
    for _step in range(spec.steps):
        batch = [seqs[i] for i in rng.integers(0, len(seqs), spec.batch_size)]
        ids, mask = pad_batch(batch)
        ids_t, mask_t = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
        logits = model(input_ids=ids_t, attention_mask=mask_t).logits[:, :-1]
        target = ids_t[:, 1:].masked_fill(mask_t[:, 1:] == 0, -100)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach().item())

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir(parents=True)
    try:
        with _quiet():
            model.eval().save_pretrained(tmp)
        ByT5Tokenizer(extra_ids=0).save_pretrained(tmp)
        (tmp / "cbdsl-tiny-lm.json").write_text(json.dumps(
            {"spec": asdict(spec), "texts": len(seqs), "first_loss": losses[0], "final_loss": losses[-1]}, indent=2))
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished first: keep its model
            if not (path / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@contextlib.contextmanager
def _quiet():
    """transformers' own progress bars off (cbdsl shows one progress bar per scorer)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def pad_batch(seqs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), PAD, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = s
        mask[r, :len(s)] = 1
    return ids, mask


# --- scoring -------------------------------------------------------------------------------------------


def sequence_nll(lm: CausalLM, seqs: Sequence[np.ndarray | None],
                 progress: Callable[[int], None] = lambda n: None,
                 first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: (sum of -log p(token_t | tokens_<t) over t >= 1, number of such tokens).

    ``first`` (int64 per sequence, optional): score only the tokens at
    positions ``t >= first[i]``, the earlier ones being context (IFD's answer
    tokens after the prompt); without it every token from position 1 is scored.
    Batches hold sequences of similar length (sorted, longest first) and at
    most :data:`LOGIT_BUDGET` logits; padding is on the right, so it never
    enters a real token's context.
    """
    import torch

    n = len(seqs)
    total = np.zeros(n, dtype=np.float64)
    count = np.zeros(n, dtype=np.int64)
    lengths = np.array([len(s) if s is not None else 0 for s in seqs], dtype=np.int64)
    scored = np.flatnonzero(lengths >= 2)
    progress(n - len(scored))
    order = scored[np.argsort(-lengths[scored], kind="stable")]
    vocab = int(lm.model.get_output_embeddings().weight.shape[0])
    lo = 0
    with torch.inference_mode():
        while lo < len(order):
            width = int(lengths[order[lo]])
            rows = max(1, min(1024, LOGIT_BUDGET // (width * vocab)))
            index = order[lo:lo + rows]
            ids, mask = pad_batch([seqs[i] for i in index])
            ids_t = torch.from_numpy(ids).to(lm.device)
            mask_t = torch.from_numpy(mask).to(lm.device)
            logits = lm.model(input_ids=ids_t, attention_mask=mask_t).logits[:, :-1].float()
            logp = torch.log_softmax(logits, dim=-1)
            target = ids_t[:, 1:]
            scored = mask[:, 1:]
            if first is not None:  # the context tokens before `first` are not scored
                scored = scored * (np.arange(1, width)[None, :] >= first[index][:, None])
            nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * torch.from_numpy(scored).to(lm.device)
            total[index] = nll.double().sum(dim=1).cpu().numpy()
            count[index] = scored.sum(axis=1)
            progress(len(index))
            lo += len(index)
    return total, count


_MEMO: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()


def perplexities(texts: Sequence[str | None], ids: Sequence[str], *, checkpoint: CausalLM | None, workdir: Path,
                 device: str, progress: Callable[[int], None] = lambda n: None) -> np.ndarray:
    """exp(mean token NLL) per text (NaN for a null text or one with no scored token).

    ``checkpoint``: a model from :func:`load_checkpoint`. Without one the tiny LM is trained on ``texts`` ordered by ``ids``
    (so the model does not depend on the pool's row order). The last few
    results are memoised in-process, so ``perplexity`` and ``ccnet_bucket`` in
    one policy score the pool once.
    """
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    if checkpoint is not None:
        lm = checkpoint
    else:
        lm = tiny_lm([texts[i] for i in order], workdir, device)
    memo_key = (lm.key, texts_digest(texts))
    if memo_key in _MEMO:
        progress(len(texts))
        return _MEMO[memo_key].copy()
    total, count = sequence_nll(lm, lm.sequences(texts), progress)
    with np.errstate(divide="ignore", invalid="ignore"):
        ppl = np.where(count > 0, np.exp(total / np.maximum(count, 1)), np.nan)
    _MEMO[memo_key] = ppl
    while len(_MEMO) > 4:
        _MEMO.popitem(last=False)
    return ppl.copy()
