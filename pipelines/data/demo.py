"""The embedded demo pool: image–caption pairs with known defects at known rates.

Why it exists: with no configuration, ``cbdsl init`` curates this pool and the
``mini`` backend trains a small CLIP-style model on the selection, so a
newcomer sees the whole loop work on a laptop CPU. The defects are the ones
real web pools have, at rates that differ by source, and each one hurts
training and is within reach of the policy language (metadata filters, a
teacher's CLIP score, dedup). The ground truth is kept out of the pool, in the
``demo-defects`` asset, so tests and the benchmark can measure what a policy
removed.

Rows are shapes with five attributes (see ``pipelines/data/synth.py``). A source
sets the caption style and the defect rates; every rate below is a share of
all rows of that source (counts are exact, rounded per source):

==================  =====  =====  =====  =====  =====  =======
defect              laion  cc3m   coco   vg     sbu    overall
==================  =====  =====  =====  =====  =====  =======
share of the pool    45%    22%    13%    12%     8%    100%
mismatched           28%     6%     2%     2%    12%    15.4%
exact_duplicate       7%     5%     2%     2%     4%     5.1%
near_duplicate        7%     5%     2%     2%     4%     5.1%
blank                 4%     3%     1%     1%     4%     3.0%
tiny                  4%     3%     1%     2%     3%     3.1%
foreign_language      8%     4%     0%     0%     6%     5.0%
spam                  7%     2%     0%     0%     5%     4.0%
rendered_text         5%     3%     0%     0%     3%     3.2%
==================  =====  =====  =====  =====  =====  =======

What each defect is:

- ``mismatched``: the caption, in the source's style, describes another
  image: every attribute it names is wrong (shape, colour, size, position and
  texture all differ from the image's).
- ``foreign_language``: the full, accurate caption in French, German or Spanish.
- ``spam``: advertising text, URLs and repeated words; nothing about the image.
  Caption defects (the three above) exclude each other.
- ``blank``: the image is one flat colour. ``tiny``: the image is 6–12 px on a
  side. ``rendered_text``: a banner with a word (SALE, 50%, ...) is drawn
  across the image. Image defects exclude each other, and are placed
  independently of the caption defects (so a row can be, say, tiny and spam).
- ``exact_duplicate``: a copy of another row: same PNG bytes, caption and
  size (a fresh url). ``near_duplicate``: the same image shifted by one pixel
  with fresh noise, and the caption with one word changed. Only the copies
  are flagged; each copy and its original share ``dup_group`` (the original's
  id), so keeping one row per group removes exactly the flagged rows.
  Originals are rows without other defects, and copies inherit their labels.

Other images are 32x32 (70%) or one of 24x24, 40x40, 48x48, 64x64, 32x48,
48x32, 24x40, 64x48 (height x width).

Random streams: everything derives from ``numpy.random.default_rng([seed,
stream])`` with the stream ids of :data:`STREAMS`: 0 the demo pool, 1 the
evaluation suite of the ``mini`` backend, 2 the clean training data of its
CLIP teacher. The three never share a generator, so their images never
coincide for any seed.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cbdsl.pipelines.data import synth
from cbdsl.pipelines.data.writing import add_asset, write_pool

DEMO_VERSION = 1
"""Bump when the generator's output changes for a given (rows, seed)."""

DEFAULT_ROWS = 50_000
EVAL_ROWS = 4000  # the mini suite: enough pairs that its own sampling noise is small beside the training seed's
EVAL_SEED = 0
TEST_SEED = 1
"""The mini suite's test part: the eval stream at another seed, so its pairs are disjoint from the dev part's
(whose scores an agent sees) and drawn the same way; its scores never reach the sandbox."""

STREAMS: dict[str, int] = {"pool": 0, "eval": 1, "teacher": 2}
"""Stream id per use of the generator; see the module docstring."""

