"""`ifd(question, answer)`: Cherry LLM's and Superfiltering's ratio against the formula computed here.

s(A|Q) and s(A) are recomputed independently of the scorer: one sequence at a
time through the model (no batching, no padding), log-softmax in float64, the
answer's positions written out from the tokenizer's own output. A random GPT-2
with a GPT-2-style byte-level BPE tokenizer (no BOS: the EOS starts each
sequence) stands in for Superfiltering's GPT-2; cbdsl-tiny-lm covers the
no-checkpoint path end to end.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cbdsl.pipelines.data.writing import add_asset
from cbdsl.scorers import ifd as ifd_mod
from cbdsl.scorers.api import RunError, ScoreContext
from cbdsl.scorers.registry import registry
from cbdsl.stages import check_source
from conftest_pools import make_pool, run_policy

CONTEXT = 64  # the random GPT-2's context: long pairs are cut

PAIRS = [
    ("What is in the picture?", "A cat sitting on a mat."),
    ("Describe the image in detail.", "The dog runs on the grass, and a red ball flies over it."),
    ("How many birds are there?", "2"),
    ("Is it raining?", ""),  # an empty answer: null (Superfiltering skips it)
    (None, "A cat."),
    ("Name the color.", None),
    ("What is in the picture? " * 12, "A cat."),  # the prompt fills the context: null
    ("Why?", "Because " + "the cat sat on the mat and the dog ran. " * 6),  # the answer is cut at the context
]
CORPUS = [q or "" for q, _ in PAIRS] + [a or "" for _, a in PAIRS] + [*ifd_mod.TEMPLATES["alpaca"]] * 20


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory) -> Path:
    """A random GPT-2 (save_pretrained) with a byte-level BPE tokenizer whose only special token is EOS."""
    import tokenizers
    import torch
    import transformers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    path = tmp_path_factory.mktemp("ckpt") / "gpt2-ish"
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    assert fast.bos_token_id is None and fast.eos_token_id is not None
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=CONTEXT, n_embd=32, n_layer=2,
                                     n_head=2, bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def _pool(path: Path, pairs=PAIRS):
    return make_pool(path, {"id": [f"r{i}" for i in range(len(pairs))], "question": [q for q, _ in pairs],
                            "answer": [a for _, a in pairs]})


def _compute(pool, n: int, questions, answers, workdir: Path | None = None, **params) -> list:
    entry = registry().get("ifd")
    ctx = ScoreContext(params=entry.params(**params), pool=pool, ids=pl.Series([f"r{i}" for i in range(n)]),
                       device="cpu", workdir=workdir or Path("."))
    return entry.compute(ctx, pl.Series(questions, dtype=pl.String), pl.Series(answers, dtype=pl.String)).to_list()


def mean_answer_nll(model, ids: list[int], answer_from: int) -> float:
    """mean over t >= answer_from of -log p(ids[t] | ids[:t]), from this one sequence's logits in float64."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    nll = [-float(logp[t - 1, ids[t]]) for t in range(answer_from, len(ids))]
    return sum(nll) / len(nll)


def reference(model, tok, question, answer, template: str, max_len: int) -> tuple[float, float] | None:
    """(s(A|Q), s(A)) as the module docstring states the rule, or None where the row scores null."""
    before, after, alone = ifd_mod.TEMPLATES[template]
    if question is None or not answer:
        return None
    start = [tok.eos_token_id]
    prompt = tok(before + question + after, add_special_tokens=False)["input_ids"]
    prefix = tok(alone, add_special_tokens=False)["input_ids"] if alone else []
    body = tok(answer, add_special_tokens=False)["input_ids"]
    keep = min(len(body), max_len - 1 - len(prompt))
    if keep < 1:
        return None
    cond = mean_answer_nll(model, start + prompt + body[:keep], 1 + len(prompt))
    bare = mean_answer_nll(model, start + prefix + body[:keep], 1 + len(prefix))
    return cond, bare


