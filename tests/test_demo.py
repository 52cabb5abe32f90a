"""The demo pool generator and the synthetic data behind it: determinism, defect rates, defect semantics."""

from __future__ import annotations

import hashlib
import re
import time

import numpy as np
import polars as pl
import pytest

from cbdsl.pipelines.data import demo, synth

ROWS = 2_000
POOL_COLUMNS = ["id", "image", "width", "height", "text", "source", "url"]
ENGLISH_COLORS = set(synth.COLORS)


@pytest.fixture(scope="module")
def generated() -> demo.DemoPool:
    return demo.generate_demo(ROWS, seed=0)


@pytest.fixture(scope="module")
def joined(generated) -> pl.DataFrame:
    return generated.pool.join(generated.defects, on="id", how="inner", maintain_order="left")


def _png_hash(frame: pl.DataFrame) -> str:
    digest = hashlib.sha256()
    for png in frame["image"]:
        digest.update(png)
    return digest.hexdigest()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-zà-ÿß]+", text.lower()))


_VALUE_PATTERNS = {
    (name, value): re.compile(rf"\b{re.escape(value)}\b")
    for name, values in synth.ATTRIBUTES.items()
    for value in values
}


def _named(text: str) -> set[tuple[str, str]]:
    """The (attribute, value) pairs a caption names ("top left" as a phrase, not as two words)."""
    lower = text.lower()
    return {key for key, pattern in _VALUE_PATTERNS.items() if pattern.search(lower)}


# ------------------------------------------------------------------ determinism and shape


def test_same_rows_and_seed_give_identical_frames(generated):
    again = demo.generate_demo(ROWS, seed=0)
    assert again.pool.equals(generated.pool)
    assert again.defects.equals(generated.defects)
    assert _png_hash(again.pool) == _png_hash(generated.pool)
    assert again.lineage == generated.lineage


def test_another_seed_gives_another_pool(generated):
    other = demo.generate_demo(ROWS, seed=1)
    assert _png_hash(other.pool) != _png_hash(generated.pool)
    assert other.pool["text"].to_list() != generated.pool["text"].to_list()


@pytest.mark.parametrize("rows", [1, 7, 37])
def test_small_pools(rows):
    small = demo.generate_demo(rows, seed=5)
    assert small.pool.height == small.defects.height == rows
    assert small.pool["id"].n_unique() == rows


@pytest.mark.parametrize("rows, seed", [(0, 0), (10, -1), (10, 1.5)])
def test_bad_arguments(rows, seed):
    with pytest.raises(ValueError, match="rows|seed"):
        demo.generate_demo(rows, seed)


def test_pool_schema_and_ids(generated):
    pool, defects = generated.pool, generated.defects
    assert pool.columns == POOL_COLUMNS
    assert dict(pool.schema) == {
        "id": pl.String, "image": pl.Binary, "width": pl.Int64, "height": pl.Int64,
        "text": pl.String, "source": pl.String, "url": pl.String,
    }  # fmt: skip
    assert pool.height == ROWS and pool["id"].n_unique() == ROWS
    assert pool["id"].to_list() == [f"d{i:06d}" for i in range(ROWS)]
    assert defects["id"].to_list() == pool["id"].to_list()
    assert pool.null_count().sum_horizontal().item() == 0


def test_no_ground_truth_in_the_pool(generated):
    hidden = {*demo.DEFECTS, "dup_group", "language", *synth.ATTRIBUTES}
    assert not hidden & set(generated.pool.columns)
    assert hidden <= set(generated.defects.columns)
    assert all(generated.defects.schema[d] == pl.Boolean for d in demo.DEFECTS)


def test_rows_are_shuffled(joined):
    half = ROWS // 2
    for col in ("mismatched", "exact_duplicate", "blank"):
        first, second = joined[col][:half].mean(), joined[col][half:].mean()
        assert abs(first - second) < 0.05, col
    runs = (joined["source"] != joined["source"].shift(1)).sum()
    assert runs > ROWS / 2  # sources are interleaved, not in blocks


# ------------------------------------------------------------------ rates


def _docstring_table() -> dict[str, list[float]]:
    rows = {}
    for line in demo.__doc__.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] in demo.DEFECTS:
            rows[cells[0]] = [float(c.rstrip("%")) / 100 for c in cells[1:]]
        if cells and cells[0] == "share of the pool":
            rows["share"] = [float(c.rstrip("%")) / 100 for c in cells[1:]]
    return rows