SOURCE_SHARES: dict[str, float] = {"laion": 0.45, "cc3m": 0.22, "coco": 0.13, "vg": 0.12, "sbu": 0.08}

DEFECTS = (
    "mismatched",
    "exact_duplicate",
    "near_duplicate",
    "blank",
    "tiny",
    "foreign_language",
    "spam",
    "rendered_text",
)

# fmt: off
DEFECT_RATES: dict[str, dict[str, float]] = {
    #        mismatched exact  near   blank  tiny   foreign spam   text
    "laion": dict(zip(DEFECTS, (0.28, 0.07, 0.07, 0.04, 0.04, 0.08, 0.07, 0.05))),
    "cc3m":  dict(zip(DEFECTS, (0.06, 0.05, 0.05, 0.03, 0.03, 0.04, 0.02, 0.03))),
    "coco":  dict(zip(DEFECTS, (0.02, 0.02, 0.02, 0.01, 0.01, 0.00, 0.00, 0.00))),
    "vg":    dict(zip(DEFECTS, (0.02, 0.02, 0.02, 0.01, 0.02, 0.00, 0.00, 0.00))),
    "sbu":   dict(zip(DEFECTS, (0.12, 0.04, 0.04, 0.04, 0.03, 0.06, 0.05, 0.03))),
}
# fmt: on
"""Share of each source's rows that carry each defect (the module docstring's table)."""

SIZE_CHOICES: tuple[tuple[tuple[int, int], float], ...] = (
    ((32, 32), 0.70),
    ((24, 24), 0.04),
    ((40, 40), 0.04),
    ((48, 48), 0.05),
    ((64, 64), 0.05),
    ((32, 48), 0.03),
    ((48, 32), 0.03),
    ((24, 40), 0.03),
    ((64, 48), 0.03),
)
"""(height, width) and probability of the images that are not tiny."""

TINY_SIDES = (6, 12)  # inclusive range of a tiny image's width and height

_CAPTION_DEFECTS = ("mismatched", "spam", "foreign_language")  # codes 1..3, exclusive
_IMAGE_DEFECTS = ("blank", "tiny", "rendered_text")  # codes 1..3, exclusive
_URLS = {
    "laion": (
        "https://cdn.shopify.com/s/files/1/{a}/{h}.jpg",
        "https://i.ebayimg.com/images/g/{h}/s-l500.jpg",
        "https://ae01.alicdn.com/kf/H{h}.jpg",
        "https://m.media-amazon.com/images/I/{h}.jpg",
        "https://i.etsystatic.com/il/{h}.{a}.jpg",
        "https://i.pinimg.com/736x/{h}.jpg",
        "https://images.squarespace-cdn.com/content/v1/{a}/{h}.png",
    ),
    "cc3m": (
        "https://i.pinimg.com/originals/{h}.jpg",
        "https://media.gettyimages.com/photos/{h}-picture-id{a}",
        "https://i.dailymail.co.uk/i/pix/{h}.jpg",
        "https://img.freepik.com/free-vector/{h}_{a}.jpg",
        "https://www.telegraph.co.uk/content/dam/{h}.jpg",
    ),
    "coco": ("http://images.cocodataset.org/train2017/{a:012d}.jpg",),
    "vg": ("https://cs.stanford.edu/people/rak248/VG_100K/{v}.jpg",),
    "sbu": ("http://static.flickr.com/{b}/{a}_{h}.jpg",),
}


@dataclass(frozen=True)
class DemoPool:
    """A generated demo pool: the pool's rows, their ground truth, and the lineage for the card."""

    pool: pl.DataFrame
    defects: pl.DataFrame
    lineage: dict[str, Any] = field(default_factory=dict)


