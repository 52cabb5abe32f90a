"""`cbdsl pool import datacomp` on DataComp's download layout: parquet shards with their `.npz` embeddings.

A shard is ``NNNNNNNN.parquet`` with ``NNNNNNNN.npz`` beside it (float16
arrays ``l14_img``, ``l14_txt``, ``b32_img``, ``b32_txt``, written by
``np.savez``, row i of each being row i of the parquet). The import makes each
array an embedding column, checks the shards against each other, and reads the
embeddings a shard at a time; the image-based baseline then runs on the pool.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.data import writing
from cbdsl.pipelines.data.importers import import_pool, read_datacomp
from cbdsl.pipelines.data.hashing import sha256_file
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.writing import write_pool
from cbdsl.pipelines.data.errors import PoolError

sys.path.insert(0, str(Path(__file__).parent / "data"))
from pool_fixtures import datacomp_frame  # noqa: E402

DIMS = {"l14_img": 768, "l14_txt": 768, "b32_img": 512, "b32_txt": 512}
ROWS = (300, 250, 280)


def write_layout(directory: Path, rows=ROWS, dims=DIMS, seed: int = 0, embed=None) -> Path:
    """DataComp shards ``00000000.parquet`` + ``00000000.npz`` ... in ``directory``, as its download writes them.

    ``embed(rng, n, key, dim)`` makes a shard's array (default: normal noise); it is stored as float16."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = datacomp_frame(sum(rows), seed)
    rng = np.random.default_rng(seed)
    start = 0
    for i, n in enumerate(rows):
        frame.slice(start, n).write_parquet(directory / f"{i:08d}.parquet")
        arrays = {key: (embed(rng, n, key, dim) if embed else rng.standard_normal((n, dim))).astype(np.float16)
                  for key, dim in dims.items()}
        with open(directory / f"{i:08d}.npz", "wb") as fh:
            np.savez(fh, **arrays)
        start += n
    return directory


def npz_arrays(directory: Path, key: str) -> np.ndarray:
    """``key`` of every shard's npz, stacked in shard order (DataComp's own read: np.load(f)[key])."""
    return np.concatenate([np.load(p)[key] for p in sorted(directory.glob("*.npz"))])


def resave(path: Path, **changes) -> None:
    """Rewrite a shard's npz with some arrays replaced (None drops one)."""
    arrays = dict(np.load(path))
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


# --------------------------------------------------------------------------- the columns


def test_each_npz_array_is_an_embedding_column_equal_row_by_row(tmp_path):
    src = write_layout(tmp_path / "meta")
    pool = import_pool("datacomp", src, tmp_path / "pool", "dc")
    card = pool.card
    assert card.rows == sum(ROWS)
    assert list(card.schema)[-4:] == list(DIMS)  # after the metadata, in the npz's order
    for key, dim in DIMS.items():
        assert card.schema[key] == "embedding" and card.dtypes[key] == str(pl.Array(pl.Float32, dim))
        assert card.stats[key] == {"null_count": 0, "dim": dim}
        stored = pool.scan([key]).collect().get_column(key).to_numpy()
        assert stored.dtype == np.float32 and stored.shape == (sum(ROWS), dim)
        assert np.array_equal(stored, npz_arrays(src, key).astype(np.float32))  # float16 -> float32 is exact
    # row i of the pool is row i of the parquet shards in order
    uids = pl.concat([pl.read_parquet(p) for p in sorted(src.glob("*.parquet"))])["uid"]
    assert pool.scan(["id"]).collect()["id"].to_list() == uids.to_list()


def test_the_npz_files_are_sources_with_their_sha256(tmp_path):
    src = write_layout(tmp_path / "meta")
    lineage = import_pool("datacomp", src, tmp_path / "pool", "dc").card.lineage
    files = [Path(s["file"]).name for s in lineage["sources"]]
    assert files == ["00000000.parquet", "00000000.npz", "00000001.parquet", "00000001.npz",
                     "00000002.parquet", "00000002.npz"]
    assert all(s["sha256"] == sha256_file(src / Path(s["file"]).name) for s in lineage["sources"])


