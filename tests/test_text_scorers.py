"""Text scorers: dup_key, token_count, lang / lang_score, dsir, perplexity and ccnet_bucket.

Each formula is checked against an independent computation on a small case:
normalization and hashes in plain Python, token counts with ``re`` and the
``tokenizers`` library, language ids with py3langid's own ``classify``, DSIR's
log-ratio from counts written out by hand, perplexity from the model's logits,
CCNet's buckets from NumPy percentiles. Then small policies run end to end
(``compile_source`` -> ``lower`` -> ``execute``) on a 500-row demo pool with a
target corpus asset.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from cbdsl.pipelines.engine.kernels import hashing
from cbdsl.pipelines.data import synth
from cbdsl.pipelines.data.demo import make_demo
from cbdsl.scorers.api import RunError
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.writing import add_asset
from cbdsl.scorers.api import ScoreContext
from cbdsl.scorers import dsir as dsir_mod
from cbdsl.scorers import perplexity as ppl_mod
from cbdsl.scorers import text as text_mod
from cbdsl.scorers.registry import LowerContext, registry
from conftest_pools import make_pool, run_policy

WORDPUNCT = re.compile(r"\w+|[^\w\s]+")


def lowered(scorer_id: str, values, dtype=pl.String, pool=None, **params) -> list:
    """Evaluate a lowered (metadata) scorer on a column, as the evaluator does."""
    entry = registry().get(scorer_id)
    ctx = LowerContext(params=entry.params.model_validate(params), pool=pool)
    frame = pl.DataFrame({"x": pl.Series(values, dtype=dtype)})
    return frame.select(entry.lower(ctx, pl.col("x")).alias("out")).get_column("out").to_list()


def context(params, pool=None, ids=None, workdir: Path | None = None, n: int = 0) -> ScoreContext:
    ids = pl.Series([f"r{i:05d}" for i in range(n)] if ids is None else ids)
    return ScoreContext(params=params, pool=pool, ids=ids, device="cpu", workdir=workdir or Path("."))


# --- dup_key ----------------------------------------------------------------------------------------------


def normalize_py(text: str) -> str:
    """The documented normalization, written independently: NFKC, lowercase, drop punctuation, one space."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = "".join(c for c in t if not unicodedata.category(c).startswith("P"))
    return " ".join(t.split())


TRICKY = ["Hello, World!", "  hello   world ", "ＨＥＬＬＯ　ＷＯＲＬＤ", "ﬁne ﬁsh", "l'été — déjà vu…",
          "tabs\tand\nnewlines", "«Quoted» (text) [here]", "", "!!!", "50% off $9.99", "Straße ÇA"]


def test_dup_key_normalization_matches_an_independent_one() -> None:
    got = text_mod.normalize_text(pl.Series(TRICKY)).to_list()
    assert got == [normalize_py(t) for t in TRICKY]


def test_dup_key_of_text_is_the_stable_hash_of_the_normalized_text() -> None:
    keys = lowered("dup_key", [*TRICKY, None])
    expected = [f"{h:016x}" for h in hashing.hash_strings([normalize_py(t) for t in TRICKY]).tolist()]
    assert keys == [*expected, None]
    assert keys[0] == keys[1] == keys[2]  # same words, other case, spacing, punctuation and width
    assert len(set(keys[:-1])) == len(TRICKY) - 2 - 1  # the first three share a key, and "" and "!!!" do
    # pinned: the key must never change across versions (a dedup key is stored and compared)
    assert lowered("dup_key", ["Hello, world!"]) == [f"{hashing.hash_strings(['hello world'])[0]:016x}"]
    assert lowered("dup_key", ["abc"]) == ["0dd490490804b508"]


def test_dup_key_of_image_bytes_is_their_sha256() -> None:
    blobs = [b"\x89PNG\r\n\x1a\nabc", b"\x89PNG\r\n\x1a\nabd", b"\x89PNG\r\n\x1a\nabc", None]
    assert lowered("dup_key", blobs, dtype=pl.Binary) == [
        hashlib.sha256(blobs[0]).hexdigest(), hashlib.sha256(blobs[1]).hexdigest(),
        hashlib.sha256(blobs[0]).hexdigest(), None]