def test_docstring_table_matches_the_constants():
    table = _docstring_table()
    sources = list(demo.SOURCE_SHARES)
    assert table["share"][:5] == [demo.SOURCE_SHARES[s] for s in sources]
    overall = demo.expected_rates()
    for d in demo.DEFECTS:
        assert table[d][:5] == pytest.approx([demo.DEFECT_RATES[s][d] for s in sources]), d
        assert table[d][5] == pytest.approx(overall[d], abs=0.0006), d


def test_overall_rates_are_the_issue_targets():
    targets = dict(zip(demo.DEFECTS, (0.15, 0.05, 0.05, 0.03, 0.03, 0.05, 0.04, 0.03)))
    for d, rate in demo.expected_rates().items():
        assert rate == pytest.approx(targets[d], abs=0.006), d
    assert sum(demo.SOURCE_SHARES.values()) == pytest.approx(1.0)


def test_defect_rates_within_tolerance(generated):
    rates = generated.defects.select(pl.col(d).mean() for d in demo.DEFECTS).row(0, named=True)
    for d, expected in demo.expected_rates().items():
        assert rates[d] == pytest.approx(expected, abs=0.004), d
    assert generated.lineage["defect_rates_overall"] == demo.expected_rates()
    assert generated.lineage["defect_counts"] == {d: int(generated.defects[d].sum()) for d in demo.DEFECTS}


def test_defect_rates_per_source(joined):
    for source, n in zip(demo.SOURCE_SHARES, demo.split_counts(ROWS, demo.SOURCE_SHARES)):
        part = joined.filter(pl.col("source") == source)
        assert part.height == n
        for d in demo.DEFECTS:
            assert part[d].mean() == pytest.approx(demo.DEFECT_RATES[source][d], abs=1.5 / n), (source, d)


def test_source_proportions(generated):
    shares = generated.pool["source"].value_counts(normalize=True, name="share")
    got = dict(zip(shares["source"], shares["share"]))
    assert got == pytest.approx(demo.SOURCE_SHARES, abs=0.001)


def test_caption_and_image_defects_are_exclusive(generated):
    d = generated.defects
    caption_defects = d.select(pl.sum_horizontal("mismatched", "spam", "foreign_language")).to_series()
    image_defects = d.select(pl.sum_horizontal("blank", "tiny", "rendered_text")).to_series()
    copies = d.select(pl.sum_horizontal("exact_duplicate", "near_duplicate")).to_series()
    assert caption_defects.max() <= 1 and image_defects.max() <= 1 and copies.max() <= 1


# ------------------------------------------------------------------ each defect means what it says


def test_all_pngs_decode_to_their_size(generated):
    for png, w, h in generated.pool.select("image", "width", "height").iter_rows():
        img = synth.decode_png(png)
        assert img.shape == (h, w, 3)


def test_exact_duplicates_share_bytes_and_text(joined):
    originals = joined.filter(pl.col("dup_group").is_not_null() & (pl.col("id") == pl.col("dup_group")))
    copies = joined.filter(pl.col("exact_duplicate"))
    assert copies.height > 0
    pairs = copies.join(originals, left_on="dup_group", right_on="id", suffix="_orig")
    assert pairs.height == copies.height  # every copy's original is in the pool
    assert (pairs["image"] == pairs["image_orig"]).all()
    assert (pairs["text"] == pairs["text_orig"]).all()
    assert (pairs["width"] == pairs["width_orig"]).all()
    # originals are clean and unflagged; one row per group is exactly the unflagged rows
    assert not originals.select(pl.any_horizontal(demo.DEFECTS)).to_series().any()
    grouped = joined.filter(pl.col("dup_group").is_not_null())
    kept = grouped.filter(~pl.col("exact_duplicate") & ~pl.col("near_duplicate"))
    assert grouped["dup_group"].n_unique() == kept.height