def test_the_streamed_pool_is_the_pool_the_whole_frame_gives(tmp_path):
    """Shard by shard or whole, the same shards, card and content hash (shards of 256 rows cut across files)."""
    src = write_layout(tmp_path / "meta")
    imported = read_datacomp(src)
    lineage = {**imported.lineage, "created_at": "2024-01-01T00:00:00+00:00"}
    streamed = write_pool(imported.frame, tmp_path / "streamed", name="dc", lineage=lineage, shard_rows=256,
                          streamed=imported.streamed)
    whole = imported.frame.with_columns(
        pl.Series(key, npz_arrays(src, key).astype(np.float32)) for key in DIMS)
    assert whole.estimated_size() == imported.frame.estimated_size() + imported.streamed.estimated_size(whole.height)
    in_memory = write_pool(whole, tmp_path / "whole", name="dc", lineage=lineage, shard_rows=256)
    assert [s.rows for s in streamed.card.shards] == [256, 256, 256, 62]
    assert streamed.card == in_memory.card
    assert streamed.content_hash == in_memory.content_hash


def test_streamed_shards_are_capped_by_bytes():
    """DataComp's four embeddings are 10 KB a row: a shard holds about 256 MiB, not a million rows."""
    per_row = 4 * sum(DIMS.values()) + 300
    assert writing.streamed_shard_rows(per_row * 12_800_000, 12_800_000, 1_000_000) == 24_576  # 25,468 down to 1Ki rows
    assert writing.streamed_shard_rows(per_row * 500, 500, 100) == 100  # a smaller shard_rows stands
    assert writing.streamed_shard_rows(10**9 * 5, 5, 1_000_000) == 1024  # never under 1Ki rows


def test_a_metadata_only_folder_imports_as_before(tmp_path):
    """No npz: the frame goes to write_pool whole, as before the npz columns existed."""
    src = write_layout(tmp_path / "meta")
    for npz in src.glob("*.npz"):
        npz.unlink()
    imported = read_datacomp(src)
    assert imported.streamed is None and [Path(s["file"]).suffix for s in imported.lineage["sources"]] == [".parquet"] * 3
    pool = import_pool("datacomp", src, tmp_path / "pool", "dc")
    before = write_pool(imported.frame, tmp_path / "before", name="dc", lineage=imported.lineage)
    assert pool.content_hash == before.content_hash
    assert pool.card.model_copy(update={"lineage": {}}) == before.card.model_copy(update={"lineage": {}})
    assert not any(kind == "embedding" for kind in pool.card.schema.values())


def test_a_single_parquet_file_takes_its_npz(tmp_path):
    src = write_layout(tmp_path / "meta", rows=(120,))
    pool = import_pool("datacomp", src / "00000000.parquet", tmp_path / "pool", "dc")
    assert pool.card.schema["b32_img"] == "embedding" and pool.card.rows == 120


def test_duplicate_uids_across_shards_are_still_found(tmp_path):
    src = write_layout(tmp_path / "meta")
    first = pl.read_parquet(src / "00000000.parquet")
    third = pl.read_parquet(src / "00000002.parquet")
    third.with_columns(pl.Series("uid", [first["uid"][5], *third["uid"][1:]])).write_parquet(src / "00000002.parquet")
    with pytest.raises(PoolError, match="duplicate id") as err:
        read_datacomp(src)
    assert err.value.file.endswith("00000002.parquet") and err.value.row == 0


# --------------------------------------------------------------------------- shards that disagree


def test_an_npz_one_row_short_names_the_file_and_both_counts(tmp_path):
    src = write_layout(tmp_path / "meta")
    resave(src / "00000001.npz", l14_img=np.load(src / "00000001.npz")["l14_img"][:-1])
    with pytest.raises(PoolError) as err:
        import_pool("datacomp", src, tmp_path / "pool", "dc")
    assert err.value.file.endswith("00000001.npz")
    assert "'l14_img' has 249 rows but 00000001.parquet has 250" in err.value.message
    assert "row i of a shard's .npz is row i of its parquet" in err.value.hint
    assert not (tmp_path / "pool").exists()  # checked before anything is written


