"""Instruction-Following Difficulty: how much the question helps a language model predict the answer.

Cherry LLM (Li et al., NAACL 2024, tianyi-lab/Cherry_LLM) defines
``IFD(Q, A) = s(A | Q) / s(A)``, each ``s`` the mean cross-entropy of the
answer's tokens, with and without the question in the prompt. Near or above 1
the question does not help (the pair is easy, or the answer does not follow
from it); Cherry keeps the highest IFD among those not above 1.
Superfiltering (Li et al., ACL 2024, tianyi-lab/Superfiltering) computes the
same ratio with GPT-2, as a ratio of perplexities, and keeps ``IFD < 1``.

``ifd(question, answer, checkpoint="", template="alpaca", ratio="loss", max_length=512)``:

- the LM: with no checkpoint, ``cbdsl-tiny-lm`` (:mod:`cbdsl.scorers.models.lm`)
  with a 512-byte context, trained on the pool's own prompted pairs (in id
  order, cached under the pool's ``scores/models``); with ``checkpoint="NAME"``,
  the pool's ``model`` asset of that name (a ``save_pretrained`` directory,
  e.g. GPT-2 for Superfiltering).
- ``template="alpaca"`` (Cherry's ``--prompt alpaca``, the one its scripts
  run): the prompt is Alpaca's no-input template around the question, and the
  answer alone follows ``"### Response:"``. ``template="none"``
  (Superfiltering's ``PROMPT_DICT_NONE``): the prompt is ``question + "\\n"``,
  the answer alone is bare.
- ``ratio="loss"`` is Cherry's ``mean_2 / mean_1`` of the token losses;
  ``ratio="perplexity"`` is Superfiltering's ``ppl_A_condition / ppl_A_direct``,
  ``exp(s(A|Q) - s(A))``. Both are above 1 exactly when ``s(A|Q) > s(A)``.
- truncation: the prompted pair is cut to ``min(max_length, the model's
  context)`` tokens; only the answer tokens that fit are scored, and ``s(A)``
  averages over those same tokens. A row whose prompt leaves no room for an
  answer token, or with a null or empty answer, scores null.

Departures from the reference code (catalogue ``ifd``/``superfiltering``):
prompt, response prefix and answer are tokenized apart and joined (Cherry
tokenizes the whole text and finds the answer's first token by tokenizing
the text before it), so both averages cover the same answer tokens; every
sequence starts with the tokenizer's BOS token (GPT-2's EOS where it has none),
so the first answer token is scored without the question too (Superfiltering's
GPT-2 run leaves it out of ``s(A)``); an answer cut by the context is scored
on its part that fits, where Cherry drops the row; no EOS is appended to the
answer (as in both).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field, field_validator

from cbdsl.scorers.models.assets import asset_name, model_asset
from cbdsl.scorers.registry import Input, Params, model_scorer

FORMAT = 1  # how the sequences are built and scored; part of the cache key

#: Cherry_LLM cherry_seletion/data_analysis.py PROMPT_DICT["prompt_no_input"], split around the instruction.
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n", "\n\n### Response:")
#: (before the question, after it, before the answer alone) per template.
TEMPLATES: dict[str, tuple[str, str, str]] = {
    "alpaca": (*ALPACA, "### Response:"),
    "none": ("", "\n", ""),  # Superfiltering code_ifd/data_analysis.py PROMPT_DICT_NONE["prompt_no_input"]
}
TINY_CONTEXT = 512  # bytes of context of the tiny LM that ifd trains (Cherry's max_length is 512 tokens)


class IfdParams(Params):
    checkpoint: str = Field(
        default="",
        description="a model asset of the pool: a transformers causal-LM directory (save_pretrained), e.g. GPT-2 "
                    "for Superfiltering; empty: train cbdsl-tiny-lm on the pool's prompted pairs",
    )
    template: Literal["alpaca", "none"] = Field(
        default="alpaca",
        description='the prompt: "alpaca" (Cherry: Alpaca\'s template; the answer alone after "### Response:") '
                    'or "none" (Superfiltering: the question and a newline; the answer alone bare)',
    )
    ratio: Literal["loss", "perplexity"] = Field(
        default="loss",
        description='"loss": s(A|Q) / s(A) of the mean token losses (Cherry); "perplexity": their perplexities\' '
                    "ratio (Superfiltering)",
    )
    max_length: int = Field(default=512, ge=2, le=1 << 20,
                            description="tokens of prompt and answer scored at most (Cherry: 512), within the "
                                        "model's context")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_asset(cls, value: str) -> str:
        return asset_name("checkpoint", value) if value else value


def _version(params: IfdParams) -> str:
    if params.checkpoint:
        return f"ifd/{FORMAT}|checkpoint:{params.checkpoint}"
    return f"ifd/{FORMAT}|" + _lm().checkpoint_version("") + f"|context={TINY_CONTEXT}"


@model_scorer("ifd", inputs=[Input("question", "str"), Input("answer", "str")], params=IfdParams, output="float",
              cost="cpu_model", method="ifd", population=True, version=_version)
def ifd(ctx, question, answer):
    """IFD: the answer's mean token loss given the question over its loss alone (Cherry LLM, Superfiltering)."""
    import numpy as np
    import polars as pl

    p = ctx.params
    before, after, alone = TEMPLATES[p.template]
    questions, answers = question.to_list(), answer.to_list()
    if p.checkpoint:
        model = _lm().load_checkpoint(*model_asset(ctx.pool, p.checkpoint, "the ifd parameter `checkpoint`"),
                                      ctx.device, p.checkpoint)
    else:
        order = np.argsort(np.asarray([str(i) for i in ctx.ids.to_list()], dtype=object), kind="stable")
        texts = [None if questions[i] is None or answers[i] is None else before + questions[i] + after + answers[i]
                 for i in order]
        model = _lm().tiny_lm(texts, ctx.workdir, ctx.device, replace(_lm().SPEC, n_positions=TINY_CONTEXT))
    ctx.expect(2 * len(questions))
    s_cond, s_alone = answer_losses(model, questions, answers, (before, after, alone), p.max_length, ctx.progress)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = s_cond / s_alone if p.ratio == "loss" else np.exp(s_cond - s_alone)
    values[~np.isfinite(values)] = np.nan
    return pl.Series("ifd", values, dtype=pl.Float64).fill_nan(None)


