"""Curation-Bench's subset layout, both ways: a selection written as one, and one read back as LLaVA records.

Why: Curation-Bench (feiyang-k/curation-bench, read at b8b5e17) hands its
trainer a Hugging Face dataset saved with ``save_to_disk`` holding exactly
the budget's rows (``baselines/dataset/make_random.py``: ``ds.select(...)``,
``subset.save_to_disk(...)``), whose ``texts`` column is a list of
``{"user", "assistant"}`` turn pairs (``template_rewrite.py`` reads
``turn.get("user", turn.get("human"))`` and writes ``{"user", "assistant"}``).
That is the layout of HuggingFaceM4's *the Cauldron*, whose ``images``
column is a list of ``datasets.Image``; Curation-Bench's public code never
names its image column, so ``images`` follows the Cauldron.

Written (:func:`write_dataset`), in selection order:

- ``images``: ``List(Image())``, the record's image bytes as a list of one
  (an empty list for a text-only record); ``save_to_disk`` keeps only the
  file's base name as the image's ``path``;
- ``texts``: ``List({"user", "assistant"})``, the record's turns paired in
  order, without the ``<image>`` placeholder (the image is beside the text,
  as in the Cauldron; LLaVA's ``preprocess_multimodal`` puts it back in
  front of the first turn). A turn without a partner (a leading gpt turn, a
  trailing human turn) is a pair with ``None`` on the other side;
- ``id`` and ``image`` (the LLaVA path relative to the image folder), which
  Curation-Bench's code does not read; they let an import rebuild each
  record, its source and its image's place.

Read (:func:`read_dataset`): the same layout, or Curation-Bench's own
(``texts`` as a list, one pair, or JSON text; ``human``/``gpt`` for
``user``/``assistant``; a ``DatasetDict``'s splits concatenated in sorted
order, as its scripts do; no ``id``: the row position). Each row becomes a
LLaVA record (``<image>\\n`` in front of the first human turn of a record
with an image) and its image a file in a scratch folder that the pool takes
in: at its ``image`` path when that is given and stays inside the folder,
else ``curation-bench/<sha256>.<ext>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import polars as pl

from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.image_folder import unsafe_path
from cbdsl.pipelines.data.llava import GPT_ROLES, HUMAN_ROLES, IMAGE_TOKEN, without_image_token
from cbdsl.pipelines.data.pool import Pool

DIRECTORY = "curation_bench"
"""The export's folder name (a ``save_to_disk`` dataset directory)."""

UNPLACED = "curation-bench"
"""The image folder's subfolder for images whose LLaVA path the dataset does not give (their source too)."""

CHUNK_ROWS = 512  # rows whose image bytes are held at once, either way

_HINT = ("a Curation-Bench dataset is a `save_to_disk` folder with a `texts` column of [{user, assistant}] turn "
         "pairs and an `images` column of a list of at most one image")


def _datasets():
    """The ``datasets`` package, or a PoolError saying how to get it."""
    try:
        import datasets  # heavy: loaded only by this layout's import and export
    except ImportError:
        raise PoolError("the Curation-Bench layout needs the `datasets` package", hint="pip install datasets") from None
    return datasets


def features():
    """The written dataset's features (``datasets.Features``)."""
    datasets = _datasets()
    text = datasets.Value("string")
    return datasets.Features({"images": datasets.Sequence(datasets.Image()),
                              "texts": [{"user": text, "assistant": text}], "id": text, "image": text})


# --------------------------------------------------------------------------- turns <-> pairs


def conversation_pairs(turns: list[dict[str, Any]], rid: str) -> list[dict[str, str | None]]:
    """LLaVA turns as Curation-Bench's ``{"user", "assistant"}`` pairs, without the ``<image>`` placeholder.

    A human turn opens a pair and the gpt turn after it closes it; a gpt
    turn with no open pair (a leading one) is ``{"user": None, ...}`` and an
    unanswered human turn keeps ``"assistant": None``, so no text is lost."""
    pairs: list[dict[str, str | None]] = []
    for i, turn in enumerate(turns):
        role, value = str(turn["from"]).lower(), without_image_token(turn["value"])
        if role in HUMAN_ROLES:
            pairs.append({"user": value, "assistant": None})
        elif role in GPT_ROLES:
            if pairs and pairs[-1]["assistant"] is None and pairs[-1]["user"] is not None:
                pairs[-1]["assistant"] = value
            else:
                pairs.append({"user": None, "assistant": value})
        else:
            raise PoolError(f"record {rid!r}: conversations[{i}] is a {turn['from']!r} turn; Curation-Bench's "
                            "texts hold user/assistant pairs only",
                            hint="drop the record from the selection (filter on its id), or export it as llava")
    return pairs


