"""Text scorers: the exact-duplicate key, token counts, and language identification.

- ``dup_key(x)``: the key of ``dedup exact(dup_key(text))``. For text, the
  normalized form (Unicode NFKC, lowercase, punctuation removed, whitespace
  runs collapsed to one space, trimmed) hashed with the stable 64-bit hash of
  :func:`cbdsl.pipelines.engine.kernels.hashing.hash_strings`, written as 16 lowercase hex
  digits; for image bytes, the sha256 of the bytes (64 hex digits). A string
  either way (null for null), so keys from any cbdsl version compare equal.
- ``token_count(text, tokenizer="wordpunct")``: tokens per text. Built in, all
  offline: ``wordpunct`` (NLTK's ``WordPunctTokenizer``: runs of word
  characters or of other non-space characters, the tokenizer DSIR uses),
  ``whitespace`` (runs of non-space), ``bytes`` (UTF-8 bytes: a byte-level
  model's tokens) and ``chars``. Any other value names a ``model`` asset of
  the pool (never a path, design rule 8): a ``tokenizer.json`` of the Hugging
  Face ``tokenizers`` library, or a directory holding one (what
  ``save_pretrained`` writes), registered with ``cbdsl pool add-asset POOL
  NAME PATH --kind model``; special tokens are not counted.
- ``lang(text)`` and ``lang_score(text)``: the language of a text and the
  model's confidence in it, from langid.py (Lui & Baldwin, ACL 2012) as
  packaged by ``py3langid`` 0.4, whose naive Bayes model over byte n-grams
  (142 languages) ships inside the package. Codes are ISO 639-1 where the
  language has one (``en``, ``fr``, ...), ISO 639-3 otherwise; the confidence
  is py3langid's normalised probability (``norm_probs=True``: a softmax of the
  scores over the languages, at temperature sqrt(bytes)). A text with no
  n-gram the model knows (an empty text) is ``zxx`` ("no linguistic content")
  with confidence 0. The model's byte automaton and naive Bayes sum run as one
  Numba kernel over the whole column (the library classifies one text at a
  time in Python); the test checks it against the library's own ``classify``.

``dup_key`` and ``token_count`` are lowered to Polars (cost: metadata);
``lang`` and ``lang_score`` are model scorers (cost: cpu_model), cached with
the rest of the scores.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from cbdsl.scorers.api import RunError
from cbdsl.scorers.models.assets import asset_name, model_asset
from cbdsl.scorers.registry import Input, LowerContext, Params, model_scorer, scorer

#: NLTK's WordPunctTokenizer pattern (also DSIR's tokenizer).
WORDPUNCT = r"\w+|[^\w\s]+"
BUILTIN_TOKENIZERS = ("wordpunct", "whitespace", "bytes", "chars")
NO_LANGUAGE = "zxx"


# --- dup_key ---------------------------------------------------------------------------------------------


@scorer("dup_key", inputs=[Input("x", "key")], output="str", method="exact_dedup")
def dup_key(ctx: LowerContext, x):
    """Exact-duplicate key: the stable hash of the normalized text, or the sha256 of image bytes."""
    import polars as pl

    return x.map_batches(dup_keys, return_dtype=pl.String)


def normalize_text(texts):
    """NFKC, lowercase, punctuation (Unicode category P) removed, whitespace collapsed and trimmed."""
    import polars as pl

    return (texts.cast(pl.String).str.normalize("NFKC").str.to_lowercase()
            .str.replace_all(r"\p{P}+", "").str.replace_all(r"\s+", " ").str.strip_chars())


def dup_keys(values):
    """:func:`dup_key` of a whole column (a Polars Series): 16 hex digits for text, 64 for bytes."""
    import hashlib

    import polars as pl

    if values.dtype == pl.Binary:
        return pl.Series(values.name, [hashlib.sha256(b).hexdigest() if b is not None else None
                                       for b in values.to_list()], dtype=pl.String)
    # Numba: off `cbdsl check`, which imports the scorer modules
    import cbdsl.pipelines.engine.kernels.hashing as hashing

    normal = normalize_text(values)
    hashes = iter(hashing.hash_strings(normal.drop_nulls()).tolist())
    return pl.Series(values.name, [None if v is None else f"{next(hashes):016x}" for v in normal.to_list()],
                     dtype=pl.String)


# --- token_count -----------------------------------------------------------------------------------------


class TokenCountParams(Params):
    tokenizer: str = Field(
        default="wordpunct", min_length=1,
        description='"wordpunct", "whitespace", "bytes", "chars", or a model asset of the pool holding a '
                    "tokenizer.json (the file, or a directory with one)",
    )

    @field_validator("tokenizer")
    @classmethod
    def _known(cls, value: str) -> str:
        if value in BUILTIN_TOKENIZERS:
            return value
        close = difflib.get_close_matches(value, BUILTIN_TOKENIZERS, n=1, cutoff=0.75)
        if close:
            raise PydanticCustomError("tokenizer_typo", "no tokenizer `{value}`: did you mean `{close}`?",
                                      {"value": value, "close": close[0]})
        return asset_name("tokenizer", value)


@scorer("token_count", inputs=[Input("text", "str")], params=TokenCountParams, output="int")
def token_count(ctx: LowerContext, text):
    """Number of tokens of a text under a named tokenizer (default: wordpunct, offline)."""
    import polars as pl

    name = ctx.params.tokenizer
    if name == "wordpunct":
        counted = text.str.count_matches(WORDPUNCT)
    elif name == "whitespace":
        counted = text.str.count_matches(r"\S+")
    elif name == "bytes":
        counted = text.str.len_bytes()
    elif name == "chars":
        counted = text.str.len_chars()
    else:
        tokenizer = load_tokenizer(ctx.pool, name)
        return text.map_batches(functools.partial(count_tokens, tokenizer), return_dtype=pl.Int64)
    return counted.cast(pl.Int64)


def load_tokenizer(pool, name: str):
    """A ``tokenizers.Tokenizer`` from the pool's model asset ``name``: a tokenizer.json or a directory holding
    one. Read when the policy is lowered for a run; a RunError with the fix when it is missing or not one."""
    path, sha256 = model_asset(pool, name, "the token_count parameter `tokenizer`")
    if path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            raise RunError(f"model asset `{name}` holds no tokenizer.json",
                           ("register a directory that `tokenizer.save_pretrained(DIR)` wrote (a fast tokenizer), "
                            "or the tokenizer.json itself",))
    try:
        return _tokenizer_from_file(str(path), sha256)
    except Exception as err:  # noqa: BLE001 - the tokenizers library raises a bare Exception on a bad file
        raise RunError(f"model asset `{name}` is not a tokenizers tokenizer.json: {(str(err).splitlines() or ['?'])[0][:300]}",
                       ("register the tokenizer.json that `tokenizer.save(PATH)` wrote",)) from err


@functools.lru_cache(maxsize=8)
def _tokenizer_from_file(path: str, _sha256: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def count_tokens(tokenizer, texts):
    """Tokens per text (special tokens not added); null for a null text."""
    import polars as pl

    values = texts.to_list()
    present = [t for t in values if t is not None]
    counts = iter([len(e.ids) for e in tokenizer.encode_batch(present, add_special_tokens=False)])
    return pl.Series(texts.name, [next(counts) if t is not None else None for t in values], dtype=pl.Int64)


# --- lang, lang_score ------------------------------------------------------------------------------------


@functools.cache
def _langid_model() -> dict[str, Any]:
    """py3langid's model as arrays for the kernel (loaded once per process; about 3 s)."""
    import numpy as np

    try:
        from py3langid import langid, modelio
    except ImportError:
        raise RunError("`lang` needs the py3langid package",
                       ("install it: pip install 'py3langid>=0.4,<0.5'",)) from None
    ptc, pc, classes, nextmove, state_row, out_feat = modelio.load_model(langid.MODEL_DIR / langid.MODEL_FILE)
    classes = [str(c) for c in classes]
    first = {c: classes.index(c) for c in classes}
    return {
        "ptc": np.ascontiguousarray(np.asarray(ptc, dtype=np.float32)),
        "pc": np.ascontiguousarray(np.asarray(pc, dtype=np.float32)),
        "nextmove": np.asarray(nextmove).astype(np.int64),
        "state_row": np.asarray(state_row).astype(np.int64),
        "out_feat": np.asarray(out_feat, dtype=np.int64),
        "alias": np.array([first[c] for c in classes], dtype=np.int64),  # srl -> sr: a label's first column
        "classes": classes,
    }


