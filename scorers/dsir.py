"""DSIR: importance weights of the pool toward a target corpus (Xie et al., NeurIPS 2023).

"Data Selection for Language Models via Importance Resampling" fits two
bag-of-hashed-n-grams models, one on the raw pool and one on a target corpus,
and resamples the pool with importance weights p_target(x) / p_raw(x). As the
reference code (p-lambda/dsir, ``HashedNgramDSIR``) does:

- a text's features: lowercase it, tokenize with NLTK's ``WordPunctTokenizer``
  (``\\w+|[^\\w\\s]+``), then hash every unigram and every n-gram up to
  ``ngrams`` (n tokens joined by one space) into ``buckets`` buckets; the
  feature vector counts the hits of each bucket;
- each distribution is the bucket counts summed over its corpus (the whole
  pool for the raw one: a population scorer), smoothed by ``smoothing``
  pseudo-counts per bucket and normalised: p = (c + s) / (N + s * buckets);
- log w(x) = sum over buckets of count_x * (log p_target - log p_raw).

Choices, and where they depart from the reference: buckets come from the
stable 64-bit hash of :func:`cbdsl.pipelines.engine.kernels.hashing.hash_strings` instead of
sha256 (same role, stable across versions, fast on a whole column); the
default smoothing is add-one on both distributions, where the reference
adds ``target_laplace_smoothing`` (default 0) to the target counts and 1e-8
inside each log; ``smoothing=0`` reproduces the reference's formula exactly,
1e-8 included.

Output: the importance weight, scaled so the largest weight of the pool is 1
(w = exp(log w - max log w), with log w - max log w floored at -700 so no
weight underflows to 0). ``select weighted(dsir(...), seed)`` draws the top k
of log(w) + Gumbel noise, DSIR's resampling without replacement exactly (a
common factor does not change the draw, and the floor only matters for rows
e^700 times less likely than the best one). ``log=true`` gives the
reference's log importance weight itself (for ``select top`` or analysis).

The target is a pool asset of kind ``corpus`` (``cbdsl pool add-asset POOL
NAME FILE``: a .txt with one text per line, or a JSONL/parquet with a ``text``
column), named by string: ``dsir(text, target="target-corpus")``. An ``eval``
asset is refused: the evaluation sets are out of a policy's reach.
"""

from __future__ import annotations

from pydantic import Field

from cbdsl.scorers.registry import Input, Params, model_scorer

WORDPUNCT = r"\w+|[^\w\s]+"
LOG_FLOOR = -700.0  # exp(-700) ~ 1e-304 is still a normal float64
CHUNK_ROWS = 1 << 18


class DsirParams(Params):
    target: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_.-]*$",
                        description="the name of the target corpus asset of the pool (kind `corpus`)")
    ngrams: int = Field(default=2, ge=1, le=8, description="longest n-gram hashed (2: unigrams and bigrams)")
    buckets: int = Field(default=10000, ge=1, le=1 << 26, description="number of hash buckets")
    smoothing: float = Field(default=1.0, ge=0, description="pseudo-count added to every bucket of both distributions")
    log: bool = Field(default=False, description="output the log importance weight instead of the scaled weight")


def _version(params: DsirParams) -> str:
    # The target asset's sha256 is part of the score cache key already (an asset named by a parameter).
    return "dsir-features-1"


@model_scorer("dsir", inputs=[Input("text", "str")], params=DsirParams, output="float", cost="cpu_model",
              method="dsir", population=True, version=_version)
def dsir(ctx, text):
    """DSIR importance weight p_target(x) / p_raw(x) over hashed n-grams (scaled: the pool's largest is 1)."""
    import numpy as np
    import polars as pl

    p = ctx.params
    target = ctx.asset(p.target, ("corpus",), "`dsir` parameter `target`").get_column("text")
    raw_counts = np.zeros(p.buckets, dtype=np.int64)
    pool_features = []
    for lo in range(0, len(text), CHUNK_ROWS):
        rows, buckets = features(text.slice(lo, CHUNK_ROWS), p.ngrams, p.buckets)
        raw_counts += np.bincount(buckets, minlength=p.buckets)
        pool_features.append((lo, rows, buckets, min(CHUNK_ROWS, len(text) - lo)))
    target_counts = np.zeros(p.buckets, dtype=np.int64)
    for lo in range(0, len(target), CHUNK_ROWS):
        _rows, buckets = features(target.slice(lo, CHUNK_ROWS), p.ngrams, p.buckets)
        target_counts += np.bincount(buckets, minlength=p.buckets)
    log_ratio = log_ratios(raw_counts, target_counts, p.smoothing)
    logw = np.zeros(len(text), dtype=np.float64)
    for lo, rows, buckets, size in pool_features:
        logw[lo:lo + size] = np.bincount(rows, weights=log_ratio[buckets], minlength=size)
        ctx.progress(size)
    logw[text.is_null().to_numpy()] = np.nan
    out = logw if p.log else scaled_weights(logw)
    return pl.Series("dsir", out, dtype=pl.Float64).fill_nan(None)


def features(texts, ngrams: int, buckets: int):
    """(row, bucket) of every hashed n-gram of every text, n = 1..ngrams, in row order.

    ``texts`` is a Polars String Series; rows are its positions. The strings
    hashed are the lowercased wordpunct tokens and, for n >= 2, n consecutive
    tokens of one text joined by single spaces (the reference's ``' '.join``).
    """
    import numpy as np
    import polars as pl

    # Numba: off `cbdsl check`, which imports the scorer modules
    import cbdsl.pipelines.engine.kernels.hashing as hashing

    words = pl.col("t").str.to_lowercase().str.extract_all(WORDPUNCT).alias("tok")
    tokens = (pl.DataFrame({"t": texts.cast(pl.String)}).with_row_index("row")
              .select(pl.col("row").cast(pl.Int64), words).explode("tok").drop_nulls("tok"))
    grams = [tokens]
    for n in range(2, ngrams + 1):
        same_row = pl.col("row").shift(-(n - 1)) == pl.col("row")
        joined = pl.concat_str([pl.col("tok").shift(-k) for k in range(n)], separator=" ")
        grams.append(tokens.select("row", joined.alias("tok"), same_row.alias("ok")).filter("ok").drop("ok"))
    every = pl.concat(grams, how="vertical")
    if every.height == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    hashes = hashing.hash_strings(every.get_column("tok"))
    return every.get_column("row").to_numpy(), (hashes % np.uint64(buckets)).astype(np.int64)


def log_ratios(raw_counts, target_counts, smoothing: float):
    """log p_target - log p_raw per bucket, each p = (c + s) / (N + s * buckets) (s = 0: the reference's 1e-8)."""
    import numpy as np

    b = len(raw_counts)

    def log_p(counts):
        counts = counts.astype(np.float64)
        total = counts.sum() + smoothing * b
        if smoothing > 0:
            return np.log(counts + smoothing) - np.log(total)
        return np.log(counts / total + 1e-8) if total > 0 else np.full(b, np.log(1e-8))

    return log_p(target_counts) - log_p(raw_counts)


def scaled_weights(logw):
    """exp(log w - max log w), floored at exp(-700): the weights up to a common factor; NaN stays NaN."""
    import numpy as np

    if not np.isfinite(logw).any():
        return np.where(np.isnan(logw), np.nan, 1.0)
    top = np.nanmax(logw)
    return np.exp(np.maximum(logw - top, LOG_FLOOR))
