"""The mini vision-language model: LLaVA's architecture at the size of a 2-core CPU.

Why it exists: the instruction-tuning track fine-tunes LLaVA-1.5 on the
selected conversations. Here the same shape trains in a minute: a CLIP image
tower (LLaVA's is CLIP ViT-L/14; here cbdsl-tiny's ResNet tower,
``tinyclip.MINI``, trained contrastively in stage 0 of the base) turns a
32x32 image into an embedding, a two-layer GELU MLP (LLaVA-1.5's
``mlp2x_gelu`` projector) maps it to a few visual tokens in the decoder's
width, and a pre-LayerNorm causal transformer decodes a conversation after
them, with a byte-level BPE tokenizer (:func:`train_tokenizer`). The model of the
``mini-vlm`` backend, its base (:mod:`~cbdsl.scorers.models.vlm_base`) and
the vision-language proxy of the training-dynamics scorers are all this.

A conversation is laid out as Vicuna-v1 lays it out for LLaVA-1.5
(``conv_vicuna_v1``): ``USER: {question} ASSISTANT: {answer}</s>`` per turn,
after the visual tokens (a text-only record gets those of a zero image, as LLaVA trains it). The
loss counts the answers' tokens and their end token only (LLaVA masks
everything else with ``IGNORE_INDEX``).

Determinism: weights come from a seeded generator, batches from a seeded
permutation, kernels are deterministic and the CPU thread count is the
recipe's (:mod:`~cbdsl.scorers.models.training`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cbdsl.scorers.models.training import deterministic_algorithms, lr_at, torch_threads
from cbdsl.scorers.models.vlm_recipe import VLMConfig, VLMRecipe

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<s>", "</s>")
IMAGE_SIZE = 32
MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's image normalisation (tinyclip's)
STD = (0.26862954, 0.26130258, 0.27577711)
Turns = list[tuple[str, str]]


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, w))
        return x + self.mlp(self.ln2(x))


class MiniVLM(nn.Module):
    """Vision tower -> projector -> causal decoder; see the module docstring. ``vision`` is a CLIP image tower
    (an open_clip ``visual`` module: images -> embeddings of ``vision_dim``)."""

    def __init__(self, config: VLMConfig, vision: nn.Module, vision_dim: int):
        super().__init__()
        self.config = config
        w, k = config.width, config.visual_tokens
        self.vision = vision
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.projector = nn.Sequential(nn.Linear(vision_dim, w), nn.GELU(), nn.Linear(w, k * w))
        self.embed = nn.Embedding(config.vocab, w)
        self.pos = nn.Parameter(torch.zeros(config.context, w))
        self.blocks = nn.ModuleList(Block(w, config.heads) for _ in range(config.layers))
        self.ln = nn.LayerNorm(w)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[n, 3, 32, 32] floats in [0, 1] -> the tower's image embeddings [n, vision_dim] (CLIP's normalisation
        first)."""
        return self.vision((images - self.mean) / self.std)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Image embeddings [n, vision_dim] -> visual tokens [n, visual_tokens, width]."""
        return self.projector(features).view(len(features), self.config.visual_tokens, self.config.width)

    def visual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """[n, 3, 32, 32] floats in [0, 1] -> [n, visual_tokens, width]."""
        return self.project(self.features(images))

    def hidden(self, tokens: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """The final states [n, K + T, width] (after the last LayerNorm) of ``tokens`` [n, T] after the K
        ``visual`` tokens: the head's input (the vision-language proxy measures its gradient)."""
        x = torch.cat([visual, self.embed(tokens)], dim=1)
        x = x + self.pos[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln(x)

    def forward(self, tokens: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Logits [n, K + T, vocab] of ``tokens`` [n, T] after the K visual tokens of ``images`` [n, 3, 32, 32].

        Padding goes after the end (right): causal attention never lets a real token see it. A text-only
        record has a zero image, as LLaVA trains them. The head is the token embedding (tied)."""
        return self.hidden(tokens, self.visual_tokens(images)) @ self.embed.weight.T


def build(config: VLMConfig, seed: int, vision: nn.Module, vision_dim: int) -> MiniVLM:
    """A model around a (trained) vision tower; the projector and decoder drawn from ``seed`` with GPT-2's
    init (normal(0, 0.02), zero biases, unit gains)."""
    model = MiniVLM(config, vision, vision_dim)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("vision."):
                continue
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            elif "weight" in name and "ln" in name:
                p.fill_(1.0)
            else:
                p.zero_()
    return model


# --------------------------------------------------------------------------- the tokenizer


def train_tokenizer(texts: Sequence[str], vocab: int):
    """A byte-level BPE tokenizer (Hugging Face ``tokenizers``, GPT-2's pre-tokenizer) of ``vocab`` ids trained
    on ``texts``, ids 0-2 the specials. The trainer is deterministic for the same texts in the same order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def load_tokenizer(text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


def prompt(question: str) -> str:
    return f"USER: {question} ASSISTANT:"


def encode_conversation(tok, turns: Turns, limit: int) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation (``BOS`` first) and, per id, whether the loss counts it (answers and their
    ``</s>``); cut at ``limit`` ids."""
    ids, target = [BOS], [False]
    for q, a in turns:
        p = tok.encode(("" if len(ids) == 1 else " ") + prompt(q)).ids
        r = tok.encode(" " + a).ids + [EOS]
        ids += p + r
        target += [False] * len(p) + [True] * len(r)
        if len(ids) >= limit:
            break
    return ids[:limit], target[:limit]


def decode(tok, ids: Sequence[int]) -> str:
    return tok.decode([i for i in ids if i > EOS]).strip()


# --------------------------------------------------------------------------- data


def load_images(images: Sequence[bytes | None], *, strict: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode images to [n, 3, 32, 32] floats in [0, 1] (resized when not 32x32) and a has-image mask; None
    (a text-only record) is a zero image. An undecodable file raises, or with ``strict=False`` is a zero image
    with no has-image flag (the proxy scores such a row null)."""
    from PIL import Image

    out = np.zeros((len(images), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    has = np.zeros(len(images), dtype=bool)
    for i, data in enumerate(images):
        if data is None:
            continue
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB")
                if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                    im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
                out[i] = np.asarray(im)
        except Exception:  # noqa: BLE001 - any undecodable file: the caller decides
            if strict:
                raise
            continue
        has[i] = True
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255), torch.from_numpy(has)


@dataclass
class Encoded:
    """Conversations as padded id and target tensors, with their images."""

    ids: torch.Tensor  # long [n, T], PAD after the end
    target: torch.Tensor  # bool [n, T]: the loss counts this id (predicted from the one before)
    length: torch.Tensor  # long [n]
    images: torch.Tensor  # float [n, 3, 32, 32]

    def __len__(self) -> int:
        return len(self.length)

    def batch(self, idx: torch.Tensor, device: str) -> tuple[torch.Tensor, ...]:
        """A batch cut to its longest row."""
        t = int(self.length[idx].max())
        return self.ids[idx, :t].to(device), self.target[idx, :t].to(device), self.images[idx].to(device)


def encode_texts(tok, conversations: Sequence[Turns], config: VLMConfig,
                 dtype: torch.dtype = torch.long) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The conversations' ids [n, T] (``dtype``, PAD after the end), targets [n, T] and lengths [n], each cut
    at the text's share of the context."""
    limit = config.context - config.visual_tokens
    rows = [encode_conversation(tok, turns, limit) for turns in conversations]
    t = max((len(ids) for ids, _ in rows), default=1)
    ids = torch.full((len(rows), t), PAD, dtype=dtype)
    target = torch.zeros((len(rows), t), dtype=torch.bool)
    for i, (row, mask) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=dtype)
        target[i, : len(mask)] = torch.tensor(mask)
    return ids, target, torch.tensor([len(r) for r, _ in rows], dtype=torch.long)


def encode(tok, conversations: Sequence[Turns], images: Sequence[bytes | None], config: VLMConfig) -> Encoded:
    return Encoded(*encode_texts(tok, conversations, config), load_images(images)[0])


def turns_of(record: str | dict) -> Turns:
    """A LLaVA record's (human, gpt) pairs, ``<image>`` removed; turns before the first human turn skipped."""
    rec = json.loads(record) if isinstance(record, str) else record
    out: Turns = []
    question = None
    for turn in rec.get("conversations", []):
        role, value = str(turn.get("from", "")).lower(), str(turn.get("value", ""))
        value = value.replace("<image>", "").strip()
        if role in ("human", "user"):
            question = value
        elif role in ("gpt", "assistant") and question is not None:
            out.append((question, value))
            question = None
    return out


# --------------------------------------------------------------------------- training and scoring


def token_losses(model: MiniVLM, ids: torch.Tensor, target: torch.Tensor,
                 images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy [n, T-1] of predicting ids[:, 1:] and the mask of the counted tokens."""
    logits = model(ids, images)[:, model.config.visual_tokens:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    return nll, target[:, 1:]


def row_losses(nll: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Mean loss per row over its counted tokens (NaN for a row with none)."""
    return (nll * counted).sum(1) / counted.sum(1)


def train(model: MiniVLM, data: Encoded, recipe: VLMRecipe, *, device: str = "cpu",
          progress: Callable[[int], None] | None = None,
          callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> MiniVLM:
    """Train on ``data`` (loss on the counted tokens, mean over the batch's tokens, as LLaVA's trainer takes
    it); batches are consecutive slices of a seeded permutation per epoch. ``callback(step, idx, losses)``
    gets each batch's per-row losses."""
    n = len(data)
    batch = min(recipe.batch_size, n)
    per_epoch = max(1, n // batch)
    params = [p for name, p in model.named_parameters()
              if not (recipe.freeze_vision and name.startswith("vision."))]
    for name, p in model.named_parameters():
        p.requires_grad_(any(p is q for q in params))
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(recipe.seed)
    cuda = torch.device(device).type == "cuda"
    model.to(device).train()
    if recipe.freeze_vision:
        model.vision.eval()  # frozen means its batch norms too: their statistics stay, and features don't depend on the batch
    batches: list[torch.Tensor] = []
    with deterministic_algorithms(cuda), torch_threads(None if cuda else recipe.threads):
        for step in range(recipe.steps):
            slot = step % per_epoch
            if slot == 0:
                batches = length_grouped(data.length, batch, per_epoch, gen)
            idx = batches[slot]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, recipe.steps, recipe.lr, recipe.warmup)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                nll, counted = token_losses(model, *data.batch(idx, device))
            loss = (nll * counted).sum() / counted.sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if progress is not None:
                progress(1)
            if callback is not None:
                callback(step, idx, row_losses(nll.detach(), counted).float().cpu())
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def length_grouped(length: torch.Tensor, batch: int, count: int, gen: torch.Generator,
                   group: int = 16) -> list[torch.Tensor]:
    """An epoch's ``count`` batches: a seeded permutation cut into groups of ``group`` batches, each group
    sorted by length and cut into batches, the batches shuffled. What LLaVA's ``group_by_modality_length``
    does for the same reason: batches of similar lengths carry little padding (training here runs about
    twice as fast), while every batch still draws from a random sample of the data."""
    order = torch.randperm(len(length), generator=gen)[: count * batch]
    out = []
    for start in range(0, len(order), group * batch):
        chunk = order[start:start + group * batch]
        chunk = chunk[torch.argsort(length[chunk], stable=True)]
        out += [chunk[k:k + batch] for k in range(0, len(chunk), batch)]
    return [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]


@torch.no_grad()
def answer_losses(model: MiniVLM, data: Encoded, *, batch_size: int = 256, device: str = "cpu",
                  threads: int | None = 2) -> np.ndarray:
    """Mean loss of each row's counted (answer) tokens under ``model``: float64 [n]."""
    out = np.empty(len(data))
    order = torch.argsort(data.length, stable=True)  # batches of similar lengths: little padding
    model.to(device).eval()
    with torch_threads(threads if torch.device(device).type == "cpu" else None):
        for start in range(0, len(data), batch_size):
            idx = order[start:start + batch_size]
            nll, counted = token_losses(model, *data.batch(idx, device))
            out[idx.numpy()] = row_losses(nll, counted).double().cpu().numpy()
    return out


@torch.no_grad()
def generate(model: MiniVLM, tok, questions: Sequence[str], images: torch.Tensor, *, max_new: int,
             batch_size: int = 200, device: str = "cpu") -> list[str]:
    """Greedy answers to one-turn ``questions``, decoding until ``</s>``. Prompts are batched by length, so
    no batch needs padding."""
    model.to(device).eval()
    prompts = [[BOS] + tok.encode(prompt(q)).ids for q in questions]
    answers: list[str] = [""] * len(questions)
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    limit = model.config.context - model.config.visual_tokens
    for t, rows in sorted(by_length.items()):
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            ids = torch.tensor([prompts[i] for i in part], device=device)
            img = images[part].to(device)
            done = torch.zeros(len(part), dtype=torch.bool, device=device)
            for _ in range(min(max_new, limit - t)):
                nxt = model(ids, img)[:, -1].argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, EOS), nxt)
                ids = torch.cat([ids, nxt[:, None]], 1)
                done |= nxt == EOS
                if bool(done.all()):
                    break
            for i, row in zip(part, ids[:, t:].cpu().tolist()):
                answers[i] = decode(tok, row[: row.index(EOS)] if EOS in row else row)
    return answers


@torch.no_grad()
def choice_scores(model: MiniVLM, tok, questions: Sequence[str], choices: Sequence[Sequence[str]],
                  images: torch.Tensor, *, device: str = "cpu") -> list[int]:
    """The index of each question's most likely answer among its choices: the highest mean log-likelihood
    per token of the answer and its ``</s>`` (a sum would favour the answer of fewer tokens)."""
    flat_q, flat_a, owner = [], [], []
    for i, (q, cs) in enumerate(zip(questions, choices)):
        for c in cs:
            flat_q.append(q)
            flat_a.append(c)
            owner.append(i)
    data = Encoded(*encode_texts(tok, [[(q, a)] for q, a in zip(flat_q, flat_a)], model.config), images[owner])
    model.to(device).eval()
    totals = np.empty(len(flat_q))
    for start in range(0, len(flat_q), 256):
        idx = torch.arange(start, min(start + 256, len(flat_q)))
        nll, counted = token_losses(model, *data.batch(idx, device))
        totals[start:start + len(idx)] = -row_losses(nll, counted).double().cpu().numpy()
    best, k = [], 0
    for cs in choices:
        best.append(int(np.argmax(totals[k:k + len(cs)])))
        k += len(cs)
    return best
