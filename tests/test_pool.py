"""Pools: write/open round trips, the card, determinism, atomic writes, assets, name resolution, errors."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cbdsl.pipelines.data import writing
from cbdsl.pipelines.data.card import PoolCard
from cbdsl.pipelines.data.columns import type_name
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.hashing import sha256_file, sha256_path
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.roots import list_pools, resolve_pool
from cbdsl.pipelines.data.uids import uid_pairs
from cbdsl.pipelines.data.writing import add_asset, write_pool

sys.path.insert(0, str(Path(__file__).parent / "data"))
from pool_fixtures import datacomp_frame  # noqa: E402

LINEAGE = {"importer": "test", "created_at": "2024-01-01T00:00:00+00:00"}


def small_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(10)],
            "x": [1.0, 2.0, 3.0, None, 5.0, float("nan"), 7.0, 8.0, 9.0, 10.0],
            "n": [3, 1, 4, 1, 5, 9, 2, 6, 5, 3],
            "source": ["coco", "vg", "coco", "gqa", "coco", "vg", None, "coco", "vg", "coco"],
            "flag": [True, False, True, None, True, False, True, False, True, True],
            "emb": [[float(i), float(i) + 0.5, 1.0] for i in range(10)],
            "img": [bytes([i]) * (i + 1) for i in range(10)],
            "tags": [["a", "b"], [], ["c"], None, ["a"], ["b"], [], ["x", "y", "z"], ["q"], ["r"]],
        }
    )


@pytest.fixture
def pool(tmp_path) -> Pool:
    return write_pool(small_frame(), tmp_path / "p", name="small", lineage=LINEAGE, shard_rows=4)


# --------------------------------------------------------------------------- round trip and card


def test_round_trip_scan_equals_frame(pool, tmp_path):
    opened = Pool.open(tmp_path / "p")
    assert opened.card == pool.card
    back = opened.scan().collect()
    expected = small_frame().with_columns(pl.col("emb").list.to_array(3))
    assert back.equals(expected)
    assert opened.scan(["n", "id"]).collect().columns == ["n", "id"]
    assert (opened.path / "scores").is_dir() and (opened.path / "assets").is_dir()
    assert opened.scores_dir == opened.path / "scores"


def test_lazyframe_input_and_int_ids(tmp_path):
    frame = pl.LazyFrame({"key": [10, 20, 30], "v": ["a", "b", "c"]})
    p = write_pool(frame, tmp_path / "q", name="q", id_column="key", lineage=LINEAGE)
    assert p.card.schema == {"key": "int", "v": "str"}
    assert p.scan().collect()["key"].to_list() == [10, 20, 30]


def test_schema_uses_the_checkers_type_names(pool):
    assert pool.card.schema == {
        "id": "str", "x": "float", "n": "int", "source": "str", "flag": "bool",
        "emb": "embedding", "img": "binary", "tags": "list[str]",
    }
    assert pool.card.dtypes["emb"] == "Array(Float64, shape=(3,))"
    assert pool.card.dtypes["n"] == "Int64"


def test_type_names_for_other_dtypes():
    assert type_name(pl.Struct({"a": pl.Int64})) == "any"
    assert type_name(pl.Datetime()) == "any"
    assert type_name(pl.List(pl.Int64)) == "any"
    assert type_name(pl.Array(pl.Int32, 4)) == "any"
    assert type_name(pl.Array(pl.Float32, 512)) == "embedding"
    assert type_name(pl.UInt8) == "int" and type_name(pl.Float32) == "float"
    assert type_name(pl.Categorical()) == "str"


def test_ragged_float_lists_stay_lists(tmp_path):
    frame = pl.DataFrame({"id": ["a", "b"], "v": [[1.0, 2.0], [3.0]]})
    p = write_pool(frame, tmp_path / "r", name="r", lineage=LINEAGE)
    assert p.card.schema["v"] == "any"


def test_card_stats_on_a_hand_made_frame(pool):
    stats = pool.card.stats
    xs = np.array([1.0, 2.0, 3.0, 5.0, 7.0, 8.0, 9.0, 10.0])  # the null and the NaN excluded
    x = stats["x"]
    assert x["null_count"] == 1 and x["nan_count"] == 1
    assert x["min"] == 1.0 and x["max"] == 10.0
    assert math.isclose(x["mean"], xs.mean()) and math.isclose(x["std"], xs.std(ddof=1))
    for q in ("0.01", "0.5", "0.99"):
        assert math.isclose(x["quantiles"][q], float(np.quantile(xs, float(q))))
    n = stats["n"]
    assert (n["min"], n["max"], n["null_count"]) == (1, 9, 0)
    assert isinstance(n["min"], int)
    assert math.isclose(n["quantiles"]["0.5"], 3.5)
    src = stats["source"]
    assert src["null_count"] == 1 and src["distinct"] == 3 and src["distinct_is_estimate"] is False
    assert src["value_counts"] == {"coco": 5, "vg": 3, "gqa": 1}
    assert list(src["value_counts"]) == ["coco", "vg", "gqa"]  # by count, descending
    assert math.isclose(src["mean_length"], (4 * 5 + 2 * 3 + 3) / 9)
    assert stats["flag"] == {"null_count": 1, "true_count": 6}
    assert stats["emb"] == {"null_count": 0, "dim": 3}
    assert stats["img"]["mean_bytes"] == 5.5 and stats["img"]["max_bytes"] == 10
    assert math.isclose(stats["tags"]["mean_items"], 10 / 9)
    assert "value_counts" not in stats["id"]  # never for the id column
    assert pool.card.rows == 10


def test_value_counts_only_for_low_cardinality(tmp_path):
    frame = pl.DataFrame({"id": [str(i) for i in range(200)], "s": [f"v{i % 60}" for i in range(200)]})
    p = write_pool(frame, tmp_path / "vc", name="vc", lineage=LINEAGE)
    assert p.card.stats["s"]["distinct"] == 60 and "value_counts" not in p.card.stats["s"]


def test_shards_split_by_shard_rows(pool):
    assert [s.rows for s in pool.card.shards] == [4, 4, 2]
    assert [s.file for s in pool.card.shards] == [f"shards/part-0000{i}.parquet" for i in range(3)]
    for shard in pool.card.shards:
        assert pl.read_parquet(pool.path / shard.file).height == shard.rows
    assert pool.scan(["id"]).collect()["id"].to_list() == [f"r{i}" for i in range(10)]


def test_empty_frame_gives_one_empty_shard(tmp_path):
    frame = pl.DataFrame({"id": [], "v": []}, schema={"id": pl.String, "v": pl.Float64})
    p = write_pool(frame, tmp_path / "e", name="e", lineage=LINEAGE)
    assert p.card.rows == 0 and len(p.card.shards) == 1
    assert p.scan().collect().schema == frame.schema


def test_shards_are_zstd_parquet(pool):
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(pool.shard_paths[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


# --------------------------------------------------------------------------- determinism


def test_same_frame_gives_identical_pools(tmp_path):
    frame = datacomp_frame(100)
    a = write_pool(frame, tmp_path / "a", name="dc", id_column="uid", lineage=LINEAGE, shard_rows=30)
    b = write_pool(frame, tmp_path / "b", name="dc", id_column="uid", lineage=LINEAGE, shard_rows=30)
    assert a.content_hash == b.content_hash
    for sa, sb in zip(a.shard_paths, b.shard_paths, strict=True):
        assert sa.read_bytes() == sb.read_bytes()
    assert (a.path / "pool.json").read_bytes() == (b.path / "pool.json").read_bytes()


def test_created_at_is_outside_the_content_hash(tmp_path):
    frame = small_frame()
    a = write_pool(frame, tmp_path / "a", name="s", lineage={"importer": "x"})
    b = write_pool(frame, tmp_path / "b", name="s", lineage={"importer": "x", "created_at": "1999-01-01"})
    assert a.card.lineage["created_at"] != b.card.lineage["created_at"]
    assert a.content_hash == b.content_hash
    assert "cbdsl_version" in a.card.lineage


def test_one_cell_change_changes_the_content_hash(tmp_path, pool):
    changed = small_frame().with_columns(pl.when(pl.col("id") == "r7").then(99).otherwise(pl.col("n")).alias("n"))
    other = write_pool(changed, tmp_path / "c", name="small", lineage=LINEAGE, shard_rows=4)
    assert other.content_hash != pool.content_hash
    assert [s.sha256 for s in other.card.shards][:1] == [s.sha256 for s in pool.card.shards][:1]


def test_schema_change_alone_changes_the_content_hash(tmp_path, pool):
    renamed = write_pool(small_frame().rename({"x": "y"}), tmp_path / "r", name="small", lineage=LINEAGE, shard_rows=4)
    assert renamed.content_hash != pool.content_hash


# --------------------------------------------------------------------------- write errors


def test_duplicate_id_names_the_value_and_rows(tmp_path):
    frame = pl.DataFrame({"id": ["a", "b", "c", "b"], "v": [1, 2, 3, 4]})
    with pytest.raises(PoolError) as err:
        write_pool(frame, tmp_path / "d", name="d", lineage=LINEAGE)
    assert "'b'" in str(err.value) and "rows 1 and 3" in str(err.value) and err.value.row == 3
    assert not (tmp_path / "d").exists()


def test_null_id_names_the_row(tmp_path):
    frame = pl.DataFrame({"id": ["a", None, "c"]})
    with pytest.raises(PoolError, match="null id.*row 1") as err:
        write_pool(frame, tmp_path / "d", name="d", lineage=LINEAGE)
    assert err.value.row == 1


def test_empty_string_id_is_refused(tmp_path):
    with pytest.raises(PoolError, match="empty id at row 2"):
        write_pool(pl.DataFrame({"id": ["a", "b", ""]}), tmp_path / "d", name="d", lineage=LINEAGE)


def test_missing_id_column_suggests_one(tmp_path):
    frame = pl.DataFrame({"uid": ["a"], "text": ["t"]})
    with pytest.raises(PoolError, match="no id column 'id'") as err:
        write_pool(frame, tmp_path / "d", name="d", lineage=LINEAGE)
    assert "`uid`" in err.value.hint and "id_column" in err.value.hint


def test_float_ids_are_refused(tmp_path):
    with pytest.raises(PoolError, match="ids must be strings or integers"):
        write_pool(pl.DataFrame({"id": [1.5, 2.5]}), tmp_path / "d", name="d", lineage=LINEAGE)


def test_existing_pool_needs_overwrite(tmp_path, pool):
    with pytest.raises(PoolError, match="already exists") as err:
        write_pool(small_frame(), pool.path, name="small", lineage=LINEAGE)
    assert "overwrite" in err.value.hint
    new = write_pool(small_frame().head(3), pool.path, name="small", lineage=LINEAGE, overwrite=True)
    assert Pool.open(pool.path).card.rows == 3 == new.card.rows
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_refuses_to_write_into_a_non_pool_directory(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(PoolError, match="not a pool; refusing"):
        write_pool(small_frame(), tmp_path / "docs", name="x", lineage=LINEAGE, overwrite=True)
    assert (tmp_path / "docs" / "notes.txt").read_text() == "mine"


def test_empty_directory_is_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    assert write_pool(small_frame(), tmp_path / "empty", name="x", lineage=LINEAGE).card.rows == 10


def test_a_crash_before_the_card_leaves_no_pool(tmp_path, monkeypatch):
    def boom(directory, card):
        raise OSError("disk full")

    monkeypatch.setattr(writing, "write_card", boom)
    with pytest.raises(OSError, match="disk full"):
        write_pool(small_frame(), tmp_path / "p", name="p", lineage=LINEAGE)
    monkeypatch.undo()
    with pytest.raises(PoolError):
        Pool.open(tmp_path / "p")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_crash_during_overwrite_keeps_the_old_pool(tmp_path, pool, monkeypatch):
    def boom(directory, card):
        raise OSError("disk full")

    monkeypatch.setattr(writing, "write_card", boom)
    with pytest.raises(OSError):
        write_pool(small_frame().head(2), pool.path, name="small", lineage=LINEAGE, overwrite=True)
    monkeypatch.undo()
    assert Pool.open(pool.path).card == pool.card


# --------------------------------------------------------------------------- open errors


def test_open_a_missing_directory(tmp_path):
    with pytest.raises(PoolError, match="does not exist") as err:
        Pool.open(tmp_path / "nope")
    assert "cbdsl pool import" in err.value.hint


def test_open_a_directory_without_a_card(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(PoolError, match="is not a pool: it has no pool.json") as err:
        Pool.open(tmp_path / "d")
    assert "make one with" in err.value.hint


def test_open_an_interrupted_write(tmp_path):
    (tmp_path / "d" / "shards").mkdir(parents=True)
    with pytest.raises(PoolError, match="interrupted write"):
        Pool.open(tmp_path / "d")


def test_open_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PoolError, match="is a file"):
        Pool.open(tmp_path / "f")


def test_open_a_broken_card(pool):
    card = pool.path / "pool.json"
    card.write_text('{\n  "name": "x",\n  oops\n}')
    with pytest.raises(PoolError, match="not valid JSON") as err:
        Pool.open(pool.path)
    assert err.value.line == 3 and err.value.file == str(card)


def test_open_an_invalid_card(pool):
    card = pool.path / "pool.json"
    data = json.loads(card.read_text())
    data["rows"] = 11
    card.write_text(json.dumps(data))
    with pytest.raises(PoolError, match="not a valid pool card.*shards hold 10"):
        Pool.open(pool.path)
    data["rows"] = 10
    data["schema"]["x"] = "decimal"
    card.write_text(json.dumps(data))
    with pytest.raises(PoolError, match="schema.x"):
        Pool.open(pool.path)


def test_open_a_newer_format(pool):
    card = pool.path / "pool.json"
    data = json.loads(card.read_text())
    data["format_version"] = 99
    card.write_text(json.dumps(data))
    with pytest.raises(PoolError, match="upgrade cbdsl|format_version 99"):
        Pool.open(pool.path)


def test_open_with_a_missing_shard(pool):
    pool.shard_paths[1].unlink()
    with pytest.raises(PoolError, match="missing, first shards/part-00001.parquet"):
        Pool.open(pool.path)


def test_scan_unknown_column_suggests(pool):
    with pytest.raises(PoolError, match="no column 'sorce'") as err:
        pool.scan(["sorce"])
    assert "did you mean `source`?" in err.value.hint


def test_verify_detects_a_changed_shard(pool):
    pool.verify()
    shard = pool.shard_paths[0]
    shard.write_bytes(shard.read_bytes() + b"\0")
    with pytest.raises(PoolError, match="does not match its sha256"):
        pool.verify()


def test_card_model_round_trips(pool):
    assert PoolCard.model_validate_json(pool.card.model_dump_json()) == pool.card


# --------------------------------------------------------------------------- assets


def test_add_ids_asset_infers_kind_and_records_it(pool, tmp_path):
    ids = tmp_path / "icons.txt"
    ids.write_text("r1\nr3\n\nr5\n")
    before = pool.content_hash
    p = add_asset(pool.path, "icons-133k", ids, description="ICONS released ids")
    info = p.card.assets["icons-133k"]
    assert (info.kind, info.rows, info.file) == ("ids", 3, "assets/icons-133k.txt")
    assert info.description == "ICONS released ids"
    assert p.asset_path("icons-133k").read_text() == ids.read_text()
    assert p.read_asset("icons-133k").to_list() == ["r1", "r3", "r5"]
    assert Pool.open(pool.path).card.assets == p.card.assets
    assert p.content_hash == before  # assets do not change the data's version
    p.verify()


def test_readding_an_asset_replaces_it(pool, tmp_path):
    first = tmp_path / "a.txt"
    first.write_text("r1\n")
    add_asset(pool.path, "keep", first, kind="ids")
    second = tmp_path / "a.json"
    second.write_text(json.dumps(["r1", "r2", 7]))
    p = add_asset(pool.path, "keep", second)
    assert p.card.assets["keep"].rows == 3 and p.card.assets["keep"].file == "assets/keep.json"
    assert not (pool.path / "assets" / "keep.txt").exists()
    assert p.read_asset("keep").to_list() == ["r1", "r2", "7"]
    assert list(p.card.assets) == ["keep"]


def test_asset_kinds_from_files(pool, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "c.npy", rng.normal(size=(8, 4)).astype(np.float32))
    uids = pl.Series([rng.bytes(16).hex() for _ in range(5)])
    np.save(tmp_path / "subset.npy", np.sort(uid_pairs(uids)))
    (tmp_path / "corpus.jsonl").write_text('{"text": "a target doc"}\n\n{"text": "another"}\n')
    pl.DataFrame({"text": ["What is shown?"], "answer": ["a cat"]}).write_parquet(tmp_path / "e.parquet")
    pl.DataFrame({"id": ["r1"], "label": [1]}).write_parquet(tmp_path / "lab.parquet")
    (tmp_path / "wiki.txt").write_text("The quick brown fox jumps.\nA second document here.\n")
    add_asset(pool.path, "pool-centroids", tmp_path / "c.npy")
    add_asset(pool.path, "datacomp-subset", tmp_path / "subset.npy")
    add_asset(pool.path, "dsir-target", tmp_path / "corpus.jsonl")
    add_asset(pool.path, "vqa-eval", tmp_path / "e.parquet")
    add_asset(pool.path, "labels", tmp_path / "lab.parquet")
    p = add_asset(pool.path, "wiki", tmp_path / "wiki.txt")
    kinds = {name: (a.kind, a.rows) for name, a in p.card.assets.items()}
    assert kinds == {"datacomp-subset": ("ids", 5), "dsir-target": ("corpus", 2), "labels": ("labels", 1),
                     "pool-centroids": ("centroids", 8), "vqa-eval": ("eval", 1), "wiki": ("corpus", 2)}
    assert p.read_asset("datacomp-subset").sort().to_list() == sorted(uids.to_list())
    assert p.read_asset("pool-centroids").shape == (8, 4)
    assert p.read_asset("dsir-target")["text"].to_list() == ["a target doc", "another"]


def test_bad_asset_name(pool, tmp_path):
    (tmp_path / "a.txt").write_text("r1\n")
    with pytest.raises(PoolError, match="not a valid asset name"):
        add_asset(pool.path, "Icons 133K", tmp_path / "a.txt")


def test_bad_asset_files(pool, tmp_path):
    (tmp_path / "ids.json").write_text('["a", "b",\n  nope]')
    with pytest.raises(PoolError, match="invalid JSON") as err:
        add_asset(pool.path, "ids", tmp_path / "ids.json")
    assert err.value.line == 2
    (tmp_path / "ids2.json").write_text('["a", null]')
    with pytest.raises(PoolError, match="string or an integer") as err:
        add_asset(pool.path, "ids2", tmp_path / "ids2.json")
    assert err.value.row == 1
    np.save(tmp_path / "c.npy", np.arange(5, dtype=np.float64))
    with pytest.raises(PoolError, match="2-D float matrix"):
        add_asset(pool.path, "c", tmp_path / "c.npy", kind="centroids")
    (tmp_path / "corpus.jsonl").write_text('{"text": "ok"}\n{"text": "broken"\n')
    with pytest.raises(PoolError, match="invalid JSON line") as err:
        add_asset(pool.path, "corpus", tmp_path / "corpus.jsonl")
    assert err.value.line == 2 and "corpus.jsonl" in str(err.value)
    (tmp_path / "ev.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(PoolError, match="needs a string column `text`"):
        add_asset(pool.path, "ev", tmp_path / "ev.jsonl", kind="eval")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(PoolError, match="cannot read parquet"):
        add_asset(pool.path, "t", tmp_path / "bad.parquet", kind="table")
    (tmp_path / "x.dat").write_bytes(b"\0")
    with pytest.raises(PoolError, match="cannot tell what kind"):
        add_asset(pool.path, "x", tmp_path / "x.dat")
    with pytest.raises(PoolError, match="not an asset kind") as err:
        add_asset(pool.path, "x", tmp_path / "corpus.jsonl", kind="corpra")
    assert "corpus" in err.value.hint
    with pytest.raises(PoolError, match="no asset file"):
        add_asset(pool.path, "x", tmp_path / "missing.txt")
    assert Pool.open(pool.path).card.assets == {}
    assert list((pool.path / "assets").iterdir()) == []


def _model_dir(path: Path, weights: bytes = b"w1") -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text('{"n": 1}')
    (path / "sub" / "model.safetensors").write_bytes(weights)
    return path


def test_model_asset_directory_is_copied_whole_and_hashed_in_sorted_order(pool, tmp_path):
    src = _model_dir(tmp_path / "gpt2-small")
    p = add_asset(pool.path, "gpt2-small", src)  # a directory: kind model, inferred
    info = p.card.assets["gpt2-small"]
    assert info.kind == "model" and info.rows is None and info.file == "assets/gpt2-small"
    listing = "".join(f"{rel}\0{sha256_file(src / rel)}\n"
                      for rel in sorted(["config.json", "sub/model.safetensors"]))
    assert info.sha256 == hashlib.sha256(listing.encode()).hexdigest()  # independent of the walk order
    assert p.read_asset("gpt2-small") == p.path / "assets" / "gpt2-small"
    assert (p.path / "assets" / "gpt2-small" / "sub" / "model.safetensors").read_bytes() == b"w1"
    p.verify()
    (src / "sub" / "model.safetensors").write_bytes(b"w2")  # new weights, same name: replaced, new hash
    q = add_asset(pool.path, "gpt2-small", src)
    assert q.card.assets["gpt2-small"].sha256 != info.sha256
    assert (q.path / "assets" / "gpt2-small" / "sub" / "model.safetensors").read_bytes() == b"w2"
    (src / "sub" / "model.safetensors").rename(src / "sub" / "other.safetensors")  # a rename changes it too
    assert sha256_path(src) not in (info.sha256, q.card.assets["gpt2-small"].sha256)
    (q.path / "assets" / "gpt2-small" / "config.json").write_text("{}")
    with pytest.raises(PoolError, match="does not match its sha256"):
        Pool.open(pool.path).verify()
    assert sorted(f.name for f in (q.path / "assets").iterdir()) == ["gpt2-small"]  # no temporary left


def test_model_asset_files_and_refusals(pool, tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"weights")
    p = add_asset(pool.path, "tiny-clip", tmp_path / "w.safetensors")
    assert p.card.assets["tiny-clip"].kind == "model"
    assert p.read_asset("tiny-clip") == p.path / "assets" / "tiny-clip.safetensors"
    (tmp_path / "tokenizer.json").write_text('{"model": {}}')
    assert add_asset(pool.path, "gpt2-tok", tmp_path / "tokenizer.json").card.assets["gpt2-tok"].kind == "model"
    (tmp_path / "empty").mkdir()
    with pytest.raises(PoolError, match="model directory is empty"):
        add_asset(pool.path, "empty", tmp_path / "empty")
    with pytest.raises(PoolError, match="not a regular file") as err:
        add_asset(pool.path, "d", _model_dir(tmp_path / "d"), kind="ids")
    assert "--kind model" in err.value.hint
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(PoolError, match="a model asset is a directory or one of"):
        add_asset(pool.path, "onnx", tmp_path / "w.onnx", kind="model")


def test_cli_registers_a_model_directory(pool, tmp_path):
    from click.testing import CliRunner

    from cbdsl.cli import cli

    result = CliRunner().invoke(cli, ["pool", "add-asset", str(pool.path), "my-lm", str(_model_dir(tmp_path / "m")),
                                      "--kind", "model"])
    assert result.exit_code == 0, result.output
    assert 'checkpoint="my-lm"' in result.output and Pool.open(pool.path).card.assets["my-lm"].kind == "model"


def test_unknown_asset_suggests(pool, tmp_path):
    (tmp_path / "a.txt").write_text("r1\n")
    p = add_asset(pool.path, "icons-133k", tmp_path / "a.txt")
    with pytest.raises(PoolError, match="no asset 'icons-133'") as err:
        p.asset_path("icons-133")
    assert "did you mean `icons-133k`?" in err.value.hint


# --------------------------------------------------------------------------- registry


def test_resolve_a_path(pool):
    assert resolve_pool(str(pool.path)) == pool.path


def test_resolve_names_in_order(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    env1, env2, local = tmp_path / "env1", tmp_path / "env2", tmp_path / "local"
    monkeypatch.setenv("CBDSL_POOLS", f"{env1}:{env2}")
    frame = small_frame()
    write_pool(frame, home / ".cbdsl" / "pools" / "demo", name="demo", lineage=LINEAGE)
    write_pool(frame, env2 / "datacomp-small", name="datacomp-small", lineage=LINEAGE)
    write_pool(frame, local / "datacomp-small", name="datacomp-small", lineage=LINEAGE)
    monkeypatch.chdir(tmp_path)
    assert resolve_pool("demo") == home / ".cbdsl" / "pools" / "demo"
    assert resolve_pool("datacomp-small") == env2 / "datacomp-small"
    assert resolve_pool("datacomp-small", search=[local]) == local / "datacomp-small"
    assert set(list_pools()) == {"demo", "datacomp-small"}


def test_resolve_unknown_lists_known_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CBDSL_POOLS", raising=False)
    monkeypatch.chdir(tmp_path)
    write_pool(small_frame(), tmp_path / "pools" / "datacomp-small", name="x", lineage=LINEAGE)
    with pytest.raises(PoolError, match="unknown pool 'datacomp-smal'") as err:
        resolve_pool("datacomp-smal", search=[tmp_path / "pools"])
    assert "did you mean `datacomp-small`?" in err.value.hint and "known pools" in err.value.hint
    with pytest.raises(PoolError, match="no pools are installed|unknown pool"):
        resolve_pool("zzz")


def test_resolve_a_path_that_is_not_a_pool(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(PoolError, match="not a pool"):
        resolve_pool(str(tmp_path / "d"))
    with pytest.raises(PoolError, match="no pool directory"):
        resolve_pool(str(tmp_path / "nope"))


def test_error_json_form():
    err = PoolError("bad uid", file="x.parquet", row=3, hint="fix it")
    assert err.to_dict() == {"error": "pool", "message": "bad uid", "file": "x.parquet", "row": 3,
                             "line": None, "hint": "fix it"}
    assert str(err) == "x.parquet, row 3: bad uid\n  hint: fix it"
    again = pickle.loads(pickle.dumps(err))
    assert again.to_dict() == err.to_dict() and str(again) == str(err)