def test_dedup_exact_on_dup_key(tmp_path) -> None:
    images = [b"img-a", b"img-a", b"img-b", b"img-c", b"img-b"]
    pool = make_pool(tmp_path / "p", {
        "id": ["a", "b", "c", "d", "e"],
        "text": ["A red circle.", "a red   circle", "A RED CIRCLE!", "a blue square", "a blue square"],
        "image": pl.Series(images, dtype=pl.Binary),
    })
    _c, by_text = run_policy('pool "t"\ndedup exact(dup_key(text))\n', pool)
    assert by_text.after_dedup == 2
    _c, by_image = run_policy('pool "t"\ndedup exact(dup_key(image))\n', pool)
    assert by_image.after_dedup == 3


# --- token_count ------------------------------------------------------------------------------------------

SENTENCES = ["Hello, world!", "A photo of a cat... on a mat?!", "naïve café", "", "  spaced   out  ", "日本語の文"]


def test_token_count_builtin_tokenizers() -> None:
    assert lowered("token_count", SENTENCES) == [len(WORDPUNCT.findall(s)) for s in SENTENCES]
    assert lowered("token_count", SENTENCES, tokenizer="whitespace") == [len(s.split()) for s in SENTENCES]
    assert lowered("token_count", SENTENCES, tokenizer="bytes") == [len(s.encode()) for s in SENTENCES]
    assert lowered("token_count", SENTENCES, tokenizer="chars") == [len(s) for s in SENTENCES]
    assert lowered("token_count", ["a b", None]) == [2, None]
    assert registry().get("token_count").signature() == 'token_count(text, tokenizer="wordpunct")'


def _word_tokenizer(path: Path):
    import tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"[UNK]": 0, "[BOS]": 1, "[EOS]": 2, "[PAD]": 3}
    for w in "a photo of the cat dog on mat hello world , ! . ? red blue circle square".split():
        vocab.setdefault(w, len(vocab))
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return tok


def _text_pool(path: Path) -> Pool:
    return make_pool(path, {"id": [f"r{i}" for i in range(len(SENTENCES))], "text": SENTENCES})


def test_token_count_with_a_tokenizer_asset(tmp_path) -> None:
    """A tokenizer.json, or a directory holding one, registered as a model asset; the policy names it."""
    tok = _word_tokenizer(tmp_path / "words" / "tokenizer.json")
    expected = [len(tok.encode(s, add_special_tokens=False).ids) for s in SENTENCES]
    pool = add_asset(_text_pool(tmp_path / "pool").path, "words-tok", tmp_path / "words" / "tokenizer.json")
    pool = add_asset(pool.path, "words-dir", tmp_path / "words", kind="model")
    assert lowered("token_count", SENTENCES, pool=pool, tokenizer="words-tok") == expected
    assert lowered("token_count", SENTENCES, pool=pool, tokenizer="words-dir") == expected
    _compiled, result = run_policy('pool "t"\nlet n = token_count(text, tokenizer="words-tok")\nfilter n >= 3\n'
                                   "select top n\n", pool)  # end to end: the run binds the pool to the lowering
    assert result.selection.get_column("id").to_list() == [
        f"r{i}" for i in sorted((i for i, n in enumerate(expected) if n >= 3), key=lambda i: -expected[i])]
    from tokenizers.pre_tokenizers import WhitespaceSplit

    tok.pre_tokenizer = WhitespaceSplit()  # new content under the same name is read anew: "Hello, world!" is 2
    tok.save(str(tmp_path / "split.json"))
    pool = add_asset(pool.path, "words-tok", tmp_path / "split.json", kind="model")
    assert lowered("token_count", SENTENCES, pool=pool, tokenizer="words-tok") == [len(s.split()) for s in SENTENCES]


def test_a_replaced_model_asset_makes_the_compiled_policy_stale(tmp_path) -> None:
    from cbdsl.stages import compile_source
    from cbdsl.pipelines.loop.artifacts import is_stale

    _word_tokenizer(tmp_path / "words.json")
    pool = add_asset(_text_pool(tmp_path / "pool").path, "words-tok", tmp_path / "words.json")
    text = 'pool "t"\nlet n = token_count(text, tokenizer="words-tok")\nselect top n\n'
    artifact = compile_source(text, "policy.cur", pool).artifact
    assert artifact["pool"]["assets"] == {"words-tok": pool.card.assets["words-tok"].sha256}
    assert is_stale(artifact, text, pool) is None
    from tokenizers.pre_tokenizers import WhitespaceSplit

    tok = _word_tokenizer(tmp_path / "other.json")
    tok.pre_tokenizer = WhitespaceSplit()
    tok.save(str(tmp_path / "other.json"))
    replaced = add_asset(pool.path, "words-tok", tmp_path / "other.json", kind="model")
    assert is_stale(artifact, text, replaced) == "asset `words-tok` of pool `t` changed since the policy was compiled"


