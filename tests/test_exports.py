"""Exporters: DataComp subset .npy, LLaVA JSON, Hugging Face save_to_disk, parquet manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cbdsl.pipelines.data.exports import FORMATS, export
from cbdsl.pipelines.data.uids import uid_pairs
from cbdsl.pipelines.data.importers import import_pool
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.writing import write_pool
from cbdsl.pipelines.data.errors import PoolError

sys.path.insert(0, str(Path(__file__).parent / "data"))
from pool_fixtures import LLAVA_CASES, write_datacomp, write_llava  # noqa: E402


@pytest.fixture(scope="module")
def datacomp_pool(tmp_path_factory) -> Pool:
    tmp = tmp_path_factory.mktemp("dc")
    return import_pool("datacomp", write_datacomp(tmp / "meta", n=100, files=2), tmp / "pool", "dc")


@pytest.fixture(scope="module")
def llava_pool(tmp_path_factory) -> Pool:
    tmp = tmp_path_factory.mktemp("llava")
    return import_pool("llava", write_llava(tmp / "mix.json"), tmp / "pool", "llava")


def selection_of(pool: Pool, rows: list[int]) -> pl.DataFrame:
    """A selection as the executor makes one: ids in selection order, group, score, rank."""
    ids = pool.scan([pool.id_column]).collect()[pool.id_column]
    picked = [ids[i] for i in rows]
    return pl.DataFrame({
        pool.id_column: picked,
        "group": ["a" if i % 2 else "b" for i in rows],
        "score": [float(-k) for k in range(len(rows))],
        "rank": list(range(len(rows))),
    })


def test_datacomp_subset_is_what_datacomp_reads(datacomp_pool, tmp_path):
    sel = selection_of(datacomp_pool, [57, 3, 99, 0, 42, 18])
    path = export(datacomp_pool, sel, tmp_path, "datacomp")
    assert path == tmp_path / "subset.npy"
    arr = np.load(path)
    assert arr.dtype == np.dtype("u8,u8") and arr.ndim == 1
    assert arr.tolist() == sorted(arr.tolist())
    back = [f"{int(hi):016x}{int(lo):016x}" for hi, lo in arr.tolist()]
    assert back == sorted(sel["id"].to_list())
    # the same array DataComp's apply_filter.py builds
    expected = np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in sel["id"].to_list()], np.dtype("u8,u8"))
    expected.sort()
    assert arr.tobytes() == expected.tobytes()


def test_uid_pairs_edge_values():
    uids = pl.Series(["f" * 32, "0" * 32, "0" * 16 + "f" * 16])
    arr = uid_pairs(uids)
    assert arr.tolist() == [(2**64 - 1, 2**64 - 1), (0, 0), (0, 2**64 - 1)]


def test_uid_pairs_sorted_equals_numpys_sort_of_the_array():
    rng = np.random.default_rng(0)
    highs = rng.choice([0, 7, 2**63, 2**64 - 1], 300)  # many equal high halves: the low half must order them
    uids = pl.Series([f"{int(h):016x}{int(v):016x}" for h, v in zip(highs, rng.integers(0, 2**63, 300))])
    expected = uid_pairs(uids)
    expected.sort()
    assert uid_pairs(uids, sort=True).tobytes() == expected.tobytes()


def test_datacomp_needs_hex_uids(llava_pool, tmp_path):
    with pytest.raises(PoolError, match="needs ids that are 32 lowercase hex uids") as err:
        export(llava_pool, selection_of(llava_pool, [0, 1]), tmp_path, "datacomp")
    assert "fmt='parquet'" in err.value.hint


def test_llava_json_is_the_original_records_in_order(llava_pool, tmp_path):
    rows = [12, 0, 29, 2, 11, 8]
    sel = selection_of(llava_pool, rows)
    path = export(llava_pool, sel, tmp_path, "llava")
    assert path.name == "llava.json"
    back = json.loads(path.read_text(encoding="utf-8"))
    assert back == [LLAVA_CASES[i][0] for i in rows]
    assert [r["id"] for r in back][3:5] == [1, 2375429]  # int ids come back as ints, not the pool's strings


def test_llava_needs_records(datacomp_pool, tmp_path):
    with pytest.raises(PoolError, match="no `record` column"):
        export(datacomp_pool, selection_of(datacomp_pool, [1]), tmp_path, "llava")


def test_empty_llava_selection(llava_pool, tmp_path):
    sel = selection_of(llava_pool, [])
    assert json.loads(export(llava_pool, sel, tmp_path, "llava").read_text()) == []


def test_parquet_manifest_is_the_selection_as_given(datacomp_pool, tmp_path):
    sel = selection_of(datacomp_pool, [5, 4, 3])
    path = export(datacomp_pool, sel, tmp_path, "parquet")
    assert pl.read_parquet(path).equals(sel)


def test_hf_save_to_disk_round_trip(llava_pool, tmp_path):
    import datasets

    rows = [3, 1, 20]
    sel = selection_of(llava_pool, rows)
    path = export(llava_pool, sel, tmp_path, "hf")
    ds = datasets.load_from_disk(str(path))
    assert ds.num_rows == 3
    assert ds["id"] == sel["id"].to_list()
    assert ds["source"] == [LLAVA_CASES[i][1] for i in rows]
    assert ds["rank"] == [0, 1, 2] and set(ds.column_names) >= {"text", "record", "group", "score"}
    export(llava_pool, sel.head(1), tmp_path, "hf")  # replaces the previous export
    assert datasets.load_from_disk(str(path)).num_rows == 1


def test_hf_export_with_embeddings_and_int_ids(tmp_path):
    import datasets

    frame = pl.DataFrame({"id": [1, 2, 3], "emb": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], "img": [b"a", b"b", b"c"]})
    pool = write_pool(frame, tmp_path / "p", name="p", lineage={"importer": "test"})
    ds = datasets.load_from_disk(str(export(pool, pl.DataFrame({"id": [3, 1]}), tmp_path / "out", "hf")))
    assert ds["id"] == [3, 1] and ds["img"] == [b"c", b"a"]
    assert np.allclose(np.array(ds["emb"]), [[0.5, 0.6], [0.1, 0.2]])


def test_hf_without_datasets_says_how_to_install(llava_pool, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(PoolError, match="needs the `datasets` package") as err:
        export(llava_pool, selection_of(llava_pool, [0]), tmp_path, "hf")
    assert err.value.hint == "pip install datasets"
    assert not (tmp_path / "hf_dataset").exists()


def test_selection_errors(datacomp_pool, tmp_path):
    with pytest.raises(PoolError, match="unknown export format 'datacmp'") as err:
        export(datacomp_pool, selection_of(datacomp_pool, [0]), tmp_path, "datacmp")
    assert "did you mean `datacomp`?" in err.value.hint
    with pytest.raises(PoolError, match="has no id column 'id'"):
        export(datacomp_pool, pl.DataFrame({"uidd": ["x"]}), tmp_path, "parquet")
    sel = selection_of(datacomp_pool, [0, 1, 2]).with_columns(
        pl.when(pl.col("rank") == 1).then(pl.lit("f" * 32)).otherwise("id").alias("id"))
    with pytest.raises(PoolError, match="is not in pool 'dc'") as err:
        export(datacomp_pool, sel, tmp_path, "datacomp")
    assert err.value.row == 1
    dup = pl.concat([selection_of(datacomp_pool, [0, 1]), selection_of(datacomp_pool, [1])])
    with pytest.raises(PoolError, match="duplicate ids") as err:
        export(datacomp_pool, dup, tmp_path, "parquet")
    assert err.value.row == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # check=False is for a selection an earlier export already checked: it trusts the ids as given
    assert export(datacomp_pool, sel, tmp_path, "datacomp", check=False).name == "subset.npy"


def test_every_format_has_a_file_name():
    assert set(FORMATS) == {"parquet", "datacomp", "llava", "hf", "curation-bench"}