def test_near_duplicates_differ_slightly(joined):
    originals = joined.filter(pl.col("id") == pl.col("dup_group")).select("id", "image", "text")
    copies = joined.filter(pl.col("near_duplicate"))
    pairs = copies.join(originals, left_on="dup_group", right_on="id", suffix="_orig")
    assert pairs.height == copies.height > 0
    for png, png_orig, text, text_orig in pairs.select("image", "image_orig", "text", "text_orig").iter_rows():
        assert png != png_orig and text != text_orig
        a, b = synth.decode_png(png).astype(int), synth.decode_png(png_orig).astype(int)
        assert a.shape == b.shape
        best = min(np.abs(np.roll(b, (dy, dx), axis=(0, 1)) - a).mean() for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        assert best <= 1.0  # the same picture, moved by a pixel, with a little noise
        words, words_orig = text.split(" "), text_orig.split(" ")
        if len(words) == len(words_orig):
            assert sum(x != y for x, y in zip(words, words_orig)) == 1
        else:
            assert words[:-1] == words_orig and len(words) == len(words_orig) + 1


def test_tiny_images_are_tiny(joined):
    tiny = joined.filter(pl.col("tiny"))
    assert tiny.height > 0
    assert (tiny["width"] < 16).all() and (tiny["height"] < 16).all()
    assert tiny["width"].min() >= demo.TINY_SIDES[0]
    for png, w, h in tiny.select("image", "width", "height").iter_rows():
        assert synth.decode_png(png).shape[:2] == (h, w)
    rest = joined.filter(~pl.col("tiny"))
    assert (rest["width"] >= 24).all() and (rest["height"] >= 24).all()
    assert (rest["width"] == 32).mean() > 0.6  # mostly 32x32, with variety
    assert rest.select(pl.struct("width", "height").n_unique()).item() >= 6


def test_blank_images_are_one_color(joined):
    blank = joined.filter(pl.col("blank"))
    assert blank.height > 0
    for png in blank["image"]:
        img = synth.decode_png(png).reshape(-1, 3)
        assert (img == img[0]).all()
    for png in joined.filter(~pl.col("blank"))["image"].head(200):
        img = synth.decode_png(png).reshape(-1, 3)
        assert not (img == img[0]).all()


def test_rendered_text_draws_a_banner(joined):
    texted = joined.filter(pl.col("rendered_text"))
    assert texted.height > 0
    for png in texted["image"]:
        img = synth.decode_png(png)
        flat_rows = [(row == row[0]).all() and row[0, 0] in (0, 255) and len(set(row[0])) == 1 for row in img]
        assert any(flat_rows)


def test_foreign_captions_have_no_english_color_word(joined):
    foreign = joined.filter(pl.col("foreign_language"))
    assert foreign.height > 0
    assert set(foreign["language"]) <= set(synth.LANGUAGES)
    assert len(set(foreign["language"])) == 3
    for text in foreign["text"]:
        assert not _words(text) & ENGLISH_COLORS, text
    assert (joined.filter(~pl.col("foreign_language"))["language"] == "en").all()


def test_spam_captions_say_nothing_about_the_image(joined):
    spam = joined.filter(pl.col("spam"))
    assert spam.height > 0
    vocabulary = {w for values in synth.ATTRIBUTES.values() for v in values for w in v.split()}
    for text in spam["text"]:
        assert not _words(text) & vocabulary, text


def test_mismatched_captions_name_no_true_attribute(joined):
    rows = joined.filter(pl.col("mismatched")).select("text", *synth.ATTRIBUTES).iter_rows(named=True)
    for row in rows:
        named = _named(row["text"])
        assert {name for name, _ in named} & {"shape", "color"}, row  # it says something, and all of it is wrong
        assert not named & {(k, row[k]) for k in synth.ATTRIBUTES}, row


def test_clean_coco_captions_are_accurate(joined):
    clean = joined.filter((pl.col("source") == "coco") & ~pl.any_horizontal(demo.DEFECTS)).select(
        "text", *synth.ATTRIBUTES
    )
    assert clean.height > 100
    for row in clean.iter_rows(named=True):
        words = _words(row["text"])
        for name in synth.ATTRIBUTES:
            assert set(row[name].split()) <= words, row


def test_urls_follow_the_source(joined):
    assert joined.filter(pl.col("source") == "coco")["url"].str.starts_with("http://images.cocodataset.org/").all()
    assert joined.filter(pl.col("source") == "sbu")["url"].str.contains("flickr").all()
    assert joined["url"].n_unique() > 0.99 * ROWS


# ------------------------------------------------------------------ synth


def test_render_draws_position_and_size():
    rng = np.random.default_rng(7)
    attrs = synth.sample_attributes(600, rng)
    images = synth.render_images(attrs, 32, rng).astype(int)
    background = np.median(images.reshape(len(images), -1, 3), axis=1)
    fg = np.abs(images - background[:, None, None, :]).max(axis=3) > 30
    ys, xs = np.mgrid[0:32, 0:32]
    area = fg.sum(axis=(1, 2))
    cx, cy = (fg * xs).sum(axis=(1, 2)) / area, (fg * ys).sum(axis=(1, 2)) / area
    expected = {
        "center": (16, 16), "top left": (9, 9), "top right": (23, 9), "bottom left": (9, 23), "bottom right": (23, 23),
    }  # fmt: skip
    for i, pos in enumerate(synth.attribute_names(attrs)["position"]):
        ex, ey = expected[pos]
        assert abs(cx[i] - ex) < 4 and abs(cy[i] - ey) < 4, (i, pos)
    large = attrs["size"] == synth.SIZES.index("large")
    assert np.median(area[large]) > 2 * np.median(area[~large])


def test_synth_is_deterministic_and_encodes_standard_png():
    def make():
        rng = np.random.default_rng(3)
        attrs = synth.sample_attributes(50, rng)
        images = synth.render_images(attrs, (24, 40), rng)
        return images, synth.encode_png(images), synth.caption(attrs, "laion", rng)

    (images, pngs, texts), (images2, pngs2, texts2) = make(), make()
    assert (images == images2).all() and pngs == pngs2 and texts == texts2
    assert images.shape == (50, 24, 40, 3) and images.dtype == np.uint8
    for img, png in zip(images, pngs):
        assert (synth.decode_png(png) == img).all()
    many = np.repeat(images, 200, axis=0)  # the threaded path gives the same bytes
    assert synth.encode_png(many, threads=2) == synth.encode_png(many, threads=1)


def test_caption_styles():
    rng = np.random.default_rng(0)
    attrs = synth.sample_attributes(200, rng)
    names = synth.attribute_names(attrs)
    for style in synth.CAPTION_STYLES:
        texts = synth.caption(attrs, style, rng)
        assert len(texts) == 200 and all(texts)
        if style in ("coco", "vg", "cc3m", "laion", "sbu"):
            for i, text in enumerate(texts):  # partial styles may drop attributes, never name a wrong one
                named = _named(text)
                assert named <= {(k, names[k][i]) for k in synth.ATTRIBUTES}, (style, text)
                assert {name for name, _ in named} & {"shape", "color"}, (style, text)
    assert synth.caption(synth.take(attrs, [0]), "fr", rng)[0].startswith(("un ", "une "))
    with pytest.raises(ValueError, match="unknown caption style"):
        synth.caption(attrs, "tweet", rng)


# ------------------------------------------------------------------ clean data and the pool on disk


def test_generate_clean_streams_are_disjoint(generated):
    eval_ = demo.generate_clean(300, seed=0, stream="eval")
    teacher = demo.generate_clean(300, seed=0, stream="teacher")
    assert eval_.equals(demo.generate_clean(300, seed=0, stream="eval"))
    assert eval_.columns == ["id", "image", "width", "height", "text", *synth.ATTRIBUTES]
    assert eval_["id"][0] == "e000000" and teacher["id"][0] == "t000000"
    pool_images = set(generated.pool["image"])
    assert not pool_images & set(eval_["image"]) and not set(eval_["image"]) & set(teacher["image"])
    assert (eval_["width"] == synth.IMAGE_SIZE).all()
    for row in eval_.head(50).iter_rows(named=True):
        assert {row["shape"], row["color"], row["texture"]} <= _words(row["text"])
    with pytest.raises(ValueError):
        demo.generate_clean(10, stream="pool")


def test_make_demo_writes_pool_and_defects_asset(tmp_path):
    from cbdsl.pipelines.data import errors, pool as pool_mod

    path = demo.make_demo(tmp_path / "demo", rows=300, seed=0)
    pool = pool_mod.Pool.open(path)
    assert pool.name == "demo" and pool.id_column == "id"
    assert pool.card.rows == 300
    assert pool.card.lineage["defect_rates"] == demo.DEFECT_RATES
    assert pool.card.lineage["seed"] == 0 and pool.card.lineage["demo_version"] == demo.DEMO_VERSION
    assert set(pool.schema) == set(POOL_COLUMNS)
    expected = demo.generate_demo(300, seed=0)
    assert pool.scan().collect().equals(expected.pool)
    labels = pl.read_parquet(pool.asset_path("demo-defects"))
    assert labels.equals(expected.defects)
    assert pool.card.assets["demo-defects"].kind == "truth"
    with pytest.raises(errors.PoolError, match="already exists"):
        demo.make_demo(path, rows=300)
    demo.make_demo(path, rows=200, overwrite=True)
    assert pool_mod.Pool.open(path).card.rows == 200


@pytest.mark.slow
def test_default_size_generates_in_seconds():
    start = time.perf_counter()
    generated = demo.generate_demo()
    elapsed = time.perf_counter() - start
    assert generated.pool.height == demo.DEFAULT_ROWS == 50_000
    rates = generated.defects.select(pl.col(d).mean() for d in demo.DEFECTS).row(0, named=True)
    for d, expected in demo.expected_rates().items():
        assert rates[d] == pytest.approx(expected, abs=0.001), d
    print(f"generate_demo(50_000): {elapsed:.2f}s")
    assert elapsed < 20, f"generate_demo(50_000) took {elapsed:.1f}s"