@functools.cache
def langid_version() -> str:
    """py3langid's version and the sha256 of its model file (part of the score cache key)."""
    from importlib.metadata import version

    # NumPy and torch: off `cbdsl check`, which imports the scorer modules
    from cbdsl.scorers.models.lm import files_version

    try:
        from py3langid import langid
    except ImportError:
        return "py3langid:missing"
    return f"py3langid-{version('py3langid')}:{files_version(langid.MODEL_DIR / langid.MODEL_FILE)[:16]}"


@functools.cache
def _kernel():
    """The language-id kernel, compiled on first use (Numba is imported only here)."""
    import numpy as np
    from numba import njit, prange

    @njit(cache=True, parallel=True, nogil=True)
    def classify(offsets, data, nextmove, state_row, out_feat, ptc, pc, alias, chunk):
        # Per row: walk the byte automaton, count each feature it emits, then the
        # naive Bayes score pc + sum log1p(count) * ptc[feature], a softmax at
        # temperature sqrt(bytes), aliases folded into their first label, argmax.
        # Rows are independent and each writes only its own outputs.
        n = offsets.shape[0] - 1
        k = ptc.shape[1]
        label = np.full(n, -1, dtype=np.int64)
        conf = np.zeros(n, dtype=np.float64)
        chunks = (n + chunk - 1) // chunk
        for c in prange(chunks):
            lo = c * chunk
            hi = min(n, lo + chunk)
            longest = 0
            for i in range(lo, hi):
                longest = max(longest, offsets[i + 1] - offsets[i])
            counts = np.zeros(ptc.shape[0], dtype=np.int64)
            touched = np.empty(longest, dtype=np.int64)
            acc = np.empty(k, dtype=np.float64)
            folded = np.empty(k, dtype=np.float64)
            for i in range(lo, hi):
                state = 0
                m = 0
                for j in range(offsets[i], offsets[i + 1]):
                    state = nextmove[state_row[state] * 256 + data[j]]
                    f = out_feat[state]
                    if f >= 0:
                        if counts[f] == 0:
                            touched[m] = f
                            m += 1
                        counts[f] += 1
                if m == 0:
                    continue
                for q in range(k):
                    acc[q] = pc[q]
                for t in range(m):
                    f = touched[t]
                    w = np.log1p(np.float64(counts[f]))
                    for q in range(k):
                        acc[q] += w * ptc[f, q]
                    counts[f] = 0
                scale = 1.0 / np.sqrt(np.float64(max(offsets[i + 1] - offsets[i], 1)))
                top = -np.inf
                for q in range(k):
                    acc[q] *= scale
                    top = max(top, acc[q])
                total = 0.0
                for q in range(k):
                    acc[q] = np.exp(acc[q] - top)
                    total += acc[q]
                    folded[q] = 0.0
                for q in range(k):
                    folded[alias[q]] += acc[q] / total
                best = 0
                for q in range(1, k):
                    if folded[q] > folded[best]:
                        best = q
                label[i] = best
                conf[i] = folded[best]
        return label, conf

    return classify


