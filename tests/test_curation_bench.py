"""Curation-Bench's subset layout: export (`--format curation-bench`) and import (`pool import curation-bench`).

The layout as Curation-Bench's code reads it (feiyang-k/curation-bench @b8b5e17,
baselines/dataset/*.py): a `save_to_disk` dataset with exactly the selected
rows, `texts` a list of {user, assistant} pairs; `images` a list of
`datasets.Image` as in the Cauldron. The round trip llava -> curation-bench ->
pool keeps every id's question, answer and text and every image's bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import datasets
import polars as pl
import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.data.curation_bench import conversation_pairs, pair_turns
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.exports import export
from cbdsl.pipelines.data.importers import import_pool
from cbdsl.pipelines.data.pool import Pool

sys.path.insert(0, str(Path(__file__).parent / "data"))
from pool_fixtures import llava_records, write_llava, write_llava_images  # noqa: E402

POLICY = 'policy "half"\npool "llava"\nbudget 17\nselect random(seed=4)\n'


@pytest.fixture(scope="module")
def llava_pool(tmp_path_factory) -> Pool:
    tmp = tmp_path_factory.mktemp("cb")
    folder = write_llava_images(tmp / "playground" / "data")
    return import_pool("llava", write_llava(tmp / "mix.json"), tmp / "llava", image_folder=folder)


def _selection(pool: Pool, order: list[int]) -> pl.DataFrame:
    ids = pool.scan(["id"]).collect()["id"]
    return pl.DataFrame({"id": [ids[i] for i in order], "rank": list(range(len(order)))})


def test_the_export_is_curation_benchs_layout_in_selection_order(llava_pool, tmp_path):
    order = [27, 0, 8, 12, 6, 7, 1]
    target = export(llava_pool, _selection(llava_pool, order), tmp_path, "curation-bench")
    assert target == tmp_path / "curation_bench" and sorted(p.name for p in tmp_path.iterdir()) == ["curation_bench"]
    ds = datasets.load_from_disk(str(target))
    assert ds.column_names == ["images", "texts", "id", "image"] and len(ds) == len(order)
    assert isinstance(ds.features["images"].feature, datasets.Image)
    assert ds.features["texts"].feature == {"user": datasets.Value("string"), "assistant": datasets.Value("string")}
    records = [llava_records()[i] for i in order]
    assert ds["id"] == [str(r["id"]) for r in records]
    raw = ds.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
    for row, rec in zip(raw, records, strict=True):
        if "image" in rec:
            image = row["images"]
            assert len(image) == 1 and image[0]["bytes"] == (llava_pool.image_folder / rec["image"]).read_bytes()
            assert image[0]["path"] == Path(rec["image"]).name and row["image"] == rec["image"]
        else:
            assert row["images"] == [] and row["image"] is None
        assert all("<image>" not in (t["user"] or "") for t in row["texts"])
    first = ds[0]  # sg_8: a text-only ShareGPT record
    assert first["texts"] == [{"user": "Write a haiku about autumn #8.", "assistant": "Red leaves drift down slow"}]
    assert ds[3]["texts"][0]["user"] == "Who wrote this book?" and len(ds[3]["texts"]) == 2  # the <image> line gone
    assert ds.with_format(None)[1]["images"][0].size == (12, 8)  # decodes as a PIL image, as a trainer reads it


def test_round_trip_llava_to_curation_bench_to_pool(llava_pool, tmp_path):
    everything = _selection(llava_pool, list(range(30))[::-1])
    target = export(llava_pool, everything, tmp_path / "out", "curation-bench")
    back = import_pool("curation-bench", target, tmp_path / "back")
    assert back.schema["image"] == "image" and back.card.image_folder == "images" and back.card.rows == 30
    assert back.schema["image_sha256"] == "str" and back.card.lineage["importer"] == "curation-bench"
    a = llava_pool.scan().collect().sort("id")
    b = back.scan().collect().sort("id")
    for column in ("id", "question", "answer", "text", "n_turns", "human_chars", "gpt_chars", "has_image",
                   "source", "image"):
        assert a[column].equals(b[column]), column
    assert llava_pool.read_images(a["image"].to_list()) == back.read_images(b["image"].to_list())
    blobs = back.read_images(b["image"].to_list())
    assert b["image_sha256"].to_list() == [hashlib.sha256(x).hexdigest() if x else None for x in blobs]
    record = json.loads(b.filter(pl.col("id") == "000000052846")["record"][0])  # "<image>" was at the end
    assert record["conversations"][0]["value"] == "<image>\nWhere is the cat positioned in the image?"
    assert record["image"] == "coco/train2017/000000052846.jpg"
    # and once more: the re-imported pool exports the same dataset
    again = export(back, everything, tmp_path / "again", "curation-bench")
    assert datasets.load_from_disk(str(again))["texts"] == datasets.load_from_disk(str(target))["texts"]
    assert not list(tmp_path.glob(".back*"))  # the scratch image folder was moved in, nothing left beside


def test_cbdsl_run_exports_the_layout_and_the_cli_imports_it(llava_pool, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.cur").write_text(POLICY)
    result = CliRunner().invoke(cli, ["run", "p.cur", "--pool", str(llava_pool.path), "--format", "curation-bench"])
    assert result.exit_code == 0, result.output
    ds = datasets.load_from_disk(str(tmp_path / "selection" / "curation_bench"))
    manifest = pl.read_parquet(tmp_path / "selection" / "selection.parquet")
    assert ds["id"] == manifest["id"].to_list() and len(ds) == 17
    result = CliRunner().invoke(cli, ["pool", "import", "auto", "selection/curation_bench", "back"])
    assert result.exit_code == 0 and "17 rows" in result.output and "read from" in result.output, result.output
    assert json.loads((tmp_path / "back" / "pool.json").read_text())["lineage"]["importer"] == "curation-bench"


def test_turns_without_a_partner_survive_the_pairs():
    turns = [{"from": "gpt", "value": "Hello."}, {"from": "human", "value": "<image>\nWhat is it?"},
             {"from": "gpt", "value": "A cat."}, {"from": "human", "value": "And then?"},
             {"from": "human", "value": "Well?"}]
    pairs = conversation_pairs(turns, "x")
    assert pairs == [{"user": None, "assistant": "Hello."}, {"user": "What is it?", "assistant": "A cat."},
                     {"user": "And then?", "assistant": None}, {"user": "Well?", "assistant": None}]
    back = pair_turns(pairs, has_image=True)
    assert [t["from"] for t in back] == [t["from"] for t in turns]
    assert back[1]["value"] == "<image>\nWhat is it?" and back[0]["value"] == "Hello."
    with pytest.raises(PoolError, match="conversations\\[0\\] is a 'system' turn"):
        conversation_pairs([{"from": "system", "value": "Be brief."}], "x")


def _cb_dataset(path: Path, rows: dict, features: datasets.Features | None = None, splits: bool = False) -> Path:
    ds = datasets.Dataset.from_dict(rows, features=features)
    (datasets.DatasetDict({"train": ds.select(range(1, len(ds))), "a": ds.select([0])}) if splits else ds
     ).save_to_disk(str(path))
    return path


def _jpeg(shade: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (shade, 0, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def test_curation_benchs_own_forms_import(tmp_path):
    """No id or image column, texts as JSON text, a single pair or human/gpt keys, a DatasetDict's splits."""
    images = datasets.Sequence(datasets.Image())
    rows = {
        "images": [[{"bytes": _jpeg(1), "path": "a.jpg"}], [{"bytes": _jpeg(2), "path": "b.jpg"}], [],
                   [{"bytes": _jpeg(1), "path": None}]],
        "texts": [json.dumps([{"user": "What is red?", "assistant": "The box."}]),
                  json.dumps({"human": "Count them.", "gpt": "Three."}),
                  json.dumps([{"user": "Hi", "assistant": "Hello"}, {"user": "Bye", "assistant": "Bye"}]),
                  json.dumps([{"user": "Again?", "assistant": "Yes."}])],
    }
    src = _cb_dataset(tmp_path / "cb", rows, datasets.Features({"images": images, "texts": datasets.Value("string")}),
                      splits=True)
    pool = import_pool("curation-bench", src, tmp_path / "pool")
    frame = pool.scan().collect()
    # splits in sorted order ("a" first: row 0, then "train": rows 1-3), ids by position
    assert frame["id"].to_list() == ["0", "1", "2", "3"] and frame["question"].to_list() == [
        "What is red?", "Count them.", "Hi", "Again?"]
    assert frame["source"].to_list() == ["curation-bench", "curation-bench", "sharegpt", "curation-bench"]
    digest = hashlib.sha256(_jpeg(1)).hexdigest()
    assert frame["image"][0] == f"curation-bench/{digest}.jpg" == frame["image"][3]  # one file for both
    assert pool.read_images([frame["image"][1]]) == [_jpeg(2)] and frame["n_turns"].to_list() == [1, 1, 2, 1]
    assert pool.card.lineage["parameters"]["splits"] == ["a", "train"]