def test_token_count_asset_errors(tmp_path) -> None:
    pool = _text_pool(tmp_path / "pool")
    (tmp_path / "corpus.txt").write_text("a doc\n")
    (tmp_path / "notok").mkdir()
    (tmp_path / "notok" / "config.json").write_text("{}")
    (tmp_path / "bad.json").write_text('{"not": "a tokenizer"}')
    pool = add_asset(pool.path, "corpus", tmp_path / "corpus.txt", kind="corpus")
    pool = add_asset(pool.path, "notok", tmp_path / "notok", kind="model")
    pool = add_asset(pool.path, "bad-tok", tmp_path / "bad.json", kind="model")
    for name, message in (("missing-tok", "which pool `t` does not have"), ("corpus", "of kind `corpus`"),
                          ("notok", "holds no tokenizer.json"), ("bad-tok", "is not a tokenizers tokenizer.json")):
        with pytest.raises(RunError, match=message) as err:
            lowered("token_count", SENTENCES, pool=pool, tokenizer=name)
        assert "add-asset" in " ".join(err.value.hints) or "save" in " ".join(err.value.hints)
    with pytest.raises(RunError, match="no pool is open"):
        lowered("token_count", SENTENCES, tokenizer="words-tok")


def test_token_count_rejects_a_misspelled_builtin() -> None:
    with pytest.raises(ValidationError, match="did you mean `wordpunct`"):
        registry().get("token_count").params.model_validate({"tokenizer": "wordpunk"})


# --- lang, lang_score -------------------------------------------------------------------------------------

LANG_CASES = [
    ("The quick brown fox jumps over the lazy dog near the river bank.", "en"),
    ("Le renard brun rapide saute par-dessus le chien paresseux près de la rivière.", "fr"),
    ("Der schnelle braune Fuchs springt über den faulen Hund am Flussufer.", "de"),
    ("El rápido zorro marrón salta sobre el perro perezoso junto al río.", "es"),
    ("A photograph of a small red circle on a white background.", "en"),
    ("Une photo d'un petit cercle rouge sur un fond blanc.", "fr"),
    ("Ein Foto eines kleinen roten Kreises auf weißem Hintergrund.", "de"),
    ("Una foto de un pequeño círculo rojo sobre un fondo blanco.", "es"),
]


@pytest.fixture(scope="module")
def langid():
    from py3langid import langid as module

    return module


def test_lang_on_sentences_in_four_languages(langid) -> None:
    texts = pl.Series([t for t, _ in LANG_CASES])
    labels = registry().get("lang").compute(context(None, n=len(texts)), texts)
    assert labels.to_list() == [code for _, code in LANG_CASES]
    scores = registry().get("lang_score").compute(context(None, n=len(texts)), texts).to_numpy()
    assert ((scores > 0.5) & (scores <= 1.0)).all()


def test_lang_kernel_matches_py3langid_classify(langid) -> None:
    identifier = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
    rng = np.random.default_rng([3, 1])
    captions = synth.caption(synth.sample_attributes(200, rng), "laion", rng)
    texts = [t for t, _ in LANG_CASES] + captions + ["SHOUTING IN CAPITALS IS STILL ENGLISH", "x", "日本語の文です"]
    labels, scores = text_mod.identify(pl.Series(texts))
    reference = [identifier.classify(t) for t in texts]
    known = [i for i, code in enumerate(labels) if code != "zxx"]
    assert [labels[i] for i in known] == [reference[i][0] for i in known]
    np.testing.assert_allclose(scores[known], [reference[i][1] for i in known], rtol=1e-4, atol=1e-6)
    # "x" has no feature: py3langid falls back to a uniform distribution, cbdsl says zxx at confidence 0
    featureless = [i for i, code in enumerate(labels) if code == "zxx"]
    assert [texts[i] for i in featureless] == ["x"] and scores[featureless[0]] == 0.0
    assert reference[featureless[0]][1] == pytest.approx(2 / len(identifier.nb_classes))


