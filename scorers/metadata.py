"""Metadata scorers: cheap, row-local measurements of text and images.

Text length ``len(x)`` and word count ``words(x)`` (Python's or fastText's split); image ``width``,
``height``, ``area`` and ``aspect_ratio``. An image column holds the encoded
bytes; when the pool also has ``width`` and ``height`` columns (DataComp's
metadata does), the image scorers read those instead of the bytes.
``source`` is a column of the pool, not a scorer.
"""

from __future__ import annotations

import struct
from typing import Literal

from pydantic import Field

from cbdsl.compiler.text_classes import FASTTEXT_SPACE, PY_SPACE
from cbdsl.scorers.registry import Input, LowerContext, Params, scorer


@scorer("len", inputs=[Input("x", "sized")], output="int")
def length(ctx: LowerContext, x):
    """Length of a text in characters, or of a list in items."""
    t = ctx.arg_types[0] if ctx.arg_types else None
    if t is not None and t.name == "list":
        return x.list.len()
    return x.str.len_chars()


class WordsParams(Params):
    split: Literal["whitespace", "fasttext"] = Field(
        default="whitespace",
        description='"whitespace": Python\'s `len(text.split())` (DataComp\'s basic filter); '
                    '"fasttext": `len(fasttext.tokenize(text))` (DataComp\'s image-based caption filter), '
                    "where each newline is a token of its own",
    )


@scorer("words", inputs=[Input("text", "str")], params=WordsParams, output="int")
def words(ctx: LowerContext, text):
    """Number of words of a text: Python's `len(text.split())`, or fastText's token count."""
    if ctx.params.split == "fasttext":  # every run of non-separators, plus the end-of-line token per newline
        return text.str.count_matches(f"[^{FASTTEXT_SPACE}]+") + text.str.count_matches("\n")
    return text.str.count_matches(f"[^{PY_SPACE}]+")


@scorer("width", inputs=[Input("image", "image")], output="int")
def width(ctx: LowerContext, image):
    """Image width in pixels (null when the bytes are not a PNG, JPEG, GIF, BMP or WebP image)."""
    return image_dimensions(ctx, image)[0]


@scorer("height", inputs=[Input("image", "image")], output="int")
def height(ctx: LowerContext, image):
    """Image height in pixels."""
    return image_dimensions(ctx, image)[1]


@scorer("area", inputs=[Input("image", "image")], output="int")
def area(ctx: LowerContext, image):
    """Image area in pixels (width times height)."""
    w, h = image_dimensions(ctx, image)
    return w * h


@scorer("aspect_ratio", inputs=[Input("image", "image")], output="float")
def aspect_ratio(ctx: LowerContext, image):
    """Long side over short side (at least 1; DataComp's basic filter keeps <= 3)."""
    import polars as pl

    w, h = image_dimensions(ctx, image)
    w, h = w.cast(pl.Float64), h.cast(pl.Float64)
    return pl.max_horizontal(w, h) / pl.min_horizontal(w, h)


def image_dimensions(ctx: LowerContext, image):
    """(width, height) expressions: the pool's columns when it has them, else read from the bytes."""
    import polars as pl

    if "width" in ctx.schema and "height" in ctx.schema:
        return pl.col("width"), pl.col("height")
    sizes = image.map_batches(
        _decode_sizes, return_dtype=pl.Struct({"width": pl.Int64, "height": pl.Int64})
    )
    return sizes.struct.field("width"), sizes.struct.field("height")


def _decode_sizes(series):
    # Header parsing needs a byte scan per image (JPEG markers), which Polars
    # expressions cannot do; the compiler issue may move this into a kernel.
    import polars as pl

    rows = [image_size(b) if b is not None else None for b in series.to_list()]
    return pl.Series(
        [{"width": r[0], "height": r[1]} if r else {"width": None, "height": None} for r in rows],
        dtype=pl.Struct({"width": pl.Int64, "height": pl.Int64}),
    )


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, or None if it is not recognised."""
    n = len(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and n >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and n >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and n >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and n >= 30:
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        b0, b1, b2, b3 = data[21:25]
        return 1 + (((b1 & 0x3F) << 8) | b0), 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6))
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 3 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker == 0xD9:
            return None
        if i + 4 > n:
            return None
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _SOF and i + 9 <= n:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None
