"""The pool card, ``pool.json``: its models, and reading, checking and writing it.

A pool is a directory::

    POOL/
      pool.json              the card: id column, schema, statistics, hashes, lineage, assets
      shards/part-00000.parquet ...
      scores/                the score cache (filled by scorers, keyed by the content hash)
      assets/                named files a policy may refer to: asset("icons-133k"), checkpoint="my-clip"

The card is what agents read (POOL.md is made from it) and what the checker
types a policy against, so it is written last and atomically
(:func:`write_card`): a directory without ``pool.json`` is never taken for a
pool, and a crash while writing leaves no half pool that looks valid.

This module imports neither Polars nor NumPy: ``cbdsl check --pool DIR``
reads the card through :func:`card_types` on its fast path.
"""

from __future__ import annotations

import json
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.roots import CARD_FILE

FORMAT_VERSION = 1
SHARDS_DIR = "shards"
SCORES_DIR = "scores"
ASSETS_DIR = "assets"

TypeName = Literal["str", "int", "float", "bool", "embedding", "list[str]", "binary", "image", "any"]
TYPE_NAMES: tuple[str, ...] = ("str", "int", "float", "bool", "embedding", "list[str]", "binary", "image", "any")
"""``image``: a string column of image file paths, relative to the card's ``image_folder`` (LLaVA's layout)."""
AssetKind = Literal["ids", "corpus", "centroids", "eval", "truth", "labels", "table", "model"]
ASSET_KINDS: tuple[str, ...] = ("ids", "corpus", "centroids", "eval", "truth", "labels", "table", "model")
ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


# defer_build: each model's validator is built when first used, not on import, since `cbdsl check --pool`
# imports this module for card_types and never validates a card (about 8 ms of its start).


class ShardInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    file: str
    rows: int = Field(ge=0)
    sha256: str


class AssetInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    file: str
    kind: AssetKind
    sha256: str
    rows: int | None = None
    description: str = ""


with warnings.catch_warnings():
    # `schema` is the card's field name (the checker and POOL.md read it); it
    # shadows pydantic's deprecated BaseModel.schema() classmethod on purpose.
    warnings.filterwarnings("ignore", message=r'Field name "schema"', category=UserWarning)

    class PoolCard(BaseModel):
        """``pool.json``: everything about a pool that can be known without scanning it."""

        model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

        format_version: int
        name: str
        id_column: str
        schema: dict[str, TypeName]
        dtypes: dict[str, str]
        rows: int = Field(ge=0)
        shards: list[ShardInfo]
        stats: dict[str, dict[str, Any]]
        content_hash: str
        lineage: dict[str, Any]
        assets: dict[str, AssetInfo] = Field(default_factory=dict)
        #: Where the paths of ``image`` columns point: a folder relative to the pool (``images``, the demo's) or
        #: absolute (an imported dataset's image folder, read in place, never copied).
        image_folder: str | None = None

        @model_validator(mode="after")
        def _consistent(self) -> PoolCard:
            if self.id_column not in self.schema:
                raise ValueError(f"id_column {self.id_column!r} is not in schema")
            if set(self.schema) != set(self.dtypes):
                raise ValueError("schema and dtypes name different columns")
            if not self.shards:
                raise ValueError("a pool has at least one shard")
            if "image" in self.schema.values() and not self.image_folder:
                raise ValueError("a pool with an image column needs an image_folder")
            if sum(s.rows for s in self.shards) != self.rows:
                raise ValueError(f"rows is {self.rows} but the shards hold {sum(s.rows for s in self.shards)}")
            return self


def read_card(card_path: Path) -> PoolCard:
    """The card at ``card_path``, validated; a PoolError says what is wrong with it and how to recover."""
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise PoolError(f"the card is not UTF-8 text ({err.reason})", file=card_path) from None
    except json.JSONDecodeError as err:
        raise PoolError(f"the card is not valid JSON: {err.msg} (column {err.colno})", file=card_path,
                        line=err.lineno, hint="restore it or import the pool again") from None
    if not isinstance(data, dict):
        raise PoolError("the card is not a JSON object", file=card_path, hint="import the pool again")
    version = data.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise PoolError(f"the pool has format_version {version}; this cbdsl reads up to {FORMAT_VERSION}",
                        file=card_path, hint="upgrade cbdsl")
    try:
        return PoolCard.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'card'}: {e['msg']}" for e in err.errors()[:5]
        )
        raise PoolError(f"the card is not a valid pool card: {problems}", file=card_path,
                        hint="restore it or import the pool again") from None


def write_card(directory: Path, card: PoolCard) -> None:
    """Write pool.json atomically: a temporary file, fsync, then os.replace."""
    text = json.dumps(card.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    tmp = directory / f".{CARD_FILE}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / CARD_FILE)
    finally:
        tmp.unlink(missing_ok=True)


def card_types(directory: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """(column name -> type, asset name -> kind) from the card in ``directory``: what the checker types a policy by.

    Why: ``cbdsl check --pool DIR`` needs only these two mappings, and must
    start fast; so the card is read as plain JSON, without validating the rest
    of it (:func:`read_card` does that) and without opening the shards. A
    missing or unreadable card, invalid JSON, a card without a ``schema``
    mapping, or an ``assets`` entry that is not a mapping of name to asset is a
    PoolError whose text (it has no file or hint) is the whole message.
    """
    card = os.path.join(directory, CARD_FILE)
    try:
        with open(card, encoding="utf-8") as f:
            data = json.loads(f.read())
    except OSError as err:
        raise PoolError(f"no pool card at {card} ({err.strerror}); give a pool directory") from err
    except json.JSONDecodeError as err:
        raise PoolError(f"{card} is not valid JSON: {err}") from err
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, dict):
        raise PoolError(f"{card} has no `schema` mapping of column name to type")
    assets = data.get("assets") or {}
    if not isinstance(assets, dict) or not all(isinstance(a, dict) for a in assets.values()):
        raise PoolError(f"{card} has an `assets` entry that is not a mapping of name to asset")
    return ({str(k): str(v) for k, v in schema.items()},
            {str(name): str(info.get("kind", "")) for name, info in assets.items()})