def expected_rates(rates: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """Overall share of rows with each defect, from SOURCE_SHARES and ``rates`` (default DEFECT_RATES)."""
    rates = rates or DEFECT_RATES
    return {d: round(sum(share * rates[s][d] for s, share in SOURCE_SHARES.items()), 6) for d in DEFECTS}


def with_rates(changes: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """DEFECT_RATES with some (source, defect) rates replaced: how the validity benchmark tries other pools.

    Raises ValueError naming an unknown source or defect, a rate outside
    [0, 1], or a source whose caption (or image) defects sum above 1.
    """
    return replace_rates(DEFECT_RATES, changes, DEFECTS, "the demo",
                         lambda _rates: (_CAPTION_DEFECTS, _IMAGE_DEFECTS, ("exact_duplicate", "near_duplicate")))


def replace_rates(base: dict[str, dict[str, float]], changes: dict[str, dict[str, float]], defects: tuple[str, ...],
                  pool: str, groups, own_only: bool = False) -> dict[str, dict[str, float]]:
    """``base`` (rates per source) with ``changes`` applied, checked: each demo's ``with_rates``.

    ``groups(source_rates)`` gives the sets of defects whose rates must not sum above 1; with ``own_only`` a
    source takes only the defects it already has (the others cannot occur in its rows).
    """
    out = {s: dict(r) for s, r in base.items()}
    for source, new in changes.items():
        if source not in out:
            raise ValueError(f"unknown source {source!r}; {pool}'s sources are {', '.join(base)}")
        for defect, rate in new.items():
            if defect not in defects:
                raise ValueError(f"unknown defect {defect!r}; {pool}'s defects are {', '.join(defects)}")
            if own_only and defect not in out[source]:
                raise ValueError(f"{source} rows cannot have the defect {defect!r}; its defects are "
                                 f"{', '.join(out[source])}")
            if not 0 <= rate <= 1:
                raise ValueError(f"the rate of {defect} in {source} must be between 0 and 1, not {rate}")
            out[source][defect] = float(rate)
        for kind in groups(out[source]):
            if sum(out[source].get(d, 0.0) for d in kind) > 1:
                raise ValueError(f"{source}: the rates of {', '.join(kind)} sum above 1")
    return out


def generate_demo(rows: int = DEFAULT_ROWS, seed: int = 0,
                  rates: dict[str, dict[str, float]] | None = None) -> DemoPool:
    """Generate the demo pool and its defect labels; the same (rows, seed, rates) gives byte-identical frames.

    ``rates`` replaces DEFECT_RATES (see :func:`with_rates`); the lineage
    records the rates used.

    Pool columns: id, image (PNG bytes), width, height, text, source, url.
    Defects columns: id, one bool per defect (DEFECTS), dup_group (the
    original's id for duplicate groups, else null), language (en/fr/de/es),
    and the image's true shape, color, size, position, texture.
    """
    _check_args(rows, seed)
    rates = rates or DEFECT_RATES
    rng = np.random.default_rng([seed, STREAMS["pool"]])
    sources = tuple(SOURCE_SHARES)
    plan = _plan_rows(split_counts(rows, SOURCE_SHARES), rates, rng)
    n_base = len(plan.source)

    attrs = synth.sample_attributes(n_base, rng)
    heights, widths = _image_sizes(plan.image_defect, rng)
    near = plan.copy_kind == 2
    pngs, near_pngs = _images(attrs, heights, widths, plan.image_defect, plan.copy_orig[near], rng)
    texts, language = _captions(attrs, plan.source, plan.caption_defect, rng)

    # Copies take their original's content (near copies: jittered image, one word changed).
    orig = plan.copy_orig
    near_texts = synth.perturb_caption([texts[i] for i in orig[near]], rng)
    near_iter, near_text_iter = iter(near_pngs), iter(near_texts)
    for i, is_near in zip(orig.tolist(), near.tolist()):
        pngs.append(next(near_iter) if is_near else pngs[i])
        texts.append(next(near_text_iter) if is_near else texts[i])
    full = np.concatenate([np.arange(n_base), orig])  # the base row each row's content comes from
    source = plan.source[full]
    urls = _urls(source, rng)

    # Shuffle so that neither ids nor file order reveal the defects, then number the rows.
    n = len(full)
    perm = rng.permutation(n)
    new_pos = np.empty(n, dtype=np.int64)
    new_pos[perm] = np.arange(n)
    width = max(6, len(str(n - 1)))
    ids = [f"d{i:0{width}d}" for i in range(n)]

    group = np.full(n, -1, dtype=np.int64)  # new position of the group's original
    group[n_base:] = new_pos[orig]
    group[orig] = new_pos[orig]
    group = group[perm]

    names = synth.attribute_names(synth.take(attrs, full[perm]))
    cap, img = plan.caption_defect[full][perm], plan.image_defect[full][perm]
    kind = np.concatenate([np.zeros(n_base, dtype=np.int8), plan.copy_kind])[perm]
    pool = pl.DataFrame(
        {
            "id": ids,
            "image": pl.Series([pngs[i] for i in perm.tolist()], dtype=pl.Binary),
            "width": widths[full][perm].astype(np.int64),
            "height": heights[full][perm].astype(np.int64),
            "text": [texts[i] for i in perm.tolist()],
            "source": np.asarray(sources, dtype=object)[source[perm]].tolist(),
            "url": [urls[i] for i in perm.tolist()],
        },
        schema={"id": pl.String, "image": pl.Binary, "width": pl.Int64, "height": pl.Int64,
                "text": pl.String, "source": pl.String, "url": pl.String},
    )  # fmt: skip
    flags = {
        "mismatched": cap == 1,
        "exact_duplicate": kind == 1,
        "near_duplicate": kind == 2,
        "blank": img == 1,
        "tiny": img == 2,
        "foreign_language": cap == 3,
        "spam": cap == 2,
        "rendered_text": img == 3,
    }
    id_array = np.asarray(ids, dtype=object)
    defects = pl.DataFrame(
        {
            "id": ids,
            **{d: flags[d] for d in DEFECTS},
            "dup_group": pl.Series([None if g < 0 else id_array[g] for g in group.tolist()], dtype=pl.String),
            "language": language[full][perm].tolist(),
            **{k: v.tolist() for k, v in names.items()},
        }
    )
    return DemoPool(pool=pool, defects=defects, lineage=_lineage(rows, seed, defects, rates))


def generate_clean(rows: int, seed: int = 0, *, stream: str = "eval") -> pl.DataFrame:
    """Clean image–caption pairs: 32x32 images, accurate coco-style captions, no defects.

    For the ``mini`` backend's evaluation suite (``stream="eval"``) and its
    CLIP teacher's training data (``stream="teacher"``). Each stream has its
    own generator (``default_rng([seed, STREAMS[stream]])``), disjoint from the
    pool's. Columns: id (``e…`` or ``t…``), image, width, height, text, and
    the true shape, color, size, position, texture (value names; the codes are
    their indices in ``synth.ATTRIBUTES``).
    """
    if stream not in STREAMS or stream == "pool":
        raise ValueError(f"stream must be 'eval' or 'teacher', not {stream!r}")
    _check_args(rows, seed)
    rng = np.random.default_rng([seed, STREAMS[stream]])
    attrs = synth.sample_attributes(rows, rng)
    images = synth.render_images(attrs, synth.IMAGE_SIZE, rng)
    texts = synth.caption(attrs, "coco", rng)
    width = max(6, len(str(rows - 1)))
    return pl.DataFrame(
        {
            "id": [f"{stream[0]}{i:0{width}d}" for i in range(rows)],
            "image": pl.Series(synth.encode_png(images), dtype=pl.Binary),
            "width": pl.Series([synth.IMAGE_SIZE] * rows, dtype=pl.Int64),
            "height": pl.Series([synth.IMAGE_SIZE] * rows, dtype=pl.Int64),
            "text": texts,
            **{k: v.tolist() for k, v in synth.attribute_names(attrs).items()},
        }
    )


def make_demo(path: str | os.PathLike, rows: int = DEFAULT_ROWS, seed: int = 0, overwrite: bool = False,
              rates: dict[str, dict[str, float]] | None = None) -> Path:
    """Generate the demo pool and write it at ``path``, with its labels as the ``demo-defects`` asset."""
    demo = generate_demo(rows, seed, rates)
    write_pool(demo.pool, path, name="demo", id_column="id", lineage=demo.lineage, overwrite=overwrite)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "demo-defects.parquet"
        demo.defects.write_parquet(file, compression="zstd")
        add_asset(
            path,
            "demo-defects",
            file,
            kind="truth",
            description=(
                "ground truth of the demo pool, one row per id: a bool per defect "
                f"({', '.join(DEFECTS)}), dup_group, language, and the image's true "
                "shape, color, size, position, texture; for tests and the benchmark, never for policies"
            ),
        )
        suite = Path(tmp) / "mini-eval.parquet"
        eval_asset().write_parquet(suite, compression="zstd")
        add_asset(path, "mini-eval", suite, kind="eval",
                  description="the mini backend's held-out suite (captions and image hashes), for the audit")
    return Path(path)


def _check_args(rows: int, seed: int) -> None:
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ValueError(f"rows must be a whole number of at least 1, not {rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number of at least 0, not {seed!r}")


# ---------------------------------------------------------------- the row plan


@dataclass(frozen=True)
class _Plan:
    source: np.ndarray  # per base row: index into SOURCE_SHARES
    caption_defect: np.ndarray  # per base row: 0 none, 1 mismatched, 2 spam, 3 foreign
    image_defect: np.ndarray  # per base row: 0 none, 1 blank, 2 tiny, 3 rendered text
    copy_kind: np.ndarray  # per copy: 1 exact, 2 near
    copy_orig: np.ndarray  # per copy: the base row it copies


def split_counts(rows: int, shares: dict[str, float]) -> list[int]:
    """Largest-remainder rounding of ``rows`` into ``shares``; the counts sum to ``rows``."""
    raw = [rows * share for share in shares.values()]
    counts = [math.floor(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))[: rows - sum(counts)]:
        counts[i] += 1
    return counts


def _plan_rows(counts: list[int], rates_by_source: dict[str, dict[str, float]], rng: np.random.Generator) -> _Plan:
    """Which base rows carry which defect and which rows are copies of which, with exact counts per source."""
    sources, caption_defect, image_defect, copy_kind, copy_orig = [], [], [], [], []
    offset = 0
    for s, (source, n) in enumerate(zip(SOURCE_SHARES, counts)):
        rates = rates_by_source[source]
        k_exact, k_near = round(rates["exact_duplicate"] * n), round(rates["near_duplicate"] * n)
        if k_exact + k_near >= n:  # a source of a handful of rows gets no copies
            k_exact = k_near = 0
        base = n - k_exact - k_near
        cap = _assign(base, [round(rates[d] * n) for d in _CAPTION_DEFECTS], rng)
        img = _assign(base, [round(rates[d] * n) for d in _IMAGE_DEFECTS], rng)
        clean = np.flatnonzero((cap == 0) & (img == 0))
        pool = clean if len(clean) else np.arange(base)
        n_groups = [min(math.ceil(k / 1.5), len(pool)) for k in (k_exact, k_near)]
        if sum(n_groups) > len(pool):  # too few clean rows (tiny pools): originals may be shared
            chosen = [rng.choice(pool, g, replace=False) if g else pool[:0] for g in n_groups]
        else:
            picked = rng.choice(pool, sum(n_groups), replace=False)
            chosen = [picked[: n_groups[0]], picked[n_groups[0] :]]
        for kind, k, originals in zip((1, 2), (k_exact, k_near), chosen):
            if k == 0:
                continue
            extra = originals[rng.integers(0, len(originals), k - len(originals))]
            copy_orig.append(offset + np.concatenate([originals, extra]))
            copy_kind.append(np.full(k, kind, dtype=np.int8))
        sources.append(np.full(base, s, dtype=np.int8))
        caption_defect.append(cap)
        image_defect.append(img)
        offset += base
    empty = np.zeros(0, dtype=np.int64)
    return _Plan(
        source=np.concatenate(sources),
        caption_defect=np.concatenate(caption_defect),
        image_defect=np.concatenate(image_defect),
        copy_kind=np.concatenate(copy_kind) if copy_kind else empty.astype(np.int8),
        copy_orig=np.concatenate(copy_orig).astype(np.int64) if copy_orig else empty,
    )


def _assign(n: int, counts: list[int], rng: np.random.Generator) -> np.ndarray:
    """Codes 1..len(counts) on exactly counts[i] random rows of ``n`` (exclusive; capped at n), 0 elsewhere."""
    codes = np.zeros(n, dtype=np.int8)
    order = rng.permutation(n)
    start = 0
    for code, k in enumerate(counts, start=1):
        codes[order[start : start + k]] = code
        start += k
    return codes


# ---------------------------------------------------------------- content


def _image_sizes(image_defect: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(image_defect)
    sizes = np.array([hw for hw, _ in SIZE_CHOICES], dtype=np.int64)
    probs = np.array([p for _, p in SIZE_CHOICES])
    pick = rng.choice(len(sizes), size=n, p=probs / probs.sum())
    heights, widths = sizes[pick, 0].copy(), sizes[pick, 1].copy()
    tiny = image_defect == 2
    lo, hi = TINY_SIDES
    heights[tiny] = rng.integers(lo, hi + 1, int(tiny.sum()))
    widths[tiny] = rng.integers(lo, hi + 1, int(tiny.sum()))
    return heights, widths


def _images(
    attrs: dict[str, np.ndarray],
    heights: np.ndarray,
    widths: np.ndarray,
    image_defect: np.ndarray,
    near_orig: np.ndarray,
    rng: np.random.Generator,
) -> tuple[list[bytes], list[bytes]]:
    """PNG bytes of every base row, and of the near copies of ``near_orig`` (in that order).

    Rendering is vectorised per image size; each size group is rendered,
    defaced (blank, rendered text), jittered for its near copies, and encoded.
    """
    n = len(heights)
    pngs: list[bytes] = [b""] * n
    near_pngs: list[bytes] = [b""] * len(near_orig)
    key = heights * 1000 + widths
    for k in np.unique(key).tolist():
        idx = np.flatnonzero(key == k)
        size = (k // 1000, k % 1000)
        images = synth.render_images(synth.take(attrs, idx), size, rng)
        defect = image_defect[idx]
        blank = np.flatnonzero(defect == 1)
        if len(blank):
            images[blank] = synth.blank_images(len(blank), size, rng)
        text = np.flatnonzero(defect == 3)
        if len(text):
            words = rng.choice(len(synth.RENDERED_WORDS), len(text))
            images[text] = synth.draw_text(images[text], [synth.RENDERED_WORDS[w] for w in words], rng)
        for i, png in zip(idx.tolist(), synth.encode_png(images)):
            pngs[i] = png
        copies = np.flatnonzero(key[near_orig] == k)
        if len(copies):
            local = np.searchsorted(idx, near_orig[copies])
            jittered = synth.encode_png(synth.jitter_images(images[local], rng))
            for c, png in zip(copies.tolist(), jittered):
                near_pngs[c] = png
    return pngs, near_pngs


def _captions(
    attrs: dict[str, np.ndarray], source: np.ndarray, caption_defect: np.ndarray, rng: np.random.Generator
) -> tuple[list[str], np.ndarray]:
    """A caption per base row in its source's style, defects applied; and each caption's language."""
    n = len(source)
    sources = tuple(SOURCE_SHARES)
    style = np.asarray(sources, dtype=object)[source]  # each source captions in its own style
    foreign = np.flatnonzero(caption_defect == 3)
    language = np.full(n, "en", dtype=object)
    language[foreign] = np.asarray(synth.LANGUAGES, dtype=object)[rng.integers(0, 3, len(foreign))]
    style[foreign] = language[foreign]
    style[caption_defect == 2] = "spam"
    described = {k: v.copy() for k, v in attrs.items()}
    wrong = np.flatnonzero(caption_defect == 1)
    for name, values in synth.ATTRIBUTES.items():  # every attribute differs from the image's
        shift = rng.integers(1, len(values), len(wrong))
        described[name][wrong] = (attrs[name][wrong] + shift) % len(values)
    texts: list[str] = [""] * n
    for st in synth.CAPTION_STYLES:
        idx = np.flatnonzero(style == st)
        if len(idx):
            for i, text in zip(idx.tolist(), synth.caption(synth.take(described, idx), st, rng)):
                texts[i] = text
    return texts, language


def _urls(source: np.ndarray, rng: np.random.Generator) -> list[str]:
    """A plausible, fake url per row on its source's domains (independent of the row's defects)."""
    n = len(source)
    a = rng.integers(0, 10**12, n).tolist()
    b = rng.integers(1000, 10_000, n).tolist()
    h = rng.integers(0, 2**62, n).tolist()
    u = rng.random(n).tolist()
    templates = [_URLS[s] for s in SOURCE_SHARES]
    out = []
    for s, ai, bi, hi, ui in zip(source.tolist(), a, b, h, u):
        options = templates[s]
        out.append(options[int(ui * len(options))].format(a=ai, v=ai % 10**7, b=bi, h=f"{hi:x}"))
    return out


def _lineage(rows: int, seed: int, defects: pl.DataFrame, rates: dict[str, dict[str, float]]) -> dict[str, Any]:
    import zlib

    return {
        # The name it had when the first demo pools were made: part of the card, so of every demo pool's
        # identity; kept when the module moved to pipelines/data/.
        "generator": "cbdsl.pipelines.demo",
        "demo_version": DEMO_VERSION,
        "rows": rows,
        "seed": seed,
        "rng": f"numpy.random.default_rng([{seed}, {STREAMS['pool']}])",
        "streams": dict(STREAMS),
        "source_shares": dict(SOURCE_SHARES),
        "defect_rates": {s: dict(r) for s, r in rates.items()},
        "defect_rates_overall": expected_rates(rates),
        "defect_counts": {d: int(defects[d].sum()) for d in DEFECTS},
        "defects_asset": "demo-defects",
        "attributes": {k: list(v) for k, v in synth.ATTRIBUTES.items()},
        "image_sizes": {f"{h}x{w}": p for (h, w), p in SIZE_CHOICES},
        "tiny_sides": list(TINY_SIDES),
        "png": f"8-bit RGB, zlib {zlib.ZLIB_RUNTIME_VERSION} level 1",
    }


def eval_set(rows: int = EVAL_ROWS, seed: int = EVAL_SEED) -> pl.DataFrame:
    """The held-out suite: clean pairs from the generator's eval stream (never in the pool); ``seed``
    :data:`EVAL_SEED` is its dev part, :data:`TEST_SEED` its test part."""
    return generate_clean(rows, seed, stream="eval")


def eval_asset(rows: int = EVAL_ROWS) -> pl.DataFrame:
    """The suite as a pool asset for the contamination audit: ids, captions and image hashes."""
    data = eval_set(rows)
    return pl.DataFrame({
        "id": data.get_column("id"),
        "text": data.get_column("text"),
        "image_sha256": [hashlib.sha256(b).hexdigest() for b in data.get_column("image").to_list()],
    })
