"""Pools whose `image` column holds paths into an image folder (LLaVA's layout)."""

from __future__ import annotations

import polars as pl
import pytest

from cbdsl.compiler import types as T
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.image_folder import Images, unsafe_path
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.writing import write_pool


def _folder(tmp_path, names):
    folder = tmp_path / "scratch"
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode())
    return folder


def _frame(paths):
    return pl.DataFrame({"id": [str(i) for i in range(len(paths))], "image": paths}, schema={"id": pl.String,
                                                                                             "image": pl.String})


def test_a_folder_moved_into_the_pool_is_read_by_path(tmp_path):
    folder = _folder(tmp_path, ["coco/a.png", "gqa/b.png"])
    pool = write_pool(_frame(["coco/a.png", None, "gqa/b.png"]), tmp_path / "p", name="p",
                      images=Images(folder, move=True))
    assert not folder.exists() and pool.card.image_folder == "images" and pool.schema["image"] == "image"
    again = Pool.open(tmp_path / "p")
    assert again.read_images(["gqa/b.png", None, "coco/a.png"]) == [b"gqa/b.png", None, b"coco/a.png"]


def test_an_outside_folder_is_read_in_place_and_missing_images_are_named(tmp_path):
    folder = _folder(tmp_path, ["a.png"])
    pool = write_pool(_frame(["a.png"]), tmp_path / "p", name="p", images=Images(folder))
    assert pool.card.image_folder == str(folder) and folder.is_dir()
    with pytest.raises(PoolError) as err:
        pool.read_images(["a.png", "x/1.png", "../a.png", "/etc/passwd"])
    assert "3 of 4 images" in str(err.value) and "x/1.png, ../a.png, /etc/passwd" in str(err.value)


def test_the_image_column_must_hold_strings_and_the_folder_exist(tmp_path):
    frame = pl.DataFrame({"id": ["a"], "image": [b"x"]})
    with pytest.raises(PoolError, match="must be a string column"):
        write_pool(frame, tmp_path / "p", name="p", images=Images(tmp_path))
    with pytest.raises(PoolError, match="not a directory"):
        write_pool(_frame(["a"]), tmp_path / "q", name="q", images=Images(tmp_path / "none"))


@pytest.mark.parametrize("path, unsafe", [("a/b.png", False), ("../b", True), ("/b", True), ("a\\b", True),
                                          ("", True), ("c:/x", True), ("a/./b", False)])
def test_paths_that_leave_the_folder(path, unsafe):
    assert unsafe_path(path) is unsafe


def test_an_image_column_is_an_image_to_the_checker():
    assert T.parse_type("image") == T.IMAGE and T.accepts("image", T.IMAGE) and T.accepts("image", T.BINARY)
    assert not T.accepts("str", T.IMAGE)