def test_lang_of_empty_and_null_text(langid) -> None:
    labels, scores = text_mod.identify(pl.Series(["", "   ", None], dtype=pl.String))
    assert labels == ["zxx", "zxx", None]
    assert scores[0] == scores[1] == 0.0 and math.isnan(scores[2])


# --- DSIR ---------------------------------------------------------------------------------------------------

# Raw pool and target, tokenized (wordpunct, lowercase) into unigrams and bigrams:
#   "a b" -> a, b, "a b"     "a c" -> a, c, "a c"     "B b" -> b, b, "b b"
# raw counts: a 2, b 3, c 1, "a b" 1, "a c" 1, "b b" 1 (N_raw = 9)
# target "a b": a 1, b 1, "a b" 1 (N_target = 3)
# With add-one smoothing over B buckets, p(f) = (count + 1) / (N + B).
TOY_POOL = ["a b", "a c", "B b"]
TOY_TARGET = ["a b"]
BIG_B = 1_000_003


def toy_log_weights(b: int) -> list[float]:
    def lr(target_count: int, raw_count: int) -> float:
        return math.log((target_count + 1) / (3 + b)) - math.log((raw_count + 1) / (9 + b))

    return [
        lr(1, 2) + lr(1, 3) + lr(1, 1),        # a, b, "a b"
        lr(1, 2) + lr(0, 1) + lr(0, 1),        # a, c, "a c"
        2 * lr(1, 3) + lr(0, 1),               # b twice, "b b"
    ]


@pytest.fixture
def toy_pool(tmp_path) -> Pool:
    pool = make_pool(tmp_path / "toy", {"id": ["d1", "d2", "d3"], "text": TOY_POOL})
    (tmp_path / "target.txt").write_text("\n".join(TOY_TARGET) + "\n")
    (tmp_path / "eval-set.jsonl").write_text('{"text": "a b"}\n')
    add_asset(pool.path, "target", tmp_path / "target.txt", kind="corpus")
    return add_asset(pool.path, "held-out", tmp_path / "eval-set.jsonl", kind="eval")


def run_dsir(pool: Pool, **params) -> np.ndarray:
    entry = registry().get("dsir")
    text = pool.scan(["text"]).collect().get_column("text")
    out = entry.compute(context(entry.params.model_validate(params), pool=pool, n=len(text)), text)
    return out.to_numpy()


def test_dsir_toy_log_ratio_by_hand(toy_pool) -> None:
    grams = ["a", "b", "c", "a b", "a c", "b b"]
    assert len(set((hashing.hash_strings(grams) % np.uint64(BIG_B)).tolist())) == len(grams)  # no collision
    expected = toy_log_weights(BIG_B)
    np.testing.assert_allclose(run_dsir(toy_pool, target="target", buckets=BIG_B, log=True), expected, rtol=1e-12)
    weights = run_dsir(toy_pool, target="target", buckets=BIG_B)
    np.testing.assert_allclose(weights, np.exp(np.array(expected) - max(expected)), rtol=1e-12)
    assert weights.max() == 1.0 and weights.argmax() == 0  # "a b" is the target itself


def test_dsir_in_a_policy_follows_its_target_asset(toy_pool, tmp_path) -> None:
    text = 'pool "t"\nlet w = dsir(text, target="target", buckets=1000003, log=true)\nselect top w\n'
    _c, first = run_policy(text, toy_pool)
    scores = dict(first.selection.select("id", "score").iter_rows())
    assert [scores[i] for i in ("d1", "d2", "d3")] == pytest.approx(toy_log_weights(BIG_B), rel=1e-12)
    (tmp_path / "other.txt").write_text("a c\n")  # a new target: the cached scores must not be reused
    pool = add_asset(toy_pool.path, "target", tmp_path / "other.txt", kind="corpus")
    _c, second = run_policy(text, pool)
    assert second.selection.get_column("id").to_list()[0] == "d2"