@pytest.mark.parametrize("rows, expected", [
    ({"texts": [[{"user": "q", "assistant": "a"}], []], "id": ["x", "y"]},
     r"row 1: `texts` must be a non-empty list of \{user, assistant\} pairs, not \[\] \(id 'y'\)"),
    ({"texts": [[{"user": "q", "assistant": None}]], "id": ["x"]},
     r"row 0: a record needs a human turn followed by a gpt turn.*\(id 'x'\)"),
    ({"texts": [[{"user": "q", "assistant": "a"}]] * 2, "id": ["x", "y"],
      "images": [[{"bytes": b"\xff\xd8\xff1", "path": None}, {"bytes": b"\xff\xd8\xff2", "path": None}], []]},
     r"row 0: the row has 2 images; a LLaVA record has at most one \(id 'x'\)"),
    ({"texts": [[{"user": "q", "assistant": "a"}]] * 2, "id": ["x", "y"],
      "image": ["coco/1.jpg", "coco/1.jpg"],
      "images": [[{"bytes": b"\xff\xd8\xff1", "path": None}], [{"bytes": b"\xff\xd8\xff2", "path": None}]]},
     r"row 1: its image 'coco/1.jpg' differs from the image of that path at row 0 \(id 'y'\)"),
    ({"texts": [[{"user": "q", "assistant": "a"}]] * 2, "id": ["x", "x"]}, r"duplicate id 'x'"),
    ({"text": ["q"]}, r"the dataset has no `texts` column \(its columns: text\)"),
])
def test_bad_datasets_are_refused_naming_the_row_and_leave_nothing(tmp_path, rows, expected):
    if "images" in rows:
        feats = {"images": datasets.Sequence(datasets.Image()),
                 "texts": [{"user": datasets.Value("string"), "assistant": datasets.Value("string")}],
                 "id": datasets.Value("string")}
        if "image" in rows:
            feats["image"] = datasets.Value("string")
        src = _cb_dataset(tmp_path / "cb", rows, datasets.Features(feats))
    else:
        src = _cb_dataset(tmp_path / "cb", rows)
    with pytest.raises(PoolError, match=expected):
        import_pool("curation-bench", src, tmp_path / "pool")
    result = CliRunner().invoke(cli, ["pool", "import", "curation-bench", str(src), str(tmp_path / "pool")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cb"]  # no pool, no scratch images


def test_export_errors_say_what_to_do(llava_pool, tmp_path):
    plain = import_pool("llava", write_llava(tmp_path / "mix.json"), tmp_path / "plain")
    with pytest.raises(PoolError, match="has no image folder.*selection row 0, id '000000033471'") as err:
        export(plain, _selection(plain, [0, 8]), tmp_path / "out", "curation-bench")
    assert "--image-folder" in err.value.hint
    assert export(plain, _selection(plain, [8, 9]), tmp_path / "text", "curation-bench").is_dir()  # text only: fine
    no_records = import_pool("jsonl", _jsonl(tmp_path / "t.jsonl"), tmp_path / "generic")
    with pytest.raises(PoolError, match="no `record` column.*curation-bench"):
        export(no_records, pl.DataFrame({"id": ["a"]}), tmp_path / "out", "curation-bench")
    # a failing export leaves neither a partial dataset nor its temporaries; an old export stays whole
    old = export(llava_pool, _selection(llava_pool, [1]), tmp_path / "keep", "curation-bench")
    with pytest.raises(PoolError, match="has no image folder"):
        export(plain, _selection(plain, [8, 0]), tmp_path / "keep", "curation-bench")
    assert sorted(p.name for p in (tmp_path / "keep").iterdir()) == ["curation_bench"]
    assert datasets.load_from_disk(str(old))["id"] == ["000000052846"]


def _jsonl(path: Path) -> Path:
    path.write_text('{"id": "a", "text": "x"}\n')
    return path