def test_an_array_missing_from_one_shard(tmp_path):
    src = write_layout(tmp_path / "meta")
    resave(src / "00000002.npz", b32_txt=None)
    with pytest.raises(PoolError) as err:
        read_datacomp(src)
    assert err.value.file.endswith("00000002.npz")
    assert err.value.message == "it has no array 'b32_txt', which 00000000.npz has"
    assert "same arrays" in err.value.hint
    resave(src / "00000002.npz", b32_txt=np.zeros((280, 512), np.float16), extra=np.zeros((280, 4), np.float16))
    with pytest.raises(PoolError, match="it has an array 'extra', which 00000000.npz has not"):
        read_datacomp(src)


def test_a_shard_without_its_npz(tmp_path):
    src = write_layout(tmp_path / "meta")
    (src / "00000001.npz").unlink()
    with pytest.raises(PoolError) as err:
        read_datacomp(src)
    assert err.value.file.endswith("00000001.parquet")
    assert err.value.message == "no 00000001.npz beside 00000001.parquet, while 2 of the 3 shards have their .npz"
    assert "import the metadata alone" in err.value.hint


def test_an_npz_without_its_parquet(tmp_path):
    src = write_layout(tmp_path / "meta")
    (src / "00000002.parquet").unlink()
    with pytest.raises(PoolError, match=r"00000002.npz has no parquet beside it") as err:
        read_datacomp(src)
    assert err.value.file.endswith("00000002.npz")


def test_arrays_of_different_widths_across_shards(tmp_path):
    src = write_layout(tmp_path / "meta")
    resave(src / "00000001.npz", b32_img=np.zeros((250, 768), np.float16))
    with pytest.raises(PoolError, match=r"'b32_img' has 768 values a row, but 512 in 00000000.npz"):
        read_datacomp(src)


@pytest.mark.parametrize("content", ["garbage", "npy", "ints", "empty", "truncated"])
def test_an_npz_that_is_not_a_valid_npz(tmp_path, content):
    src = write_layout(tmp_path / "meta")
    path = src / "00000001.npz"
    if content == "garbage":
        path.write_bytes(b"this is not a zip archive at all")
    elif content == "npy":  # a lone .npy under the npz's name
        with open(path, "wb") as fh:
            np.save(fh, np.zeros((250, 768), np.float16))
    elif content == "ints":
        resave(path, l14_img=np.zeros((250, 768), np.int64))
    elif content == "empty":
        with open(path, "wb") as fh:
            np.savez(fh)
    else:
        path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(PoolError) as err:
        import_pool("datacomp", src, tmp_path / "pool", "dc")
    assert err.value.file.endswith("00000001.npz") and "numpy.savez archive" in err.value.hint
    if content == "ints":
        assert "array 'l14_img' is int64 with shape (250, 768)" in err.value.message


def test_an_array_named_as_a_parquet_column(tmp_path):
    src = write_layout(tmp_path / "meta", dims={"text": 4})
    with pytest.raises(PoolError, match="its array 'text' has the name of a column of the parquet"):
        read_datacomp(src)