def test_dsir_smoothing_zero_is_the_reference_formula(toy_pool) -> None:
    b = BIG_B
    raw = {"a": 2, "b": 3, "c": 1, "a b": 1, "a c": 1, "b b": 1}
    target = {"a": 1, "b": 1, "a b": 1}

    def lr(f: str) -> float:  # the reference: log(p_target + 1e-8) - log(p_raw + 1e-8)
        return math.log(target.get(f, 0) / 3 + 1e-8) - math.log(raw[f] / 9 + 1e-8)

    expected = [lr("a") + lr("b") + lr("a b"), lr("a") + lr("c") + lr("a c"), 2 * lr("b") + lr("b b")]
    got = run_dsir(toy_pool, target="target", buckets=b, smoothing=0.0, log=True)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_dsir_features_match_python_ngrams() -> None:
    rng = np.random.default_rng([5, 2])
    texts = synth.caption(synth.sample_attributes(100, rng), "laion", rng) + ["Hello, World!! It's", "", "one"]
    rows, buckets = dsir_mod.features(pl.Series(texts), 3, 997)
    expected = []
    for i, t in enumerate(texts):
        toks = WORDPUNCT.findall(t.lower())
        grams = toks + [" ".join(toks[j:j + n]) for n in (2, 3) for j in range(len(toks) - n + 1)]
        if grams:
            expected += [(i, int(h % 997)) for h in hashing.hash_strings(grams).tolist()]
    assert sorted(zip(rows.tolist(), buckets.tolist())) == sorted(expected)


def test_dsir_asset_errors(toy_pool) -> None:
    with pytest.raises(RunError, match="does not have"):
        run_dsir(toy_pool, target="nope")
    with pytest.raises(RunError, match="kind `eval`: evaluation sets and ground truth are read only by the benchmark"):
        run_dsir(toy_pool, target="held-out")
    with pytest.raises(ValidationError):
        registry().get("dsir").params.model_validate({"target": "Not A Name"})


# --- perplexity -------------------------------------------------------------------------------------------


def independent_ppl(model, ids: list[int]) -> float:
    """exp(mean -log p(ids[t] | ids[:t])) for t >= 1, from the model's logits on this one sequence."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    nll = [-float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
    return math.exp(sum(nll) / len(nll))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random GPT-2 with a word-level tokenizer that has a BOS token, saved with save_pretrained."""
    import torch
    import transformers
    path = tmp_path_factory.mktemp("ckpt") / "tiny-gpt2"
    tok = _word_tokenizer(path / "raw-tokenizer.json")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                                pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


PPL_TEXTS = ["a photo of the cat", "hello world !", "the dog on the mat . a red circle", "cat", "", None,
             " ".join(["a red circle"] * 20)]  # longer than the 32-token context: truncated


def test_perplexity_from_a_checkpoint_equals_the_logits_formula(checkpoint, tmp_path) -> None:
    import transformers
    entry = registry().get("perplexity")
    pool = add_asset(_text_pool(tmp_path / "pool").path, "tiny-gpt2", checkpoint, kind="model")
    got = entry.compute(context(entry.params(checkpoint="tiny-gpt2"), pool=pool, n=len(PPL_TEXTS)),
                        pl.Series(PPL_TEXTS, dtype=pl.String)).to_list()
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
    for text, value in zip(PPL_TEXTS, got, strict=True):
        if text is None:
            assert value is None
            continue
        ids = [tok.bos_token_id, *tok(text)["input_ids"]][:32]
        if len(ids) < 2:
            assert value is None
        else:
            assert value == pytest.approx(independent_ppl(model, ids), rel=1e-5)


def test_perplexity_checkpoint_asset_errors(checkpoint, tmp_path) -> None:
    entry = registry().get("perplexity")
    (tmp_path / "ids.txt").write_text("r0\n")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"model_type": "nope"}')
    pool = add_asset(_text_pool(tmp_path / "pool").path, "some-ids", tmp_path / "ids.txt", kind="ids")
    pool = add_asset(pool.path, "junk", tmp_path / "junk", kind="model")
    for name, message in (("tiny-gpt", "which pool `t` does not have"), ("some-ids", "of kind `ids`"),
                          ("junk", "checkpoint `junk` is not a transformers causal LM")):
        with pytest.raises(RunError, match=message) as err:
            entry.compute(context(entry.params(checkpoint=name), pool=pool, n=2), pl.Series(["a", "b"]))
        assert "add-asset" in " ".join(err.value.hints)


