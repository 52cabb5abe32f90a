"""Image folders: pools whose ``image`` column holds file paths, as LLaVA's instruction data does.

Why it exists: LLaVA-665K names its images by a path relative to an image
folder (``coco/train2017/000000033471.jpg``), about 100 GB of files that a
pool cannot copy into its parquet shards. So a pool may have columns of
schema type ``image``: strings, a path relative to the card's
``image_folder``. The folder is either inside the pool (``images``, what the
demo instruction pool writes) or an absolute path (an imported dataset's
folder, read in place). Images are read lazily, only by what needs their
pixels (a scorer's ``image`` input, a backend), through :func:`read_images`.

Identity: the pool's content hash covers the paths, not the pixels. The
demo instruction pool adds an ``image_sha256`` column so its hash covers the
pixels too; an imported folder is trusted as it is (cbdsl does not hash
100 GB at import), which POOL.md says.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cbdsl.pipelines.data.errors import PoolError

INSIDE = "images"
"""The folder name of images kept inside a pool (relative ``image_folder``)."""

SHOWN_MISSING = 5  # how many missing paths an error names


def folder_path(pool_path: Path, image_folder: str) -> Path:
    """The absolute image folder of a pool at ``pool_path`` whose card says ``image_folder``."""
    folder = Path(image_folder)
    return folder if folder.is_absolute() else pool_path / folder


def unsafe_path(path: str) -> bool:
    """Whether an image path could leave its folder (absolute, ``..``, a drive, a backslash)."""
    pure = PurePosixPath(path)
    return (not path or pure.is_absolute() or ".." in pure.parts or "\\" in path or ":" in pure.parts[0]
            or "\0" in path)


def missing_images(folder: Path, paths: Sequence[str | None]) -> list[str]:
    """The non-null paths that are not files under ``folder`` (or would leave it), in order."""
    return [p for p in paths if p is not None and (unsafe_path(p) or not (folder / p).is_file())]


def missing_error(folder: Path, missing: Sequence[str], total: int, where: str) -> PoolError:
    """The error for images that are not there: how many, the first few, and what to do."""
    shown = ", ".join(missing[:SHOWN_MISSING]) + (", ..." if len(missing) > SHOWN_MISSING else "")
    return PoolError(f"{where}: {len(missing)} of {total} images are not files under {folder}: {shown}",
                     hint="give the image folder the paths are relative to (LLaVA's playground/data); a path "
                          "may not be absolute or contain `..`")


def read_images(folder: Path, paths: Sequence[str | None], *, where: str = "image column") -> list[bytes | None]:
    """The bytes of each image (None for a null path), checking every path first: a missing image is a
    :class:`PoolError` naming the first few, raised before anything is read."""
    missing = missing_images(folder, paths)
    if missing:
        raise missing_error(folder, missing, sum(p is not None for p in paths), where)
    out: list[bytes | None] = []
    for p in paths:
        if p is None:
            out.append(None)
            continue
        try:
            out.append((folder / p).read_bytes())
        except OSError as err:
            raise PoolError(f"{where}: cannot read image {folder / p} ({err.strerror})",
                            hint="check the image folder's permissions") from None
    return out


@dataclass(frozen=True)
class Images:
    """How :func:`~cbdsl.pipelines.data.writing.write_pool` writes image columns: the string ``columns`` of
    paths relative to ``folder``; ``move`` moves the folder into the pool (a generator's scratch folder),
    else the card records its absolute path and it is read in place."""

    folder: Path
    columns: tuple[str, ...] = ("image",)
    move: bool = False


def install(source: Path, pool_tmp: Path) -> str:
    """Move (or copy across file systems) an image folder written beside a pool into the pool being written
    at ``pool_tmp``; returns the card's relative ``image_folder``."""
    target = pool_tmp / INSIDE
    try:
        os.replace(source, target)
    except OSError:
        import shutil  # rare: another file system

        shutil.copytree(source, target)
    return INSIDE