def _encode(texts: list[str | None]):
    """py3langid's input: lowercased if all upper case, NFC, UTF-8; as Arrow-style offsets and bytes."""
    import unicodedata

    import numpy as np

    encoded = [b"" if t is None else unicodedata.normalize("NFC", t.lower() if t.isupper() else t).encode(
        "utf-8", errors="surrogatepass") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)


def identify(texts, progress=lambda n: None, batch: int = 16384):
    """(language per text, confidence per text) for a Polars Series of str; (None, NaN) for null."""
    import numpy as np

    model = _langid_model()
    kernel = _kernel()
    values = texts.to_list()
    labels: list[str | None] = []
    scores = np.empty(len(values), dtype=np.float64)
    classes = model["classes"]
    for lo in range(0, len(values), batch):
        part = values[lo:lo + batch]
        offsets, data = _encode(part)
        label, conf = kernel(offsets, data, model["nextmove"], model["state_row"], model["out_feat"],
                             model["ptc"], model["pc"], model["alias"], 256)
        for t, li in zip(part, label.tolist(), strict=True):
            labels.append(None if t is None else classes[li] if li >= 0 else NO_LANGUAGE)
        conf[[t is None for t in part]] = np.nan
        scores[lo:lo + len(part)] = conf
        progress(len(part))
    return labels, scores


def _lang_version(params: Params) -> str:
    return langid_version()


@model_scorer("lang", inputs=[Input("text", "str")], output="str", cost="cpu_model", method="langid",
              version=_lang_version)
def lang(ctx, text):
    """Language of a text (ISO 639-1 code where one exists) by langid.py's model (py3langid)."""
    import polars as pl

    labels, _scores = identify(text, ctx.progress)
    return pl.Series("lang", labels, dtype=pl.String)


@model_scorer("lang_score", inputs=[Input("text", "str")], output="float", cost="cpu_model", method="langid",
              version=_lang_version)
def lang_score(ctx, text):
    """Confidence (0 to 1) of `lang(text)`: py3langid's normalised probability of that language."""
    import polars as pl

    _labels, scores = identify(text, ctx.progress)
    return pl.Series("lang_score", scores, dtype=pl.Float64).fill_nan(None)