@pytest.fixture
def quick_lm(monkeypatch):
    """cbdsl-tiny-lm with a few training steps, so the tests stay fast (the spec is part of its cache key)."""
    from cbdsl.scorers.models import lm

    monkeypatch.setattr(lm, "SPEC", lm.TinyLMSpec(steps=4, batch_size=8, warmup=2))
    lm._MEMO.clear()
    return lm


def test_byte_sequences_are_byt5_ids() -> None:
    import transformers
    from cbdsl.scorers.models import lm

    tok = transformers.ByT5Tokenizer(extra_ids=0)
    texts = ["héllo wörld", "", "emoji 🙂 ok"]
    assert [s.tolist() for s in lm.byte_sequences(texts, 256)] == [[lm.EOS, *tok(t)["input_ids"]] for t in texts]
    assert lm.byte_sequences(["abcdef"], 4)[0].tolist() == [lm.EOS, *[b + 3 for b in b"abc"]]


def test_tiny_lm_is_trained_once_and_scores_by_the_logits_formula(quick_lm, tmp_path) -> None:
    import transformers
    rng = np.random.default_rng([9, 4])
    texts = synth.caption(synth.sample_attributes(40, rng), "coco", rng)
    entry = registry().get("perplexity")
    ctx = context(entry.params(), workdir=tmp_path / "models", n=len(texts))
    first = entry.compute(ctx, pl.Series(texts)).to_numpy()
    saved = list((tmp_path / "models" / "perplexity").glob("cbdsl-tiny-lm-*"))
    assert len(saved) == 1 and (saved[0] / "config.json").is_file()
    stamp = (saved[0] / "config.json").stat().st_mtime_ns
    quick_lm._MEMO.clear()
    second = entry.compute(ctx, pl.Series(texts)).to_numpy()
    assert (saved[0] / "config.json").stat().st_mtime_ns == stamp  # loaded, not trained again
    np.testing.assert_allclose(first, second, rtol=1e-6)
    # the saved model is an ordinary checkpoint: AutoModel + AutoTokenizer load it
    model = transformers.AutoModelForCausalLM.from_pretrained(saved[0]).eval()
    tok = transformers.AutoTokenizer.from_pretrained(saved[0])
    for text, value in zip(texts[:5], first[:5], strict=True):
        assert value == pytest.approx(independent_ppl(model, [tok.eos_token_id, *tok(text)["input_ids"]]), rel=1e-5)


def test_perplexity_of_a_tiny_lm_asset_end_to_end_and_its_content_in_the_cache_key(quick_lm, tmp_path) -> None:
    """cbdsl-tiny-lm saved with save_pretrained and registered as a model asset scores by the logits formula;
    other weights under the same name give another cache entry."""
    import transformers
    pool = _text_pool(tmp_path / "pool")
    policy = 'pool "t"\nlet p = perplexity(text, checkpoint="tiny-lm")\nfilter p > 0\nselect top p\n'
    caches = []
    for corpus in (["a red circle", "a blue square"], ["un cercle rouge", "ein blaues Quadrat"]):
        quick_lm.train_tiny_lm(corpus, tmp_path / corpus[0], "cpu")
        pool = add_asset(pool.path, "tiny-lm", tmp_path / corpus[0], kind="model")
        run_policy(policy, pool)
        caches.append(sorted(Path(pool.scores_dir).glob("perplexity-*.parquet")))
    assert len(caches[0]) == 1 and len(caches[1]) == 2
    cached = pl.read_parquet(caches[0][0])
    got = dict(zip(cached["id"].to_list(), cached["value"].to_list(), strict=True))
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "a red circle").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "a red circle")
    for i, text in enumerate(SENTENCES):
        if text:
            ids = [tok.eos_token_id, *tok(text)["input_ids"]]
            assert got[f"r{i}"] == pytest.approx(independent_ppl(model, ids), rel=1e-5)


def test_tiny_lm_training_is_deterministic(quick_lm, tmp_path) -> None:
    import torch
    import transformers
    texts = ["a red circle", "a blue square in the top left", "", "un cercle rouge"]
    state = torch.random.get_rng_state()
    for name in ("one", "two"):
        quick_lm.train_tiny_lm(texts, tmp_path / name, "cpu")
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone
    one, two = (transformers.GPT2LMHeadModel.from_pretrained(tmp_path / n).state_dict() for n in ("one", "two"))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


