"""LLaVA instruction records: the row a pool keeps for each, and the source (sub-dataset) it came from.

A LLaVA record is ``{id, image?, conversations: [{from, value}, ...]}`` (the
LLaVA-1.5 665K mix and its kin). :func:`llava_frame` turns records into a
frame of :data:`LLAVA_SCHEMA`, refusing a malformed one with its position and
id; the LLaVA importer, the Curation-Bench importer and the demo instruction
pool all go through it, so their pools have the same columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from cbdsl.pipelines.data.errors import PoolError

IMAGE_TOKEN = "<image>"
"""LLaVA's image placeholder in a turn's text (``preprocess_multimodal`` moves it to the front of the turn)."""

LLAVA_PREFIX_SOURCES = {"gqa": "gqa", "ocr_vqa": "ocr_vqa", "textvqa": "textvqa", "vg": "vg"}
SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."
REGION_PROMPTS = (
    "Provide a short description for this region",
    "Provide the bounding box coordinate of the region this sentence describes",
)
HUMAN_ROLES = frozenset({"human", "user"})
GPT_ROLES = frozenset({"gpt", "assistant"})
ROLES = HUMAN_ROLES | GPT_ROLES | {"system"}
IMAGE_TOKEN_SPAN = re.compile(r"\s*<image>\s*")
"""The placeholder with the white space around it, as the text columns drop it."""


def without_image_token(value: str) -> str:
    """A turn's text without the ``<image>`` placeholder and the white space around it; a turn without one is
    kept byte for byte (the Curation-Bench layout carries the image beside the text, not in it)."""
    return IMAGE_TOKEN_SPAN.sub(" ", value).strip() if IMAGE_TOKEN in value else value


def llava_source(image: str | None, first_prompt: str) -> str:
    """The sub-dataset of a LLaVA-mix record, from its image path and its first prompt.

    As the LLaVA-1.5 mix (and Curation-Bench) is organised: the image folder
    names gqa, ocr_vqa, textvqa and vg; COCO images carry VQAv2-style short
    answers (vqa), A-OKVQA multiple choice (aokvqa), RefCOCO region tasks
    (refcoco) or LLaVA-Instruct conversations (llava_instruct); records
    without an image are ShareGPT text. Other image folders give their name.
    """
    if not image:
        return "sharegpt"
    top = image.replace("\\", "/").lstrip("./").split("/", 1)[0].lower()
    if top in LLAVA_PREFIX_SOURCES:
        return LLAVA_PREFIX_SOURCES[top]
    if top == "coco":
        prompt = first_prompt.strip()
        if prompt.endswith(SHORT_ANSWER):
            return "vqa"
        if prompt.endswith(OPTION_LETTER):
            return "aokvqa"
        lowered = prompt.lower()  # the real prompts read "Please provide a short description ..."
        if any(p.lower() in lowered for p in REGION_PROMPTS):
            return "refcoco"
        return "llava_instruct"
    return top if "/" in image else "other"


def _llava_row(rec: Any, where: dict[str, Any], path: Path) -> tuple:
    def fail(message: str) -> PoolError:
        ident = f" (id {rec.get('id')!r})" if isinstance(rec, dict) and "id" in rec else ""
        return PoolError(message + ident, file=path, **where,
                         hint="LLaVA records are {id, image?, conversations: [{from, value}, ...]}")

    if not isinstance(rec, dict):
        raise fail(f"a record must be a JSON object, not {type(rec).__name__}")
    rid = rec.get("id")
    if rid is None or isinstance(rid, bool) or not isinstance(rid, str | int):
        raise fail("a record needs an `id` that is a string or an integer")
    image = rec.get("image")
    if image is not None and not isinstance(image, str):
        raise fail("`image` must be a path string")
    turns = rec.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise fail("a record needs a non-empty `conversations` list")
    texts, n_human, human_chars, gpt_chars, question, answer = [], 0, 0, 0, None, None
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or not isinstance(turn.get("from"), str):
            raise fail(f"conversations[{i}] must be an object with string `from` and `value`")
        role = turn["from"].lower()
        if role not in ROLES:
            raise fail(f"conversations[{i}] is from {turn['from']!r}; expected human or gpt")
        value = IMAGE_TOKEN_SPAN.sub(" ", turn["value"]).strip()
        texts.append(value)
        if role in HUMAN_ROLES:
            n_human += 1
            human_chars += len(value)
            if question is None:
                question = value
        elif role in GPT_ROLES:
            gpt_chars += len(value)
            if answer is None and question is not None:
                answer = value
    if question is None or answer is None:
        raise fail("a record needs a human turn followed by a gpt turn (the question and its answer); "
                   f"this one has {'no gpt turn after a human turn' if question is not None else 'no human turn'}")
    record = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
    return (str(rid), image, image is not None, llava_source(image, question), question, answer, "\n".join(texts),
            n_human, human_chars, gpt_chars, record)


LLAVA_SCHEMA = {
    "id": pl.String, "image": pl.String, "has_image": pl.Boolean, "source": pl.String, "question": pl.String,
    "answer": pl.String, "text": pl.String, "n_turns": pl.Int32, "human_chars": pl.Int64, "gpt_chars": pl.Int64,
    "record": pl.String,
}
"""The columns of a LLaVA pool: ``question`` and ``answer`` are the first human turn and the gpt turn after it
(``<image>`` removed), ``text`` every turn, ``n_turns`` the human turns, ``record`` the record as compact JSON."""


def llava_frame(records: Sequence[tuple[Any, Any]], path: Path, unit: str = "row") -> pl.DataFrame:
    """LLaVA records (``(position, record)`` pairs, as read from ``path``) as a frame of :data:`LLAVA_SCHEMA`;
    a malformed record is a PoolError naming its position and id. The demo instruction pool goes through here
    too, so it has exactly an imported pool's columns.

    Built :data:`FRAME_CHUNK` records at a time: the rows as Python tuples (every text twice, with the record
    as JSON) would otherwise all be held at once beside the parsed records (665K records: GBs)."""
    frames = []
    for start in range(0, len(records), FRAME_CHUNK):
        rows = [_llava_row(rec, {unit: pos}, path) for pos, rec in records[start:start + FRAME_CHUNK]]
        frames.append(pl.DataFrame(rows, schema=LLAVA_SCHEMA, orient="row"))
    if not frames:
        return pl.DataFrame(schema=LLAVA_SCHEMA)
    return pl.concat(frames, rechunk=False) if len(frames) > 1 else frames[0]


FRAME_CHUNK = 32_768
