"""DataComp's filtering baselines, byte for byte, on DataComp's own layout (issue 12).

A download as DataComp ships it (parquet shards of metadata, each with the ``.npz`` of its CLIP
embeddings) with what real data holds: float32 CLIP scores with many exact ties and NaNs, zero
image sides, and captions that use every Unicode space, the four separators U+001C-U+001F,
newlines and NUL. It is imported with the real CLI, the cluster assets are registered, each
example of ``examples/`` runs with ``cbdsl run --format datacomp``, and its ``subset.npy`` must
equal, byte for byte, the file DataComp's own code writes: its per-shard pandas/NumPy/torch
formulas (mlfoundations/datacomp, baselines/apply_filter.py), with the real ``fasttext.tokenize``,
concatenated, ``uids.sort()``-ed and ``np.save``-d as ``apply_filter`` does.

Language aside: DataComp's fastText ``lid.176.bin`` (and gcld3 for LAION) cannot be had offline and
cbdsl's ``lang`` is py3langid, so the examples' `lang(text) == "en"` lines are dropped and the
reference formulas take every caption as English.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import fasttext
import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARDS, ROWS, DIM, CENTROIDS = 3, 1500, 16, 12
TARGET_CLUSTERS = [0, 2, 3, 5, 8, 11]
SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()] + ["\x00", "\u200b", "\ufeff"]
WORDS = ["a", "dog", "on", "grass", "chat", "東京", "ñu", "photo", "of", "x"]


def captions(rng: np.random.Generator, n: int) -> list[str]:
    """Captions of 0-6 words joined by runs of spaces of every kind, sometimes short or empty."""
    out = []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(0, 7))))
        seps = [rng.choice(SPACES if rng.random() < 0.4 else [" "], size=int(rng.integers(1, 3))) for _ in words]
        text = "".join(w + "".join(s) for w, s in zip(words, seps))
        if rng.random() < 0.3:
            text = "".join(rng.choice(SPACES, size=int(rng.integers(0, 3)))) + text
        out.append(text)
    return out


def scores(rng: np.random.Generator, n: int, mean: float, nan: int, grid: int) -> np.ndarray:
    x = (np.round(rng.normal(mean, 0.05, n) * grid) / grid).astype(np.float32)  # many exact ties
    x[rng.choice(n, nan, replace=False)] = np.nan
    return x


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """The download folder, the centroids and the target clusters."""
    root = tmp_path_factory.mktemp("datacomp")
    meta = root / "metadata"
    meta.mkdir()
    rng = np.random.default_rng(12)
    centroids = rng.normal(size=(CENTROIDS, DIM)).astype(np.float32)
    for shard in range(SHARDS):
        n = ROWS
        uids = [rng.bytes(16).hex() for _ in range(n)]  # 128-bit, as DataComp's (both halves in use)
        width = rng.integers(100, 900, n)
        height = rng.integers(100, 900, n)
        width[rng.choice(n, 5, replace=False)] = 0
        height[:3] = width[:3] * 3  # aspect ratio exactly 3: kept by `<= 3`
        frame = pl.DataFrame({
            "uid": uids, "url": [f"http://x/{u}.jpg" for u in uids], "text": captions(rng, n),
            "original_width": width, "original_height": height,
            "clip_b32_similarity_score": scores(rng, n, 0.28, 40, 256),
            "clip_l14_similarity_score": scores(rng, n, 0.25, 60, 4096),
            "sha256": ["0" * 64] * n,
        })
        frame.write_parquet(meta / f"{shard:08d}.parquet")
        l14 = (centroids[rng.integers(0, CENTROIDS, n)] + rng.normal(scale=0.8, size=(n, DIM))).astype(np.float16)
        np.savez(meta / f"{shard:08d}.npz", l14_img=l14, l14_txt=l14[:, ::-1].copy(),
                 b32_img=l14[:, :8].copy(), b32_txt=l14[:, 8:].copy())
    np.save(root / "centroids.npy", centroids)
    (root / "clusters.txt").write_text("".join(f"{c}\n" for c in TARGET_CLUSTERS), encoding="utf-8")
    return meta, root / "centroids.npy", root / "clusters.txt"


def cbdsl(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "cbdsl", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def pool(layout, tmp_path_factory):
    meta, centroids, clusters = layout
    dest = tmp_path_factory.mktemp("pools") / "datacomp-small"
    cbdsl("pool", "import", "datacomp", str(meta), str(dest))
    cbdsl("pool", "add-asset", str(dest), "pool-centroids", str(centroids), "--kind", "centroids")
    cbdsl("pool", "add-asset", str(dest), "imagenet1k-clusters", str(clusters), "--kind", "ids")
    return dest


# --- DataComp's formulas, per shard as apply_filter's helpers run them ------------------------------------------


def shards(meta: Path) -> list[Path]:
    return sorted(meta.glob("*.parquet"))


def uid_pairs(uids) -> np.ndarray:
    return np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], np.dtype("u8,u8"))


def get_threshold(meta: Path, key: str, fraction: float) -> float:
    df = pd.concat([pd.read_parquet(p, columns=[key]) for p in shards(meta)])
    n = int(len(df) * fraction)
    return -np.sort(-df[key].values)[n]


def no_filter(meta: Path, df: pd.DataFrame) -> np.ndarray:
    return np.ones(len(df), dtype=bool)


def basic_filter(meta: Path, df: pd.DataFrame) -> np.ndarray:
    """load_uids_with_basic_filter_helper, every caption English."""
    caption_num_words = df.text.apply(lambda x: len(x.split()))
    caption_num_chars = df.text.apply(len)
    caption_mask = (caption_num_words > 2) & (caption_num_chars > 5)
    min_image_dim = np.minimum(df.original_width, df.original_height)
    max_image_dim = np.maximum(df.original_width, df.original_height)
    aspect_ratio = max_image_dim / min_image_dim
    image_mask = (min_image_dim >= 200) & (aspect_ratio <= 3.0)
    return (caption_mask & image_mask).to_numpy()


def clip_l14_top30(meta: Path, df: pd.DataFrame) -> np.ndarray:
    threshold = get_threshold(meta, "clip_l14_similarity_score", 0.3)
    return (df["clip_l14_similarity_score"] >= threshold).to_numpy()


def laion(meta: Path, df: pd.DataFrame) -> np.ndarray:
    return (df["clip_b32_similarity_score"] >= 0.28).to_numpy()


def image_based(meta: Path, df: pd.DataFrame, path: Path, centroids: np.ndarray) -> np.ndarray:
    """image_filter_helper: caption_filter, then argmax of the dot product with the pool centroids
    (get_centroid_ids_gpu's einsum, in float32 on the CPU), kept when among the target clusters."""
    caption = (df.text.apply(lambda x: len(fasttext.tokenize(x))) > 1) & (df.text.apply(len) > 5)
    features = torch.from_numpy(np.load(path.with_suffix(".npz"))["l14_img"]).float()
    labels = torch.argmax(torch.einsum("ik, jk -> ij", features, torch.from_numpy(centroids)), dim=1).numpy()
    return caption.to_numpy() & np.isin(labels, TARGET_CLUSTERS)


def reference(meta: Path, centroids: Path, rule) -> bytes:
    """What DataComp writes: the helpers' uids over every shard, concatenated, sorted, np.save-d."""
    parts = []
    for path in shards(meta):
        df = pd.read_parquet(path)
        mask = rule(meta, df, path, np.load(centroids)) if rule in (image_based, image_and_clip) else rule(meta, df)
        parts.append(uid_pairs(df.uid[mask]))
    uids = np.concatenate(parts)
    uids.sort()
    out = io.BytesIO()
    np.save(out, uids)
    return out.getvalue()


def image_and_clip(meta: Path, df: pd.DataFrame, path: Path, centroids: np.ndarray) -> np.ndarray:
    return clip_l14_top30(meta, df) & image_based(meta, df, path, centroids)


# --- cbdsl's examples on the imported pool ------------------------------------------------------------------------

# example -> (DataComp's rule, the textual change that makes the example read DataComp's metadata)
CASES = {
    "datacomp_no_filter": (no_filter, {}),
    "datacomp_basic": (basic_filter, {}),
    "datacomp_clip_l14_top30": (clip_l14_top30, {
        r'let clip = clip_score\(image, text, model="ViT-L-14", pretrained="openai"\)':
            "let clip = clip_l14_similarity_score"}),
    "laion_clip_b32_028": (laion, {
        r'let clip = clip_score\(image, text, model="ViT-B-32", pretrained="openai"\)':
            "let clip = clip_b32_similarity_score"}),
    "datacomp_image_based": (image_based, {}),
    "datacomp_image_based_and_clip": (image_and_clip, {}),
}


def language_aside(text: str, subs: dict[str, str]) -> str:
    text = re.sub(r'^filter lang\(text\) == "en"\n', "", text, flags=re.MULTILINE)
    for pattern, replacement in subs.items():
        text, n = re.subn(pattern, replacement, text)
        assert n == 1, pattern
    return text


@pytest.mark.parametrize("example", list(CASES))
def test_the_example_writes_datacomps_subset_byte_for_byte(example, layout, pool, tmp_path):
    meta, centroids, _clusters = layout
    rule, subs = CASES[example]
    policy = tmp_path / f"{example}.cur"
    policy.write_text(language_aside((ROOT / "examples" / f"{example}.cur").read_text(encoding="utf-8"), subs),
                      encoding="utf-8")
    cbdsl("run", str(policy), "--pool", str(pool), "--format", "datacomp", "--out", str(tmp_path / "out"))
    got = (tmp_path / "out" / "subset.npy").read_bytes()
    expected = reference(meta, centroids, rule)
    assert np.array_equal(np.load(io.BytesIO(got)), np.load(io.BytesIO(expected)))
    assert got == expected


def test_the_data_hold_what_tells_the_rules_apart(layout):
    """The layout has the cases that broke cbdsl before issue 12: without them the test proves little."""
    meta, _c, _k = layout
    df = pd.concat([pd.read_parquet(p) for p in shards(meta)])
    l14 = df["clip_l14_similarity_score"].to_numpy()
    assert np.isnan(l14).sum() == 60 * SHARDS and np.isnan(df["clip_b32_similarity_score"]).sum() == 40 * SHARDS
    threshold = get_threshold(meta, "clip_l14_similarity_score", 0.3)
    present = l14[~np.isnan(l14)]
    assert threshold != -np.sort(-present)[int(len(present) * 0.3)]  # NaN in N moves the cut
    assert (l14 == threshold).sum() > 1  # ties at the cut
    texts = df.text.tolist()
    unicode_split = pl.Series(texts).str.count_matches(r"\S+").to_list()  # Unicode's White_Space, as before
    assert sum(u != len(t.split()) for u, t in zip(unicode_split, texts)) > 10  # U+001C-U+001F
    assert sum(len(fasttext.tokenize(t)) != len(t.split()) for t in texts) > 100  # newlines, NBSP, U+3000
    assert ((df.original_height == 3 * df.original_width) & (df.original_width >= 200)).sum() >= 1