@pytest.mark.parametrize("template", ["alpaca", "none"])
def test_ifd_of_a_checkpoint_is_the_ratio_of_answer_losses(gpt2_checkpoint, tmp_path, template) -> None:
    import transformers

    pool = add_asset(_pool(tmp_path / "pool").path, "gpt2", gpt2_checkpoint, kind="model")
    questions, answers = [q for q, _ in PAIRS], [a for _, a in PAIRS]
    model = transformers.AutoModelForCausalLM.from_pretrained(gpt2_checkpoint).eval()
    tok = transformers.AutoTokenizer.from_pretrained(gpt2_checkpoint)
    by_loss = _compute(pool, len(PAIRS), questions, answers, checkpoint="gpt2", template=template)
    by_ppl = _compute(pool, len(PAIRS), questions, answers, checkpoint="gpt2", template=template,
                      ratio="perplexity")
    scored = []
    for i, ((q, a), loss_ratio, ppl_ratio) in enumerate(zip(PAIRS, by_loss, by_ppl, strict=True)):
        ref = reference(model, tok, q, a, template, CONTEXT)
        if ref is None:
            assert loss_ratio is None and ppl_ratio is None, (q, a)
            continue
        scored.append(i)
        cond, bare = ref
        assert loss_ratio == pytest.approx(cond / bare, rel=1e-5, abs=1e-7)
        assert ppl_ratio == pytest.approx(math.exp(cond) / math.exp(bare), rel=1e-5, abs=1e-7)
    assert scored == [0, 1, 2, 7]  # nulls: an empty answer, a null input, a prompt that fills the context
    body = tok(PAIRS[7][1], add_special_tokens=False)["input_ids"]
    prompt = tok("".join(ifd_mod.TEMPLATES[template][:1]) + PAIRS[7][0] + ifd_mod.TEMPLATES[template][1])["input_ids"]
    assert 1 + len(prompt) + len(body) > CONTEXT  # the last one is scored on the part of its answer that fits


def test_max_length_cuts_below_the_model_context(gpt2_checkpoint, tmp_path) -> None:
    import transformers

    pool = add_asset(_pool(tmp_path / "pool").path, "gpt2", gpt2_checkpoint, kind="model")
    model = transformers.AutoModelForCausalLM.from_pretrained(gpt2_checkpoint).eval()
    tok = transformers.AutoTokenizer.from_pretrained(gpt2_checkpoint)
    q, a = PAIRS[1]
    got = _compute(pool, 1, [q], [a], checkpoint="gpt2", template="none", max_length=16)[0]
    cond, bare = reference(model, tok, q, a, "none", 16)
    assert got == pytest.approx(cond / bare, rel=1e-5)
    assert got != pytest.approx(_compute(pool, 1, [q], [a], checkpoint="gpt2", template="none")[0], rel=1e-6)


def test_the_answer_mask_counts_exactly_the_answer_tokens(gpt2_checkpoint) -> None:
    """The scored tokens of both sequences are the answer's, token for token; the prompt is never counted."""
    import transformers

    from cbdsl.scorers.models import lm

    model = lm.load_checkpoint(gpt2_checkpoint, "x", "cpu")
    tok = transformers.AutoTokenizer.from_pretrained(gpt2_checkpoint)
    questions, answers = [q for q, _ in PAIRS], [a for _, a in PAIRS]
    for template in ("alpaca", "none"):
        seqs, first = ifd_mod.pair_token_sequences(model, questions, answers, ifd_mod.TEMPLATES[template], CONTEXT)
        n = len(PAIRS)
        for i, (q, a) in enumerate(PAIRS):
            if seqs[i] is None:
                assert seqs[n + i] is None
                continue
            body = tok(a, add_special_tokens=False)["input_ids"]
            cond, bare = seqs[i].tolist(), seqs[n + i].tolist()
            assert cond[first[i]:] == bare[first[n + i]:] == body[:len(cond) - first[i]]
            before, after, alone = ifd_mod.TEMPLATES[template]
            assert cond[:first[i]] == [tok.eos_token_id, *tok(before + q + after, add_special_tokens=False)["input_ids"]]
            assert len(cond) <= CONTEXT
        # sequence_nll counts exactly the tokens from `first` on
        total, count = lm.sequence_nll(model, seqs, first=first)
        lengths = np.array([0 if s is None else len(s) for s in seqs])
        np.testing.assert_array_equal(count, np.where(lengths > 0, lengths - first, 0))


