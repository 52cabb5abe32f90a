"""Pools: the data a policy curates, as a directory a person can inspect, opened as a :class:`Pool`.

A pool is a directory holding its card (``pool.json``, :mod:`~cbdsl.pipelines.data.card`),
its parquet shards, a score cache and named assets. :class:`Pool` opens one
(checking the card and that its shards are there), scans its shards lazily,
reads its assets by name, and verifies every byte against the card.

Making a pool, or adding an asset to one, is :mod:`~cbdsl.pipelines.data.writing`;
the importers (:mod:`~cbdsl.pipelines.data.importers`) make pools from
DataComp, LLaVA, Hugging Face, parquet and JSONL sources.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from cbdsl.pipelines.data.assets import checked_asset_file, load_asset
from cbdsl.pipelines.data.card import ASSETS_DIR, SCORES_DIR, SHARDS_DIR, AssetInfo, PoolCard, read_card
from cbdsl.pipelines.data.errors import PoolError, suggest
from cbdsl.pipelines.data.hashing import sha256_file
from cbdsl.pipelines.data.image_folder import folder_path, read_images
from cbdsl.pipelines.data.roots import CARD_FILE, HOW_TO_MAKE


@dataclass(frozen=True)
class Pool:
    """An opened pool: its directory and its card. Cheap to open; scanning is lazy."""

    path: Path
    card: PoolCard

    @classmethod
    def open(cls, path: str | os.PathLike) -> Pool:
        path = Path(path).expanduser().absolute()
        if not path.exists():
            raise PoolError(f"no pool at {path}: the directory does not exist", hint=HOW_TO_MAKE)
        if not path.is_dir():
            raise PoolError(f"{path} is a file, not a pool directory", hint=HOW_TO_MAKE)
        card_path = path / CARD_FILE
        if not card_path.is_file():
            if (path / SHARDS_DIR).is_dir():
                raise PoolError(
                    f"{path} has shards but no {CARD_FILE}: an interrupted write, not a usable pool",
                    hint="write the pool again with overwrite (`cbdsl pool import ... --overwrite`)",
                )
            raise PoolError(f"{path} is not a pool: it has no {CARD_FILE}", hint=HOW_TO_MAKE)
        card = read_card(card_path)
        missing = [s.file for s in card.shards if not (path / s.file).is_file()]
        if missing:
            raise PoolError(
                f"the card lists {len(missing)} shard(s) that are missing, first {missing[0]}",
                file=card_path, hint="the pool was moved or edited by hand; import it again",
            )
        return cls(path, card)

    # the card's most used fields, as attributes
    @property
    def name(self) -> str:
        return self.card.name

    @property
    def id_column(self) -> str:
        return self.card.id_column

    @property
    def schema(self) -> dict[str, str]:
        return dict(self.card.schema)

    @property
    def content_hash(self) -> str:
        return self.card.content_hash

    @property
    def scores_dir(self) -> Path:
        return self.path / SCORES_DIR

    @property
    def assets_dir(self) -> Path:
        return self.path / ASSETS_DIR

    @property
    def image_folder(self) -> Path | None:
        """Where the paths of the pool's ``image`` columns point (None: it has none)."""
        return folder_path(self.path, self.card.image_folder) if self.card.image_folder else None

    def read_images(self, paths: Sequence[str | None], *, column: str = "image") -> list[bytes | None]:
        """The bytes of images named by an ``image`` column's paths (None stays None); a missing image is a
        PoolError naming the first few."""
        if self.image_folder is None:
            raise PoolError(f"pool `{self.name}` has no image folder, so `{column}` holds no image paths")
        return read_images(self.image_folder, paths, where=f"pool `{self.name}`, column `{column}`")

    @property
    def shard_paths(self) -> list[Path]:
        return [self.path / s.file for s in self.card.shards]

    def scan(self, columns: Sequence[str] | None = None) -> pl.LazyFrame:
        """A lazy scan over the shards, in order, reading only ``columns`` (all if None)."""
        frame = pl.scan_parquet([str(p) for p in self.shard_paths])
        if columns is None:
            return frame
        columns = list(columns)
        for col in columns:
            if col not in self.card.schema:
                raise PoolError(f"pool {self.name!r} has no column {col!r}",
                                hint=suggest(col, self.card.schema, "its columns are"))
        return frame.select(columns)

    def asset_path(self, name: str) -> Path:
        """The file (or, for a model, possibly the directory) of a registered asset, checked (:meth:`_asset`)."""
        return self._asset(name)[1]

    def read_asset(self, name: str) -> Any:
        """A registered asset parsed by its kind.

        ids -> ``pl.Series`` of str; centroids -> 2-D ``np.ndarray``; corpus and
        eval -> ``pl.DataFrame`` with a ``text`` column; labels, truth and table ->
        ``pl.DataFrame``; model -> the ``Path`` of its file or directory (its
        library loads it).
        """
        info, path = self._asset(name)
        data, _rows = load_asset(path, info.kind, self.id_column)
        return data

    def verify(self) -> None:
        """Re-hash every shard and asset against the card (slow: reads every byte)."""
        for shard in self.card.shards:
            if sha256_file(self.path / shard.file) != shard.sha256:
                raise PoolError(f"shard {shard.file} does not match its sha256 in the card",
                                file=self.path / shard.file,
                                hint="the shard was changed after the pool was written; import the pool again")
        for name, info in self.card.assets.items():
            checked_asset_file(self.path, name, info, rehash=True)

    def _asset(self, name: str) -> tuple[AssetInfo, Path]:
        """The card entry and the file of asset ``name``, after :func:`checked_asset_file` vouched for it."""
        info = self.card.assets.get(name)
        if info is None:
            raise PoolError(
                f"pool {self.name!r} has no asset {name!r}",
                hint=suggest(name, self.card.assets, "its assets are")
                + "; register one with `cbdsl pool add-asset POOL NAME FILE`",
            )
        return info, checked_asset_file(self.path, name, info)
