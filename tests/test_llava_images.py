"""`cbdsl pool import llava FILE DEST --image-folder DIR`: the image column read in place, checked before writing.

Bad records (no gpt turn, an image that is not there, a conversation that is
not a list) are refused with the record's position and id, by the API and
by the CLI, and no pool directory (nor a scratch one) is left behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.importers import import_pool
from cbdsl.pipelines.loop.cards import pool_md

sys.path.insert(0, str(Path(__file__).parent / "data"))
from pool_fixtures import llava_records, write_llava, write_llava_images  # noqa: E402


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_llava_images(tmp_path / "playground" / "data")


def test_the_image_column_points_into_the_folder_read_in_place(tmp_path, folder):
    pool = import_pool("llava", write_llava(tmp_path / "mix.json"), tmp_path / "pool", image_folder=folder)
    assert pool.schema["image"] == "image" and pool.card.image_folder == str(folder.absolute())
    assert not (pool.path / "images").exists() and folder.is_dir()  # read in place, never copied
    assert pool.card.lineage["parameters"]["image_folder"] == str(folder.absolute())
    rows = pool.scan(["image"]).collect()["image"].to_list()
    blobs = pool.read_images(rows)
    assert all((b is None) == (p is None) for p, b in zip(rows, blobs, strict=True))
    assert blobs[0] == (folder / rows[0]).read_bytes() and blobs[0][:3] == b"\xff\xd8\xff"
    assert "names an image file of the pool's image folder" in pool_md(pool)


def test_without_a_folder_the_column_is_a_string_and_the_cards_say_so(tmp_path):
    pool = import_pool("llava", write_llava(tmp_path / "mix.json"), tmp_path / "pool")
    assert pool.schema["image"] == "str" and pool.card.image_folder is None
    assert "no scorer (and no backend) can read the images" in pool_md(pool)
    with pytest.raises(PoolError, match="has no image folder"):
        pool.read_images(["coco/train2017/000000033471.jpg"])
    out = CliRunner().invoke(cli, ["pool", "info", str(pool.path)]).output
    assert "no scorer or backend can read the" in out and "--image-folder" in out


def _left_behind(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in ("mix.json", "playground"))


def test_a_missing_image_is_named_with_its_record_before_anything_is_written(tmp_path, folder):
    (folder / "ocr_vqa/images/71916.jpg").unlink()
    (folder / "vg/VG_100K_2/2.jpg").unlink()
    with pytest.raises(PoolError) as err:
        import_pool("llava", write_llava(tmp_path / "mix.json"), tmp_path / "pool", image_folder=folder)
    text = str(err.value)
    assert "2 of 24 images are not files under" in text and "ocr_vqa/images/71916.jpg, vg/VG_100K_2/2.jpg" in text
    assert "first at row 12 (id '71916')" in text and "image folder the paths are relative to" in err.value.hint
    assert _left_behind(tmp_path) == []
    with pytest.raises(PoolError, match="is not a directory"):
        import_pool("llava", tmp_path / "mix.json", tmp_path / "pool", image_folder=tmp_path / "nowhere")


@pytest.mark.parametrize("breakage, expected", [
    (lambda r: r[3].update(conversations=[{"from": "human", "value": "<image>\nHow many people are there?"}]),
     r"row 3: a record needs a human turn followed by a gpt turn.*no gpt turn after a human turn \(id 2\)"),
    (lambda r: r[14].update(image="textvqa/train_images/nope.jpg"),
     r"row 14 \(id 'textvqa-0054c91397f2fe05'\): 1 of 24 images are not files.*textvqa/train_images/nope\.jpg"),
    (lambda r: r[9].update(conversations={"from": "human", "value": "hi"}),
     r"row 9: a record needs a non-empty `conversations` list \(id 'i6IyJda_0'\)"),
])
def test_bad_records_are_named_by_position_and_id_through_the_cli(tmp_path, folder, breakage, expected):
    records = llava_records()
    breakage(records)
    src = write_llava(tmp_path / "mix.json", records)
    with pytest.raises(PoolError, match=expected):
        import_pool("llava", src, tmp_path / "pool", image_folder=folder)
    result = CliRunner().invoke(cli, ["pool", "import", "llava", str(src), str(tmp_path / "pool"),
                                      "--image-folder", str(folder)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert __import__("re").search(expected, " ".join(result.output.split())), result.output
    assert _left_behind(tmp_path) == []


def test_the_cli_imports_with_the_folder_and_duplicate_ids(tmp_path, folder):
    records = llava_records()
    records[7]["id"] = records[2]["id"]
    src = write_llava(tmp_path / "mix.json", records)
    result = CliRunner().invoke(cli, ["pool", "import", "llava", str(src), str(tmp_path / "pool"),
                                      "--image-folder", str(folder), "--duplicate-ids", "suffix"])
    assert result.exit_code == 0, result.output
    assert "30 rows" in result.output and f"`image` read from {folder}" in result.output
    info = json.loads(CliRunner().invoke(cli, ["pool", "info", str(tmp_path / "pool"), "--json"]).output)
    assert info["schema"]["image"] == "image" and info["image_folder"] == str(folder.absolute())
    result = CliRunner().invoke(cli, ["pool", "import", "hf", str(src), str(tmp_path / "p2"),
                                      "--image-folder", str(folder)])
    assert result.exit_code == 2 and "has no option 'image_folder'" in result.output