def answer_losses(model, questions, answers, template: tuple[str, str, str], max_length: int,
                  progress=lambda n: None):
    """(s(A|Q), s(A)) per row: the mean NLL of the same answer tokens after the prompted question and after
    the answer-alone prefix (NaN where no answer token is scored)."""
    import numpy as np

    n = len(questions)
    seqs, first = pair_token_sequences(model, questions, answers, template, min(max_length, model.max_len))
    total, count = _lm().sequence_nll(model, seqs, progress, first)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean[:n], mean[n:]


def pair_token_sequences(model, questions, answers, template: tuple[str, str, str], max_len: int):
    """The 2n sequences (n prompted pairs, then n answers alone) and each one's first scored position.

    ``[start] + before + question + after + answer`` and ``[start] + alone + answer``, each part tokenized
    by itself; both keep the answer tokens that fit after the prompt in ``max_len``. A row with a null
    input, no answer token or a prompt that fills the context is None in both.
    """
    import numpy as np

    before, after, alone = template
    n = len(questions)
    ok = [q is not None and a is not None and a != "" for q, a in zip(questions, answers, strict=True)]
    prompts = _encode(model, [before + q + after if good else None for q, good in zip(questions, ok)])
    bodies = _encode(model, [a if good else None for a, good in zip(answers, ok)])
    (prefix,) = _encode(model, [alone])
    start = _start_token(model)
    lead = [] if start is None else [start]
    seqs: list = [None] * (2 * n)
    first = np.zeros(2 * n, dtype=np.int64)
    for i in range(n):
        if not ok[i]:
            continue
        prompt, body = prompts[i], bodies[i]
        skip = 1 if not lead and not len(prefix) else 0  # nothing before the answer alone: its first token is context
        keep = min(len(body), max_len - len(lead) - len(prompt))
        if keep - skip < 1:
            continue
        seqs[i] = np.asarray([*lead, *prompt, *body[:keep]], dtype=np.int64)
        seqs[n + i] = np.asarray([*lead, *prefix, *body[:keep]], dtype=np.int64)
        first[i] = len(lead) + len(prompt) + skip
        first[n + i] = len(lead) + len(prefix) + skip
    return seqs, first


def _encode(model, texts) -> list:
    """Token ids of each text without special tokens (bytes + 3 for the byte tokenizer); None stays None."""
    import numpy as np

    if model.tokenizer is None:
        return [None if t is None else np.frombuffer(t.encode("utf-8", errors="replace"), dtype=np.uint8)
                .astype(np.int64) + _lm().BYTE_OFFSET for t in texts]
    out: list = [None] * len(texts)
    present = [i for i, t in enumerate(texts) if t is not None]
    for lo in range(0, len(present), 1024):
        index = present[lo:lo + 1024]
        ids = model.tokenizer([texts[i] for i in index], add_special_tokens=False)["input_ids"]
        for i, seq in zip(index, ids, strict=True):
            out[i] = np.asarray(seq, dtype=np.int64)
    return out


def _start_token(model) -> int | None:
    """The token every sequence starts with: BOS, else EOS (GPT-2's <|endoftext|>), as lm.tokenize does."""
    if model.tokenizer is None:
        return _lm().EOS
    tok = model.tokenizer
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


def _lm():
    """The model module `lm` (NumPy and torch), imported when the scorer runs, not when `cbdsl check` loads this module."""
    import cbdsl.scorers.models.lm as lm  # NumPy and torch: off `cbdsl check`

    return lm