def pair_turns(pairs: list[dict[str, str | None]], has_image: bool) -> list[dict[str, str]]:
    """Pairs back as LLaVA turns (``None`` sides dropped), ``<image>\\n`` in front of the first human turn of a
    record with an image, where LLaVA's ``preprocess_multimodal`` puts it."""
    turns = []
    for pair in pairs:
        for side, role in (("user", "human"), ("assistant", "gpt")):
            if pair.get(side) is not None:
                turns.append({"from": role, "value": pair[side]})
    if has_image:
        first = next((t for t in turns if t["from"] == "human"), None)
        if first is not None and IMAGE_TOKEN not in first["value"]:
            first["value"] = f"{IMAGE_TOKEN}\n{first['value']}"
    return turns


# --------------------------------------------------------------------------- export


def write_dataset(pool: Pool, rows: pl.DataFrame, target: Path) -> None:
    """Write ``rows`` (``id``, ``record`` and ``image`` of the selected pool rows, in selection order) as a
    Curation-Bench dataset at ``target``, replacing one there only once the new one is complete."""
    datasets = _datasets()
    from datasets.arrow_writer import ArrowWriter  # with datasets, above

    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.arrow")
    try:
        feats = features()
        with ArrowWriter(features=feats, path=str(staging), writer_batch_size=CHUNK_ROWS) as writer:
            for batch in _batches(pool, rows):
                writer.write_batch(batch)
            writer.finalize()
        datasets.Dataset.from_file(str(staging)).save_to_disk(str(tmp))
        replace_directory(tmp, target)
    finally:
        staging.unlink(missing_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _batches(pool: Pool, rows: pl.DataFrame) -> Iterator[dict[str, list]]:
    """The dataset's columns, :data:`CHUNK_ROWS` rows at a time (the images of one chunk in memory)."""
    for start in range(0, rows.height, CHUNK_ROWS):
        chunk = rows.slice(start, CHUNK_ROWS)
        paths = chunk.get_column("image").to_list()
        if any(p is not None for p in paths) and pool.image_folder is None:
            row = start + next(i for i, p in enumerate(paths) if p is not None)
            raise PoolError(f"pool `{pool.name}` has no image folder, so the images of its records cannot be "
                            f"written (selection row {row}, id {rows['id'][row]!r}, names {paths[row - start]!r})",
                            row=row, hint="import the LLaVA file again with `--image-folder DIR` (the folder its "
                            "image paths are relative to), or export `llava`, which names images by path")
        data = pool.read_images(paths) if pool.image_folder is not None else [None] * len(paths)
        batch: dict[str, list] = {"images": [], "texts": [], "id": [], "image": []}
        for rid, record, path, blob in zip(chunk["id"].to_list(), chunk["record"].to_list(), paths, data,
                                           strict=True):
            turns = json.loads(record)["conversations"]
            batch["images"].append([] if blob is None else [{"bytes": blob, "path": PurePosixPath(path).name}])
            batch["texts"].append(conversation_pairs(turns, rid))
            batch["id"].append(rid)
            batch["image"].append(path)
        yield batch


def replace_directory(tmp: Path, target: Path) -> None:
    """Move the finished directory ``tmp`` to ``target``, replacing what is there only after it is complete."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


# --------------------------------------------------------------------------- import


class Read(NamedTuple):
    """What :func:`read_dataset` read: ``(position, LLaVA record)`` pairs, each record's image sha256 (None
    without one), whether any image was written to the scratch folder, and the dataset's files and split."""

    records: list[tuple[int, dict[str, Any]]]
    sha256: list[str | None]
    any_image: bool
    files: list[Path]
    splits: list[str]