def test_the_cli_reports_a_bad_shard_without_a_traceback(tmp_path):
    src = write_layout(tmp_path / "meta")
    resave(src / "00000000.npz", l14_txt=np.load(src / "00000000.npz")["l14_txt"][:-1])
    result = CliRunner().invoke(cli, ["pool", "import", "datacomp", str(src), str(tmp_path / "pool")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "00000000.npz" in result.output and "has 299 rows but 00000000.parquet has 300" in result.output
    assert "hint:" in result.output


# --------------------------------------------------------------------------- memory

_MEASURE = """
import json, sys, tracemalloc
from cbdsl.pipelines.data.importers import import_pool

def rss(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field))

import_pool("datacomp", sys.argv[1], sys.argv[2] + "-warm", "warm", shard_rows=int(sys.argv[3]))  # imports, allocator
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # the peak (VmHWM) starts again from here
before = rss("VmRSS:")
tracemalloc.start()
import_pool("datacomp", sys.argv[4], sys.argv[2], "dc", shard_rows=int(sys.argv[3]))
traced = tracemalloc.get_traced_memory()[1]
print(json.dumps({"rss_growth": rss("VmHWM:") - before, "traced_peak": traced}))
"""


def test_the_import_holds_one_shard_of_embeddings_not_the_matrix(tmp_path):
    """24,000 rows x 1,536 float32 (147 MB) in 24 shards of 1,000 rows (6 MB): the peak stays far below the matrix.

    Measured in a fresh process after a small warm-up import: the growth of
    peak RSS (which sees Polars' allocations too) and tracemalloc's peak
    (NumPy's: a source shard's float16 arrays and a pool shard as float32).
    Measured on this machine: RSS +30-32 MB, traced 14 MB; the same import
    through a whole frame and write_pool: RSS +227 MB, traced 186 MB."""
    dims = {"l14_img": 768, "l14_txt": 768}
    warm = write_layout(tmp_path / "warm", rows=(500, 500), dims=dims)
    src = write_layout(tmp_path / "meta", rows=(1000,) * 24, dims=dims, seed=1)
    matrix = 24_000 * 1536 * 4
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(warm), str(tmp_path / "pool"), "1000", str(src)],
                         capture_output=True, text=True, check=True)
    measured = json.loads(out.stdout)
    assert Pool.open(tmp_path / "pool").card.rows == 24_000
    assert measured["traced_peak"] < 0.25 * matrix, measured
    assert measured["rss_growth"] < 0.4 * matrix, measured


# --------------------------------------------------------------------------- the image-based baseline

CENTROIDS = 16
TARGETS = [1, 4, 7, 9, 12]
POLICY = """policy "dc-image-based-and-clip"

let cluster = kmeans(l14_img, centroids="pool-centroids", spherical=false, assign="dot")

filter top(clip_l14_similarity_score, 0.3)
filter cluster in asset("imagenet1k-clusters")
"""


def test_the_image_based_baseline_runs_on_the_imported_layout_as_datacomp_computes_it(tmp_path, monkeypatch):
    """Imported, assets registered and run through the CLI; the subset equals DataComp's formula in NumPy."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((CENTROIDS, 768)).astype(np.float32)

    def embed(rng, n, key, dim):  # images near one of the centres (no near-ties in the argmax)
        if key != "l14_img":
            return rng.standard_normal((n, dim))
        return centres[rng.integers(0, CENTROIDS, n)] + 0.5 * rng.standard_normal((n, dim))

    src = write_layout(tmp_path / "meta", embed=embed)
    centroids = (centres + 0.1 * rng.standard_normal(centres.shape)).astype(np.float32)
    np.save(tmp_path / "centroids.npy", centroids)
    np.save(tmp_path / "targets.npy", np.array(TARGETS, dtype=np.int64))
    (tmp_path / "policy.cur").write_text(POLICY, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def cbdsl(*args):
        result = CliRunner().invoke(cli, list(args))
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        return result

    cbdsl("pool", "import", "datacomp", str(src), "pool")
    cbdsl("pool", "add-asset", "pool", "pool-centroids", "centroids.npy", "--kind", "centroids")
    cbdsl("pool", "add-asset", "pool", "imagenet1k-clusters", "targets.npy", "--kind", "ids")
    cbdsl("run", "policy.cur", "--pool", "pool", "--format", "datacomp", "--out", "out")
    subset = np.load(tmp_path / "out" / "subset.npy")

    # DataComp: get_threshold, then image_filter_helper's argmax over the npz's l14_img as float32
    meta = pl.concat([pl.read_parquet(p) for p in sorted(src.glob("*.parquet"))])
    scores = meta["clip_l14_similarity_score"].to_numpy()
    threshold = -np.sort(-scores)[int(len(scores) * 0.3)]
    labels = np.argmax(npz_arrays(src, "l14_img").astype(np.float32) @ centroids.T, axis=1)
    keep = (scores >= threshold) & np.isin(labels, TARGETS)
    uids = meta["uid"].to_numpy()[keep]
    expected = np.sort(np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], np.dtype("u8,u8")))
    assert 20 < len(expected) < keep.size // 4  # both filters bite
    assert subset.dtype == np.dtype("u8,u8") and np.array_equal(subset, expected)