def test_ccnet_buckets_use_the_30th_and_60th_percentiles() -> None:
    ppl = np.array([10.0, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    # NumPy's linear percentiles: p30 = 37, p60 = 64; head is strictly below p30, middle below p60
    assert np.quantile(ppl, [0.3, 0.6]).tolist() == pytest.approx([37.0, 64.0])
    assert ppl_mod.buckets(ppl, None, 0.3, 0.6) == ["head"] * 3 + ["middle"] * 3 + ["tail"] * 4
    # a value equal to a cutoff goes up a bucket (cc_net: `if perplexity < pp_head`)
    assert ppl_mod.buckets(np.array([1.0, 2, 3]), None, 0.5, 0.75) == ["head", "middle", "tail"]
    # per language, and null where there is no perplexity
    values = np.array([1.0, 100, 2, 200, 3, 300, np.nan])
    langs = ["en", "fr", "en", "fr", "en", "fr", "en"]
    assert ppl_mod.buckets(values, langs, 0.3, 0.6) == ["head", "head", "middle", "middle", "tail", "tail", None]
    with pytest.raises(ValidationError, match="must be below"):
        registry().get("ccnet_bucket").params(head_quantile=0.7, tail_quantile=0.6)


# --- end to end -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Pool:
    """A 500-row demo pool with a `target` corpus asset of clean coco-style captions."""
    root = tmp_path_factory.mktemp("text-e2e")
    make_demo(root / "demo", rows=500)
    rng = np.random.default_rng([11, 7])
    (root / "target.txt").write_text("\n".join(synth.caption(synth.sample_attributes(400, rng), "coco", rng)) + "\n")
    return add_asset(root / "demo", "target", root / "target.txt", kind="corpus")


DSIR_POLICY = """pool "demo"
let w = dsir(text, target="target")
filter lang(text) == "en"
filter token_count(text) >= 2
dedup exact(dup_key(text))
budget 100
select weighted(w, seed=0)
"""


def test_end_to_end_lang_filter_and_dsir_selection(demo, langid) -> None:
    _compiled, result = run_policy(DSIR_POLICY, demo)
    assert result.selection.height == 100
    frame = demo.scan(["id", "text", "source"]).collect()
    chosen = frame.filter(pl.col("id").is_in(result.selection.get_column("id").to_list()))
    labels, _ = text_mod.identify(chosen.get_column("text"))
    assert set(labels) == {"en"}
    # DSIR toward coco-style captions: coco rows weigh more than laion rows
    weights = registry().get("dsir").compute(
        context(registry().get("dsir").params(target="target"), pool=demo, n=frame.height), frame.get_column("text"))
    by_source = frame.with_columns(w=weights).group_by("source").agg(pl.col("w").mean()).rows_by_key("source")
    assert by_source["coco"][0] > 2 * by_source["laion"][0]
    # cached scores: a second run computes nothing and selects the same rows
    cached = sorted(p.name for p in Path(demo.scores_dir).glob("*.parquet"))
    assert {n.split("-")[0] for n in cached} >= {"dsir", "lang"}
    _compiled, again = run_policy(DSIR_POLICY, demo)
    assert again.selection_hash() == result.selection_hash()
    assert sorted(p.name for p in Path(demo.scores_dir).glob("*.parquet")) == cached


def test_end_to_end_ccnet_head(demo, langid, quick_lm) -> None:
    policy = 'pool "demo"\nlet ppl = perplexity(text)\nfilter ccnet_bucket(text) == "head"\nselect top ppl\n'
    _compiled, result = run_policy(policy, demo)
    frame = demo.scan(["id", "text"]).collect()
    entry = registry().get("ccnet_bucket")
    ctx = context(entry.params(), pool=demo, ids=frame.get_column("id"),
                  workdir=Path(demo.scores_dir) / "models", n=frame.height)
    buckets = entry.compute(ctx, frame.get_column("text"))
    heads = set(frame.filter(buckets == "head").get_column("id").to_list())
    assert set(result.selection.get_column("id").to_list()) == heads
    assert 0.2 * frame.height < len(heads) <= 0.3 * frame.height + 10  # below each language's 30th percentile
