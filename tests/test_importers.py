"""Importers: DataComp metadata, LLaVA instruction JSON, Hugging Face datasets, generic parquet/JSONL."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from cbdsl.pipelines.data.importers import (
    detect_kind,
    import_pool,
    llava_source,
    normalise_uids,
    read_datacomp,
    read_hf,
    read_jsonl_table,
    read_llava,
    read_parquet_table,
)
from cbdsl.pipelines.data.hashing import sha256_file
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.errors import PoolError

sys.path.insert(0, str(Path(__file__).parent / "data"))
from pool_fixtures import LLAVA_CASES, datacomp_frame, llava_records, write_datacomp, write_llava  # noqa: E402


# --------------------------------------------------------------------------- DataComp


def test_datacomp_keeps_every_column_and_adds_id_width_height(tmp_path):
    src = write_datacomp(tmp_path / "meta", n=100)
    frame, id_column, lineage, *_ = read_datacomp(src)
    original = datacomp_frame(100)
    assert id_column == "id" and frame.height == 100
    assert frame.columns == ["id", *original.columns, "width", "height"]
    assert frame["id"].to_list() == original["uid"].to_list() == frame["uid"].to_list()
    assert frame["width"].to_list() == original["original_width"].to_list()
    assert frame["height"].to_list() == original["original_height"].to_list()
    assert frame.drop("id", "width", "height").equals(original)
    (source,) = lineage["sources"]
    assert lineage["importer"] == "datacomp" and source["sha256"] == sha256_file(src / "0000000.parquet")


def test_datacomp_pool_card(tmp_path):
    src = write_datacomp(tmp_path / "meta", n=100, files=3)
    pool = import_pool("datacomp", src, tmp_path / "pool", "datacomp-tiny")
    card = pool.card
    assert (card.name, card.id_column, card.rows) == ("datacomp-tiny", "id", 100)
    assert card.schema["text"] == "str" and card.schema["clip_l14_similarity_score"] == "float"
    assert card.schema["width"] == "int" and card.schema["face_bboxes"] == "any"
    assert len(card.lineage["sources"]) == 3 and card.lineage["importer"] == "datacomp"
    assert 0.05 <= card.stats["clip_l14_similarity_score"]["min"] <= card.stats["clip_l14_similarity_score"]["max"] <= 0.4
    assert Pool.open(tmp_path / "pool").scan(["id"]).collect().height == 100


def test_uid_normalisation():
    raw = pl.Series("uid", ["ABCDEF0123456789ABCDEF0123456789", "0x00000000000000000000000000000001",
                            "  0123456789abcdef0123456789abcdef "])
    assert normalise_uids(raw).to_list() == ["abcdef0123456789abcdef0123456789",
                                             "00000000000000000000000000000001",
                                             "0123456789abcdef0123456789abcdef"]
    binary = pl.Series("uid", [bytes(range(16)), b"\xff" * 16])
    assert normalise_uids(binary).to_list() == ["000102030405060708090a0b0c0d0e0f", "f" * 32]


def test_bad_uid_names_file_and_row(tmp_path):
    src = write_datacomp(tmp_path / "meta", n=40, files=2)
    second = src / "0000001.parquet"
    frame = pl.read_parquet(second)
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("not-a-uid")).otherwise("uid").alias("uid"))
    frame.write_parquet(second)
    with pytest.raises(PoolError, match="uid 'not-a-uid' is not a DataComp uid") as err:
        read_datacomp(src)
    assert err.value.row == 7 and err.value.file == str(second)
    assert "0000001.parquet, row 7" in str(err.value)


def test_bad_binary_uid_and_wrong_uid_type(tmp_path):
    pl.DataFrame({"uid": [bytes(16), b"short"]}).write_parquet(tmp_path / "b.parquet")
    with pytest.raises(PoolError, match="16 bytes") as err:
        read_datacomp(tmp_path / "b.parquet")
    assert err.value.row == 1
    pl.DataFrame({"uid": [1, 2]}).write_parquet(tmp_path / "i.parquet")
    with pytest.raises(PoolError, match="type Int64"):
        read_datacomp(tmp_path / "i.parquet")


def test_duplicate_uid_across_files(tmp_path):
    frame = datacomp_frame(10)
    frame.write_parquet(tmp_path / "a.parquet")
    frame.slice(3, 2).write_parquet(tmp_path / "b.parquet")
    with pytest.raises(PoolError, match="duplicate id") as err:
        read_datacomp(tmp_path)
    assert err.value.file == str(tmp_path / "b.parquet") and err.value.row == 0
    assert "a.parquet row 3" in err.value.message


def test_datacomp_wrong_schema(tmp_path):
    datacomp_frame(5).with_columns(pl.col("original_width").cast(pl.String)).write_parquet(tmp_path / "w.parquet")
    with pytest.raises(PoolError, match="'original_width' has type String"):
        read_datacomp(tmp_path / "w.parquet")
    datacomp_frame(5).drop("uid").write_parquet(tmp_path / "n.parquet")
    with pytest.raises(PoolError, match="no column 'uid'"):
        read_datacomp(tmp_path / "n.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(PoolError, match="cannot read as parquet") as err:
        read_datacomp(tmp_path / "junk.parquet")
    assert err.value.file == str(tmp_path / "junk.parquet")


def test_datacomp_files_with_different_columns(tmp_path):
    datacomp_frame(5).write_parquet(tmp_path / "a.parquet")
    datacomp_frame(5, seed=1).drop("face_bboxes").write_parquet(tmp_path / "b.parquet")
    with pytest.raises(PoolError, match="missing: face_bboxes") as err:
        read_datacomp(tmp_path)
    assert err.value.file == str(tmp_path / "b.parquet")


def test_empty_source_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PoolError, match="no .parquet files"):
        read_datacomp(tmp_path / "empty")
    with pytest.raises(PoolError, match="no such file"):
        read_datacomp(tmp_path / "missing")


# --------------------------------------------------------------------------- LLaVA


def test_llava_sources_and_columns(tmp_path):
    src = write_llava(tmp_path / "mix.json")
    frame, id_column, lineage, *_ = read_llava(src)
    assert len(LLAVA_CASES) == 30 and frame.height == 30 and id_column == "id"
    assert frame.columns == ["id", "image", "has_image", "source", "question", "answer", "text", "n_turns",
                             "human_chars", "gpt_chars", "record"]
    assert frame["source"].to_list() == [source for _, source in LLAVA_CASES]
    assert {s for _, s in LLAVA_CASES} >= {"gqa", "ocr_vqa", "textvqa", "vg", "vqa", "aokvqa", "refcoco",
                                           "llava_instruct", "sharegpt"}
    assert frame["id"].dtype == pl.String
    assert frame["id"].to_list() == [str(rec["id"]) for rec, _ in LLAVA_CASES]
    assert "1" in frame["id"].to_list() and "2375429" in frame["id"].to_list()
    first = frame.row(0, named=True)
    assert first["image"] == "coco/train2017/000000033471.jpg"
    assert first["n_turns"] == 2
    assert first["question"] == "What are the colors of the bus in the image?"
    assert first["answer"] == "The bus in the image is white and red." and first["has_image"]
    assert first["text"].splitlines()[0] == "What are the colors of the bus in the image?"
    assert "<image>" not in first["text"]
    assert first["gpt_chars"] == len("The bus in the image is white and red.") + len(
        "The back of the bus features an advertisement.")
    n_text_only = sum(source == "sharegpt" for _, source in LLAVA_CASES)
    assert frame.filter(pl.col("source") == "sharegpt")["image"].null_count() == n_text_only == 5
    assert frame.filter(~pl.col("has_image")).height == 5
    assert [json.loads(r) for r in frame["record"]] == llava_records()
    assert lineage["importer"] == "llava" and lineage["sources"][0]["sha256"] == sha256_file(src)


def test_llava_source_rules():
    assert llava_source(None, "hi") == "sharegpt"
    assert llava_source("gqa/images/1.jpg", "x") == "gqa"
    assert llava_source("coco/train2017/1.jpg", "Q?\nAnswer the question using a single word or phrase.") == "vqa"
    assert llava_source("coco/train2017/1.jpg",
                        "Q?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly.") == "aokvqa"
    assert llava_source("coco/train2017/1.jpg", "Please provide a short description for this region: [0.1]") == "refcoco"
    assert llava_source("coco/train2017/1.jpg", "Describe the image in detail.") == "llava_instruct"
    assert llava_source("./vg/VG_100K/1.jpg", "x") == "vg"
    assert llava_source("image.jpg", "x") == "other"


def test_llava_pool_round_trip(tmp_path):
    pool = import_pool("llava", write_llava(tmp_path / "mix.json"), tmp_path / "pool", "llava-mini")
    assert pool.card.schema["n_turns"] == "int" and pool.card.schema["record"] == "str"
    assert pool.card.stats["source"]["value_counts"]["sharegpt"] == 5


def test_llava_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "mix.json"
    path.write_text('[\n  {"id": 1, "conversations": []},\n  {"id": 2 "image": "x"}\n]')
    with pytest.raises(PoolError, match="invalid JSON") as err:
        read_llava(path)
    assert err.value.line == 3 and err.value.file == str(path)


def test_llava_bad_records_name_the_record(tmp_path):
    records = llava_records()
    del records[4]["conversations"]
    with pytest.raises(PoolError, match="non-empty `conversations`.*aokvqa-22jbM6gDxdaMaunuzgrsBB") as err:
        read_llava(write_llava(tmp_path / "a.json", records))
    assert err.value.row == 4
    records = llava_records()
    records[2]["id"] = None
    with pytest.raises(PoolError, match="needs an `id`") as err:
        read_llava(write_llava(tmp_path / "b.json", records))
    assert err.value.row == 2
    records = llava_records()
    records[1]["conversations"][1]["from"] = "robot"
    with pytest.raises(PoolError, match=r"conversations\[1\] is from 'robot'"):
        read_llava(write_llava(tmp_path / "c.json", records))
    (tmp_path / "d.json").write_text('{"id": 1}')
    with pytest.raises(PoolError, match="expected a JSON list"):
        read_llava(tmp_path / "d.json")


def test_llava_duplicate_ids(tmp_path):
    records = llava_records()
    records[7]["id"] = records[2]["id"]  # int 1 ...
    records[9]["id"] = "1"  # ... and the string "1" are the same id
    path = write_llava(tmp_path / "dup.json", records)
    with pytest.raises(PoolError, match="duplicate id '1'") as err:
        read_llava(path)
    assert err.value.row == 7 and "row 2" in err.value.message and "duplicate_ids='suffix'" in err.value.hint
    frame = read_llava(path, duplicate_ids="suffix").frame
    assert frame["id"][2] == "1" and frame["id"][7] == "1#2" and frame["id"][9] == "1#3"
    assert frame["id"].is_unique().all()


def test_llava_jsonl(tmp_path):
    path = tmp_path / "mix.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in llava_records()[:3]) + "\n\n{broken\n")
    with pytest.raises(PoolError, match="invalid JSON line") as err:
        read_llava(path)
    assert err.value.line == 5
    path.write_text("\n".join(json.dumps(r) for r in llava_records()[:3]) + "\n")
    assert read_llava(path).frame.height == 3


# --------------------------------------------------------------------------- Hugging Face


def test_hf_without_id_makes_row_index_ids(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["a cat", "a dog", "a bird"], "label": [0, 1, 0]})
    ds.save_to_disk(str(tmp_path / "ds"))
    frame, id_column, lineage, *_ = read_hf(tmp_path / "ds")
    assert id_column == "id" and frame.columns == ["id", "text", "label"]
    assert frame["id"].to_list() == ["0", "1", "2"] and frame["text"].to_list() == ["a cat", "a dog", "a bird"]
    assert lineage["importer"] == "hf" and lineage["sources"]
    pool = import_pool("hf", tmp_path / "ds", tmp_path / "pool")
    assert pool.name == "pool" and pool.card.rows == 3


def test_hf_with_id_column_splits_and_images(tmp_path):
    import datasets

    features = datasets.Features({"key": datasets.Value("string"), "image": datasets.Image(),
                                  "caption": datasets.Value("string")})
    png = b"\x89PNG\r\n\x1a\nfake"
    train = datasets.Dataset.from_dict(
        {"key": ["k1", "k2"], "image": [{"bytes": png, "path": None}] * 2, "caption": ["x", "y"]}, features=features)
    dd = datasets.DatasetDict({"train": train, "test": train})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(PoolError, match="splits train, test; say which"):
        read_hf(tmp_path / "dd", id_column="key")
    frame, id_column, *_ = read_hf(tmp_path / "dd", id_column="key", split="train")
    assert id_column == "key" and frame.schema["image"] == pl.Binary and frame["image"][0] == png
    with pytest.raises(PoolError, match="no column 'kee'") as err:
        read_hf(tmp_path / "dd", id_column="kee", split="train")
    assert "did you mean `key`?" in err.value.hint


def test_hf_not_a_dataset(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(PoolError, match="not a dataset saved with save_to_disk"):
        read_hf(tmp_path / "d")


def test_hf_without_datasets_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(PoolError, match="needs the `datasets` package") as err:
        read_hf(tmp_path)
    assert err.value.hint == "pip install datasets"


# --------------------------------------------------------------------------- generic


def test_generic_parquet(tmp_path):
    pl.DataFrame({"doc_id": ["a", "b"], "text": ["x", "y"]}).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(PoolError, match="no column 'id'") as err:
        read_parquet_table(tmp_path / "t.parquet")
    assert "--id-column" in err.value.hint
    frame, id_column, *_ = read_parquet_table(tmp_path / "t.parquet", id_column="doc_id")
    assert id_column == "doc_id" and frame.height == 2
    pool = import_pool("parquet", tmp_path / "t.parquet", tmp_path / "pool", "docs", id_column="doc_id")
    assert pool.id_column == "doc_id"


def test_generic_parquet_null_and_duplicate_ids(tmp_path):
    pl.DataFrame({"id": ["a", None, "c"]}).write_parquet(tmp_path / "n.parquet")
    with pytest.raises(PoolError, match="null id") as err:
        read_parquet_table(tmp_path / "n.parquet")
    assert err.value.row == 1
    pl.DataFrame({"id": ["a", "b", "a"]}).write_parquet(tmp_path / "d.parquet")
    with pytest.raises(PoolError, match="duplicate id 'a'") as err:
        read_parquet_table(tmp_path / "d.parquet")
    assert err.value.row == 2


def test_jsonl_invalid_line_number(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n\n{"id": "b", "text": "y"}\n{"id": "c", "text": \n')
    with pytest.raises(PoolError, match="invalid JSON line") as err:
        read_jsonl_table(path)
    assert err.value.line == 4 and "docs.jsonl, line 4" in str(err.value)


def test_jsonl_duplicate_ids_and_type_clash_name_the_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "n": 1}\n\n{"id": "b", "n": 2}\n{"id": "a", "n": 3}\n')
    with pytest.raises(PoolError, match="duplicate id 'a'") as err:
        read_jsonl_table(path)
    assert err.value.line == 4
    path.write_text('{"id": "a", "n": 1}\n{"id": "b", "n": "two"}\n')
    with pytest.raises(PoolError, match="field 'n'") as err:
        read_jsonl_table(path)
    assert err.value.line == 2
    path.write_text('{"id": "a"}\n[1, 2]\n')
    with pytest.raises(PoolError, match="expected a JSON object") as err:
        read_jsonl_table(path)
    assert err.value.line == 2


def test_jsonl_import(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1, "text": "x", "score": 0.5}\n{"id": 2, "text": "y", "score": null}\n')
    pool = import_pool("jsonl", path, tmp_path / "pool", "docs")
    assert pool.card.schema == {"id": "int", "text": "str", "score": "float"}
    assert pool.card.stats["score"]["null_count"] == 1


# --------------------------------------------------------------------------- dispatch


def test_import_pool_errors(tmp_path):
    with pytest.raises(PoolError, match="unknown importer 'datacom'") as err:
        import_pool("datacom", tmp_path, tmp_path / "p")
    assert "did you mean `datacomp`?" in err.value.hint
    with pytest.raises(PoolError, match="no option 'id_col'") as err:
        import_pool("parquet", tmp_path, tmp_path / "p", id_col="x")
    assert "`id_column`" in err.value.hint


def test_detect_kind(tmp_path):
    src = write_datacomp(tmp_path / "meta", n=5)
    assert detect_kind(src) == "datacomp"
    assert detect_kind(write_llava(tmp_path / "mix.json")) == "llava"
    pl.DataFrame({"id": ["a"]}).write_parquet(tmp_path / "g.parquet")
    assert detect_kind(tmp_path / "g.parquet") == "parquet"
    pool = import_pool("auto", src, tmp_path / "pool")
    assert pool.card.lineage["importer"] == "datacomp"