def read_dataset(src: str | os.PathLike, scratch: Path) -> Read:
    """A Curation-Bench dataset as LLaVA records, its images written into ``scratch`` (which must not exist;
    the caller removes it, whatever happens)."""
    datasets = _datasets()
    path = Path(src).expanduser()
    if not path.is_dir():
        raise PoolError(f"no dataset directory at {path}", file=path, hint=_HINT)
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - datasets raises FileNotFoundError, ValueError, ...
        raise PoolError(f"not a dataset saved with save_to_disk: {str(err).splitlines()[0]}", file=path,
                        hint=_HINT) from None
    splits: list[str] = []
    if isinstance(ds, datasets.DatasetDict):  # as Curation-Bench's scripts read one: its splits in sorted order
        splits = sorted(ds)
        ds = datasets.concatenate_datasets([ds[k] for k in splits])
    if "texts" not in ds.column_names:
        raise PoolError(f"the dataset has no `texts` column (its columns: {', '.join(ds.column_names)})",
                        file=path, hint=_HINT)
    scratch.mkdir(parents=True)
    placed: dict[str, tuple[str, int]] = {}  # image path -> (sha256, first row)
    records: list[tuple[int, dict[str, Any]]] = []
    digests: list[str | None] = []
    table = ds.with_format("arrow")
    for start in range(0, len(ds), CHUNK_ROWS):
        chunk = table[start:start + CHUNK_ROWS]
        columns = {c: chunk.column(c).to_pylist() for c in ("texts", "images", "id", "image")
                   if c in chunk.column_names}
        for i in range(chunk.num_rows):
            row = start + i
            rid = columns["id"][i] if "id" in columns else str(row)
            fail = _failing(path, row, rid)
            if rid is None or not isinstance(rid, str | int) or isinstance(rid, bool):
                raise fail(f"its id is {rid!r}; ids are strings or integers")
            pairs = _pairs(columns["texts"][i], fail)
            blob = _one_image(columns["images"][i] if "images" in columns else None, fail)
            digest = None
            record: dict[str, Any] = {"id": str(rid)}
            if blob is not None:
                digest = hashlib.sha256(blob).hexdigest()
                rel = _place(columns.get("image", [None] * chunk.num_rows)[i], digest, blob)
                if rel in placed and placed[rel][0] != digest:
                    raise fail(f"its image {rel!r} differs from the image of that path at row {placed[rel][1]}",
                               hint="two records name one image path with different bytes; fix the `image` column")
                if rel not in placed:
                    (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                    (scratch / rel).write_bytes(blob)
                    placed[rel] = (digest, row)
                record["image"] = rel
            record["conversations"] = pair_turns(pairs, blob is not None)
            records.append((row, record))
            digests.append(digest)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return Read(records, digests, bool(placed), files, splits)


def _failing(path: Path, row: int, rid: Any) -> Callable[..., PoolError]:
    def fail(message: str, hint: str = _HINT) -> PoolError:
        return PoolError(f"{message} (id {rid!r})", file=path, row=row, hint=hint)
    return fail


def _pairs(texts: Any, fail: Callable[..., PoolError]) -> list[dict[str, str | None]]:
    """A row's ``texts`` as pairs, in the forms Curation-Bench's ``template_rewrite.py`` accepts."""
    if isinstance(texts, str):
        try:
            texts = json.loads(texts)
        except json.JSONDecodeError as err:
            raise fail(f"`texts` is text that is not JSON ({err.msg})") from None
    if isinstance(texts, dict):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise fail(f"`texts` must be a non-empty list of {{user, assistant}} pairs, not {texts!r:.80}")
    pairs = []
    for k, turn in enumerate(texts):
        if not isinstance(turn, dict):
            raise fail(f"texts[{k}] must be a {{user, assistant}} object, not {turn!r:.80}")
        user, assistant = turn.get("user", turn.get("human")), turn.get("assistant", turn.get("gpt"))
        if not all(v is None or isinstance(v, str) for v in (user, assistant)) or (user is None and assistant is None):
            raise fail(f"texts[{k}] needs a string `user` or `assistant`, not {turn!r:.80}")
        pairs.append({"user": user, "assistant": assistant})
    return pairs


def _one_image(images: Any, fail: Callable[..., PoolError]) -> bytes | None:
    """The bytes of a row's image (None for none); more than one, or one without bytes, is refused."""
    if images is None:
        return None
    if isinstance(images, dict):  # an Image column rather than a list of them
        images = [images]
    if not isinstance(images, list):
        raise fail(f"`images` must be a list of images, not {type(images).__name__}")
    if len(images) > 1:
        raise fail(f"the row has {len(images)} images; a LLaVA record has at most one",
                   hint="import the dataset's single-image rows only")
    if not images:
        return None
    blob = images[0].get("bytes") if isinstance(images[0], dict) else None
    if not blob:
        where = images[0].get("path") if isinstance(images[0], dict) else None
        raise fail("its image has no bytes" + (f", only the path {where!r}" if where else ""),
                   hint="Curation-Bench datasets carry the image bytes (Dataset.save_to_disk embeds them)")
    return blob


_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF8", ".gif"), (b"BM", ".bmp"))


def _place(path: str | None, digest: str, blob: bytes) -> str:
    """Where an image goes in the pool's folder: its LLaVA path when the dataset gives a safe one, else
    ``curation-bench/<sha256><ext>`` (the extension from the bytes; LLaVA's loader reads the bytes anyway)."""
    if isinstance(path, str) and not unsafe_path(path) and not path.endswith("/"):
        return path
    ext = next((e for magic, e in _MAGIC if blob.startswith(magic)), None)
    if ext is None:
        ext = ".webp" if blob[:4] == b"RIFF" and blob[8:12] == b"WEBP" else ".img"
    return f"{UNPLACED}/{digest}{ext}"