def test_a_question_that_helps_lowers_ifd_with_the_tiny_lm(tmp_path, monkeypatch) -> None:
    """cbdsl-tiny-lm end to end (a policy on a pool): trained on the prompted pairs, it predicts an answer
    that copies its question better with the question than without, so IFD < 1; the scores are the saved
    model's formula, and a second run reads the trained model back."""
    import transformers

    from cbdsl.scorers.models import lm

    monkeypatch.setattr(lm, "SPEC", lm.TinyLMSpec(steps=120, batch_size=16, warmup=10, n_layer=1, n_embd=64,
                                                  n_head=2))
    rng = np.random.default_rng(5)
    words = ["red", "blue", "green", "cat", "dog", "bird", "mat", "sky", "tree", "ball"]
    pairs = []
    for _ in range(60):
        phrase = " ".join(rng.choice(words, 4))
        pairs.append((f"Repeat: {phrase}", phrase))
    pool = _pool(tmp_path / "pool", pairs)
    policy = 'pool "t"\nlet d = ifd(question, answer, template="none")\nselect top d\n'
    _c, result = run_policy(policy, pool, explain=True)
    got = result.frame.sort("id")["d"].to_numpy()
    assert np.isfinite(got).all() and np.median(got) < 1
    (saved,) = (pool.scores_dir / "models" / "perplexity").glob("cbdsl-tiny-lm-*")
    model = transformers.GPT2LMHeadModel.from_pretrained(saved).eval()
    assert model.config.n_positions == ifd_mod.TINY_CONTEXT
    for i in range(3):
        q, a = pairs[i]
        q_ids = [b + lm.BYTE_OFFSET for b in (q + "\n").encode()]
        a_ids = [b + lm.BYTE_OFFSET for b in a.encode()]
        cond = mean_answer_nll(model, [lm.EOS, *q_ids, *a_ids], 1 + len(q_ids))
        bare = mean_answer_nll(model, [lm.EOS, *a_ids], 1)
        row = int(np.flatnonzero(result.frame.sort("id")["id"].to_numpy() == f"r{i}")[0])
        assert got[row] == pytest.approx(cond / bare, rel=1e-5)
    stamp = (saved / "config.json").stat().st_mtime_ns
    for cached in pool.scores_dir.glob("ifd-*.parquet"):
        cached.unlink()
    again = run_policy(policy, pool, explain=True)[1].frame.sort("id")["d"].to_numpy()
    assert (saved / "config.json").stat().st_mtime_ns == stamp  # loaded, not trained again
    assert again.tobytes() == got.tobytes()


def test_the_tiny_lm_does_not_depend_on_the_row_order(tmp_path, monkeypatch) -> None:
    from cbdsl.scorers.models import lm

    monkeypatch.setattr(lm, "SPEC", lm.TinyLMSpec(steps=3, batch_size=4, warmup=1))
    questions, answers = [q for q, _ in PAIRS], [a for _, a in PAIRS]
    ids = [f"r{i}" for i in range(len(PAIRS))]
    perm = [5, 2, 7, 0, 3, 6, 1, 4]
    entry = registry().get("ifd")

    def run(order, workdir):
        ctx = ScoreContext(params=entry.params(template="none"), pool=None, ids=pl.Series([ids[i] for i in order]),
                           device="cpu", workdir=workdir)
        values = entry.compute(ctx, pl.Series([questions[i] for i in order], dtype=pl.String),
                               pl.Series([answers[i] for i in order], dtype=pl.String)).to_list()
        return dict(zip([ids[i] for i in order], values, strict=True))

    assert run(range(len(PAIRS)), tmp_path / "a") == run(perm, tmp_path / "b")


def test_bad_parameters_and_assets_are_clear_errors(tmp_path) -> None:
    schema = {"id": "str", "question": "str", "answer": "str"}
    for call, words in (('ifd(question, answer, template="wiz")', 'must be one of "alpaca", "none"'),
                        ('ifd(question, answer, ratio="ppl")', 'must be one of "loss", "perplexity"'),
                        ('ifd(question, answer, checkpoint="/models/gpt2")', "never a file"),
                        ("ifd(question, answer, max_length=1)", "at least 2"),
                        ("ifd(question)", "")):
        _p, diags = check_source(f'pool "t"\nlet s = {call}\nselect top s\n', "p.cur", schema)
        errors = [d for d in diags if d.is_error]
        assert errors and words in errors[0].message, (call, [d.message for d in errors])
    pool = _pool(tmp_path / "pool")
    with pytest.raises(RunError, match="does not have") as err:
        _compute(pool, 1, ["q"], ["a"], checkpoint="gpt2")
    assert "add-asset" in " ".join(err.value.hints)
