"""Synthetic image–caption data: shapes with known attributes, and captions of known quality.

Why it exists: the demo pool (``pipelines/data/demo.py``), the held-out evaluation
suite of the ``mini`` backend and the clean training data of its CLIP teacher
all need image–text pairs whose ground truth is known exactly, generated in
seconds on a laptop CPU. Everything here is a pure function of its arguments
and of a ``numpy.random.Generator`` the caller seeds, so a caller that draws in
the same order gets byte-identical output.

An image shows one shape on a grey background with mild pixel noise. It has
five attributes, each stored as a small integer code into :data:`ATTRIBUTES`:

==========  ==============================================================
shape       circle, square, triangle, cross, ring, diamond
color       red, green, blue, yellow, purple, orange, white, black
size        small, large
position    center, top left, top right, bottom left, bottom right
texture     solid, striped, dotted
==========  ==============================================================

Captions come in styles of different quality (:data:`CAPTION_STYLES`):
``coco`` (full and accurate), ``vg`` (accurate, terse), ``cc3m`` (accurate,
some attributes dropped, filler words), ``laion`` (partial, noise words,
hashtags), ``sbu`` (chatty, partial), ``fr`` / ``de`` / ``es`` (full, in
another language) and ``spam`` (advertising text that ignores the image).

Images are encoded to PNG by a small NumPy + zlib writer rather than Pillow:
it writes the same standard files (8-bit RGB, no interlace) three times
faster, which is what keeps 50k rows within seconds. Pillow is used to draw
text into images and, in the tests, to decode every file.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 220, 50),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SIZES = ("small", "large")
POSITIONS = ("center", "top left", "top right", "bottom left", "bottom right")
TEXTURES = ("solid", "striped", "dotted")

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "size": SIZES,
    "position": POSITIONS,
    "texture": TEXTURES,
}
"""Attribute name -> its values; a code is an index into this tuple."""

CAPTION_STYLES = ("coco", "vg", "cc3m", "laion", "sbu", "fr", "de", "es", "spam")
LANGUAGES = ("fr", "de", "es")

IMAGE_SIZE = 32
"""Side of a standard image, in pixels (the demo pool varies around it)."""

RENDERED_WORDS = ("SALE", "50%", "NEW", "FREE", "HOT", "BUY", "TOP", "WOW", "4K", "HD", "LOGO", "DEAL", "OFF", "WIN")
"""Words the rendered-text defect writes into images."""

# Geometry, as fractions of the image: shape centre per position, half-extent per size.
_CENTERS = np.array([(0.5, 0.5), (0.28, 0.28), (0.72, 0.28), (0.28, 0.72), (0.72, 0.72)], dtype=np.float32)
_RADII = np.array([0.15, 0.25], dtype=np.float32)
_PALETTE = np.array(list(COLORS.values()), dtype=np.int16)
_CHUNK = 4096  # images rendered per vectorised batch (bounds peak memory)


def bounding_box(position: int, size: int) -> tuple[float, float, float, float]:
    """The nominal box (x1, y1, x2, y2, fractions of the image) of a shape at ``position`` of ``size`` (codes):
    what a grounding answer names (the drawn shape varies around it by a few percent)."""
    (cx, cy), r = _CENTERS[position].tolist(), float(_RADII[size])
    return (round(cx - r, 2), round(cy - r, 2), round(cx + r, 2), round(cy + r, 2))


def sample_attributes(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw ``n`` attribute sets uniformly and independently: name -> int8 codes into ATTRIBUTES."""
    return {name: rng.integers(0, len(values), size=n).astype(np.int8) for name, values in ATTRIBUTES.items()}


def attribute_names(attrs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Codes -> value names (str arrays), for tables people and tests read."""
    return {name: np.asarray(ATTRIBUTES[name], dtype=object)[np.asarray(codes)] for name, codes in attrs.items()}


def take(attrs: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
    """The attribute sets at ``index`` (an index array or a boolean mask)."""
    return {name: codes[index] for name, codes in attrs.items()}


def render_images(attrs: dict[str, np.ndarray], size: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Draw each attribute set as an image: uint8[n, H, W, 3]; ``size`` is a side or ``(H, W)``.

    Shapes are boolean masks over the pixel grid, computed for a whole batch at
    once per shape kind. Per image, the background grey (dark or light), the
    shape's centre (±3% of the side) and scale (±10%), the texture's phase and
    the noise (-1..+2 grey levels in 2x2 blocks) are random, so two images with the same
    attributes are never identical.
    """
    h, w = (size, size) if isinstance(size, int) else size
    n = len(attrs["shape"])
    side = min(h, w)
    light = rng.random(n) < 0.5
    bg = np.where(light, rng.integers(150, 186, n), rng.integers(60, 96, n)).astype(np.int16)
    center = _CENTERS[attrs["position"]] + rng.uniform(-0.03, 0.03, (n, 2)).astype(np.float32)
    radius = _RADII[attrs["size"]] * rng.uniform(0.9, 1.1, n).astype(np.float32) * side
    period = max(1, side // 16)
    phase = rng.integers(0, 2 * period, (n, 2))
    patterns = _texture_table(h, w, period)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    xs = np.arange(w, dtype=np.float32) + 0.5
    ys = np.arange(h, dtype=np.float32) + 0.5
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        m = sl.stop - sl.start
        hb, wb = (h + 1) // 2, (w + 1) // 2  # noise in 2x2 blocks: mild, and half the PNG size of per-pixel noise
        noise = np.frombuffer(rng.bytes(m * hb * wb), dtype=np.uint8).reshape(m, hb, wb) & 3
        noise = noise.repeat(2, axis=1).repeat(2, axis=2)[:, :h, :w]
        dx = (xs[None, None, :] - center[sl, 0, None, None] * w) / radius[sl, None, None]
        dy = (ys[None, :, None] - center[sl, 1, None, None] * h) / radius[sl, None, None]
        mask = _shape_masks(attrs["shape"][sl], dx, dy)
        pattern = patterns[attrs["texture"][sl], phase[sl, 0], phase[sl, 1]]
        # Each pixel is background, shape colour or shade: one uint8 indicator per kind, summed per channel.
        inner = mask & pattern
        is_shade = inner.view(np.uint8)
        is_color = (mask & ~inner).view(np.uint8)
        color = _PALETTE[attrs["color"][sl]]
        lum = color @ np.array([0.299, 0.587, 0.114])
        shade = np.where(lum[:, None] > 110, color * 0.45, color * 0.5 + 110).astype(np.uint8)
        color = color.astype(np.uint8)
        grey = (bg[sl, None, None] - 1).astype(np.uint8) + noise
        grey *= ~mask
        for c in range(3):
            out[sl, ..., c] = grey + color[:, c, None, None] * is_color + shade[:, c, None, None] * is_shade
    return out


def _shape_masks(shape: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Boolean [n, H, W]: which pixels the shape covers, in units of its half-extent."""
    n, h, w = len(shape), dy.shape[1], dx.shape[2]
    mask = np.zeros((n, h, w), dtype=bool)
    for code, name in enumerate(SHAPES):
        idx = np.flatnonzero(shape == code)
        if idx.size == 0:
            continue
        x, y = dx[idx], dy[idx]
        ax, ay = np.abs(x), np.abs(y)
        if name == "circle":
            m = x * x + y * y <= 1.0
        elif name == "square":
            m = (ax <= 0.85) & (ay <= 0.85)
        elif name == "triangle":
            m = (y >= -0.95) & (y <= 0.8) & (ax <= 0.95 * (y + 0.95) / 1.75)
        elif name == "cross":
            m = ((ax <= 0.3) & (ay <= 0.95)) | ((ay <= 0.3) & (ax <= 0.95))
        elif name == "ring":
            d2 = x * x + y * y
            m = (d2 <= 1.0) & (d2 >= 0.3)
        else:  # diamond
            m = ax + ay <= 1.05
        mask[idx] = m
    return mask


@functools.lru_cache(maxsize=64)
def _texture_table(h: int, w: int, period: int) -> np.ndarray:
    """Boolean [texture, phase x, phase y, H, W]: pixels drawn in the shade colour.

    Striped is diagonal stripes ``period`` pixels wide, dotted a lattice of
    ``period``-pixel dots; solid has none. Tabulated once per image size.
    """
    ph = np.arange(2 * period)
    xs = np.arange(w)[None, None, None, :] + ph[:, None, None, None]
    ys = np.arange(h)[None, None, :, None] + ph[None, :, None, None]
    stripes = ((xs + ys) // period) % 2 == 0
    dots = ((xs // period) % 2 == 0) & ((ys // period) % 2 == 0)
    table = np.zeros((len(TEXTURES), 2 * period, 2 * period, h, w), dtype=bool)
    table[TEXTURES.index("striped")] = stripes
    table[TEXTURES.index("dotted")] = dots
    table.setflags(write=False)
    return table


def blank_images(n: int, size: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Images of one flat random colour each (the "blank" defect): uint8[n, H, W, 3]."""
    h, w = (size, size) if isinstance(size, int) else size
    color = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    return np.broadcast_to(color[:, None, None, :], (n, h, w, 3)).copy()


def jitter_images(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Near-duplicates: each image shifted by one pixel (wrapping) with fresh -1..+1 noise in 2x2 blocks."""
    n, h, w, _ = images.shape
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    pick = rng.integers(0, len(shifts), n)
    noise = rng.integers(-1, 2, size=(n, (h + 1) // 2, (w + 1) // 2, 1), dtype=np.int16)
    noise = noise.repeat(2, axis=1).repeat(2, axis=2)[:, :h, :w]
    out = np.empty_like(images)
    for k, shift in enumerate(shifts):
        idx = np.flatnonzero(pick == k)
        out[idx] = np.roll(images[idx], shift, axis=(1, 2))
    return np.clip(out.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def draw_text(images: np.ndarray, texts: Sequence[str], rng: np.random.Generator | None = None) -> np.ndarray:
    """Write ``texts[i]`` into ``images[i]`` on a banner across the image (the "rendered text" defect).

    Uses Pillow's built-in bitmap font (the same glyphs on every machine),
    scaled up by whole pixels to at most 80% of the image width and 40% of its
    height, on a black or white banner across the image that hides part of
    the shape. With ``rng``, the banner's
    height and colours vary; without it they are fixed.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default_imagefont()
    n, h, w, _ = images.shape
    out = images.copy()
    top = rng.random(n) if rng is not None else np.full(n, 0.3)
    dark = rng.random(n) < 0.5 if rng is not None else np.ones(n, dtype=bool)
    for i, text in enumerate(texts):
        left, upper, right, lower = font.getbbox(text)
        glyphs = Image.new("L", (max(1, right - left), max(1, lower - upper)), 0)
        ImageDraw.Draw(glyphs).text((-left, -upper), text, font=font, fill=255)
        scale = max(1, min(int(0.8 * w) // glyphs.width, int(0.4 * h) // glyphs.height))
        glyphs = glyphs.resize((glyphs.width * scale, glyphs.height * scale), Image.Resampling.NEAREST)
        ink = np.asarray(glyphs)[:h, :w] > 0
        gh, gw = ink.shape
        y0 = int(top[i] * max(0, h - gh - 2))
        x0 = (w - gw) // 2
        fg, bg = (255, 0) if dark[i] else (0, 255)
        out[i, max(0, y0 - 1) : y0 + gh + 1, :] = bg
        region = out[i, y0 : y0 + gh, x0 : x0 + gw]
        region[ink] = fg
    return out


# ---------------------------------------------------------------- PNG


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def _encode_batch(images: np.ndarray) -> list[bytes]:
    n, h, w, _ = images.shape
    raw = np.zeros((n, h, 1 + 3 * w), dtype=np.uint8)  # filter byte 0 (None) on every scanline
    raw[:, :, 1:] = images.reshape(n, h, 3 * w)
    head = _PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    return [head + _png_chunk(b"IDAT", zlib.compress(r.tobytes(), 1)) + _PNG_END for r in raw]


def encode_png(images: np.ndarray, *, threads: int = 2) -> list[bytes]:
    """Encode uint8[n, H, W, 3] images as PNG files (RGB, 8 bits, zlib level 1).

    The output depends only on the pixels and the zlib build, never on
    ``threads`` (zlib releases the GIL, so two threads nearly halve the time).
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if len(images) < 2 * _CHUNK or threads <= 1:
        return _encode_batch(images)
    parts = [images[i : i + _CHUNK] for i in range(0, len(images), _CHUNK)]
    with ThreadPoolExecutor(threads) as pool:
        return [png for batch in pool.map(_encode_batch, parts) for png in batch]


def decode_png(data: bytes) -> np.ndarray:
    """A PNG file -> uint8[H, W, 3] (Pillow), for tests and consumers of the pool."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


# ---------------------------------------------------------------- captions

_POSITION_PHRASE = {
    "center": "in the center",
    "top left": "in the top left corner",
    "top right": "in the top right corner",
    "bottom left": "in the bottom left corner",
    "bottom right": "in the bottom right corner",
}
_COCO = (
    "a {size} {color} {texture} {shape} {pos}",
    "there is a {size} {color} {texture} {shape} {pos}",
    "an image of a {size} {color} {texture} {shape} {pos}",
    "a {texture} {shape}, {size} and {color}, {pos}",
)
_CC3M_PREFIX = ("photo of a", "picture of a", "illustration of a", "stock image of a", "vector illustration of a")
_CC3M_SUFFIX = ("", "", " on a grey background", " isolated", ", stock photo")
_LAION_NOISE = (
    "vector", "icon", "wallpaper", "hd", "4k", "free", "download", "png", "clipart", "abstract",
    "design", "logo", "background", "template", "stock", "art", "minimal", "aesthetic", "print", "poster",
)  # fmt: skip
_LAION_TAGS = ("#art", "#design", "#minimal", "#shapes", "#aesthetic", "#graphic", "#vector", "#geometry")
_SBU = (
    "i saw this {desc} today",
    "my little sister drew a {desc} on the wall",
    "look at the {desc} {pos}",
    "not sure what this {desc} is but i like it",
    "the {desc} was the best part of the day",
    "{desc} on my way home",
    "found a {desc} at the market this morning",
)
_SBU_THING = ("thing", "shape", "object", "sign")
_SYNONYMS = {"small": "little", "large": "big"}

_SPAM_PIECES = (
    "click here to buy now", "best price", "free shipping", "limited offer", "win a free iphone",
    "cheap deals", "order today", "call now", "100% free", "act fast", "lowest prices guaranteed",
    "subscribe for more", "visit our store", "discount code inside", "best seller",
)  # fmt: skip
_SPAM_URLS = ("www.best-deals-24.com", "http://cheap-store.biz", "bit.ly/3xDeal", "www.freeprize.net", "shop-now.info")
_SPAM_REPEAT = ("sale", "buy", "cheap", "free", "deal", "wow")

# Word tables for the other languages: (word, gender) per shape; (masculine, feminine) forms per adjective.
_FR = {
    "shape": {"circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
              "cross": ("croix", "f"), "ring": ("anneau", "m"), "diamond": ("losange", "m")},
    "color": {"red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
              "yellow": ("jaune", "jaune"), "purple": ("violet", "violette"), "orange": ("orangé", "orangée"),
              "white": ("blanc", "blanche"), "black": ("noir", "noire")},
    "size": {"small": ("petit", "petite"), "large": ("grand", "grande")},
    "texture": {"solid": ("uni", "unie"), "striped": ("rayé", "rayée"), "dotted": ("à pois", "à pois")},
    "position": {"center": "au centre", "top left": "en haut à gauche", "top right": "en haut à droite",
                 "bottom left": "en bas à gauche", "bottom right": "en bas à droite"},
}  # fmt: skip
_ES = {
    "shape": {"circle": ("círculo", "m"), "square": ("cuadrado", "m"), "triangle": ("triángulo", "m"),
              "cross": ("cruz", "f"), "ring": ("anillo", "m"), "diamond": ("rombo", "m")},
    "color": {"red": ("rojo", "roja"), "green": ("verde", "verde"), "blue": ("azul", "azul"),
              "yellow": ("amarillo", "amarilla"), "purple": ("morado", "morada"), "orange": ("naranja", "naranja"),
              "white": ("blanco", "blanca"), "black": ("negro", "negra")},
    "size": {"small": ("pequeño", "pequeña"), "large": ("grande", "grande")},
    "texture": {"solid": ("liso", "lisa"), "striped": ("a rayas", "a rayas"), "dotted": ("a lunares", "a lunares")},
    "position": {"center": "en el centro", "top left": "arriba a la izquierda", "top right": "arriba a la derecha",
                 "bottom left": "abajo a la izquierda", "bottom right": "abajo a la derecha"},
}  # fmt: skip
_DE = {
    "shape": {"circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
              "cross": ("Kreuz", "n"), "ring": ("Ring", "m"), "diamond": ("Raute", "f")},
    "color": {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett",
              "orange": "orangefarben", "white": "weiß", "black": "schwarz"},
    "size": {"small": "klein", "large": "groß"},
    "texture": {"solid": "einfarbig", "striped": "gestreift", "dotted": "gepunktet"},
    "position": {"center": "in der Mitte", "top left": "oben links", "top right": "oben rechts",
                 "bottom left": "unten links", "bottom right": "unten rechts"},
}  # fmt: skip
_DE_ENDING = {"m": ("ein", "er"), "n": ("ein", "es"), "f": ("eine", "e")}

_AN = re.compile(r"\b([Aa]) (?=[aeiou])")


def caption(attrs: dict[str, np.ndarray], style: str, rng: np.random.Generator) -> list[str]:
    """One caption per attribute set, in ``style`` (see CAPTION_STYLES and the module docstring).

    Accurate styles describe the given attributes; partial ones drop some but
    never name a wrong one, and every style names the shape or the colour;
    ``spam`` ignores them. A mismatched caption is
    made by the caller, by captioning other attributes.

    The random draws are made for all rows at once (a matrix of uniforms and
    one of permutations), so the per-row work is string building only.
    """
    if style not in CAPTION_STYLES:
        raise ValueError(f"unknown caption style {style!r}; expected one of {', '.join(CAPTION_STYLES)}")
    n = len(attrs["shape"])
    names = [attribute_names(attrs)[k].tolist() for k in ATTRIBUTES]
    uniforms = rng.random((n, _N_UNIFORMS)).tolist()
    perms = np.argsort(rng.random((n, _N_PERM)), axis=1).tolist()
    make = _STYLE_FUNCS[style]
    return [make(dict(zip(ATTRIBUTES, row)), u, perm) for row, u, perm in zip(zip(*names), uniforms, perms)]


_N_UNIFORMS = 16
_N_PERM = 20


def _pick(options: Sequence[str], u: float) -> str:
    return options[int(u * len(options))]


def _coco(a: dict[str, str], u: list[float], perm: list[int]) -> str:
    return _pick(_COCO, u[0]).format(pos=_POSITION_PHRASE[a["position"]], **a)


def _vg(a: dict[str, str], u: list[float], perm: list[int]) -> str:
    forms = (
        (a["color"], a["shape"]),
        (a["size"], a["color"], a["shape"]),
        (a["texture"], a["shape"]),
        (a["color"], a["texture"], a["shape"]),
        (a["shape"], a["position"]),
    )
    return " ".join(forms[int(u[0] * len(forms))])


def _cc3m(a: dict[str, str], u: list[float], perm: list[int]) -> str:
    keep = [x < p for x, p in zip(u, (0.6, 0.6, 0.6, 0.75, 0.5))]  # size, color, texture, shape, position
    if not keep[1] and not keep[3]:
        keep[3 if u[8] < 0.5 else 1] = True  # always name the shape or the colour
    words = [a[k] for k, kept in zip(("size", "color", "texture"), keep) if kept]
    words.append(a["shape"] if keep[3] else _pick(("shape", "object", "figure"), u[5]))
    text = f"{_pick(_CC3M_PREFIX, u[6])} {' '.join(words)}"
    if keep[4]:
        text += f", {a['position']}"
    text += _pick(_CC3M_SUFFIX, u[7])
    return _AN.sub(r"\1n ", text)


def _laion(a: dict[str, str], u: list[float], perm: list[int]) -> str:
    keep = [x < p for x, p in zip(u, (0.4, 0.6, 0.3, 0.6, 0.2))]  # size, color, texture, shape, position
    if not keep[1] and not keep[3]:
        keep[3 if u[5] < 0.5 else 1] = True  # always name the shape or the colour
    words = [a[k] for k, kept in zip(("size", "color", "texture", "shape", "position"), keep) if kept]
    if keep[0] and u[6] < 0.5:
        words[0] = _SYNONYMS[words[0]]
    for j, i in enumerate(perm[: 2 + int(u[7] * 3)]):  # 2-4 noise words at random places
        words.insert(int(u[8 + j % 3] * (len(words) + 1)), _LAION_NOISE[i])
    words += [_LAION_TAGS[i] for i in reversed(perm) if i < len(_LAION_TAGS)][: int(u[11] * 4)]
    text = " ".join(words)
    return text.title() if u[12] < 0.3 else text


def _sbu(a: dict[str, str], u: list[float], perm: list[int]) -> str:
    keep = [x < p for x, p in zip(u, (0.4, 0.6, 0.3, 0.7))]  # size, color, texture, shape
    if not keep[1] and not keep[3]:
        keep[3 if u[6] < 0.5 else 1] = True  # always name the shape or the colour
    words = [_SYNONYMS.get(a[k], a[k]) for k, kept in zip(("size", "color", "texture"), keep) if kept]
    words.append(a["shape"] if keep[3] else _pick(_SBU_THING, u[4]))
    pos = "in the middle" if a["position"] == "center" else f"in the {a['position']} corner"
    return _AN.sub(r"\1n ", _pick(_SBU, u[5]).format(desc=" ".join(words), pos=pos))


def _fr(a: dict[str, str], u: list[float], perm: list[int]) -> str:
    noun, gender = _FR["shape"][a["shape"]]
    g = 0 if gender == "m" else 1
    return (
        f"{('un', 'une')[g]} {_FR['size'][a['size']][g]} {noun} {_FR['color'][a['color']][g]} "
        f"{_FR['texture'][a['texture']][g]} {_FR['position'][a['position']]}"
    )


def _es(a: dict[str, str], u: list[float], perm: list[int]) -> str:
    noun, gender = _ES["shape"][a["shape"]]
    g = 0 if gender == "m" else 1
    return (
        f"{('un', 'una')[g]} {noun} {_ES['color'][a['color']][g]} {_ES['size'][a['size']][g]} "
        f"{_ES['texture'][a['texture']][g]} {_ES['position'][a['position']]}"
    )


def _de(a: dict[str, str], u: list[float], perm: list[int]) -> str:
    noun, gender = _DE["shape"][a["shape"]]
    article, ending = _DE_ENDING[gender]
    adjectives = " ".join(_DE[k][a[k]] + ending for k in ("size", "color", "texture"))
    return f"{article} {adjectives} {noun} {_DE['position'][a['position']]}"


def _spam(a: dict[str, str], u: list[float], perm: list[int]) -> str:
    pieces = [_SPAM_PIECES[i] for i in perm if i < len(_SPAM_PIECES)][: 2 + int(u[0] * 2)]
    if u[1] < 0.5:
        pieces.insert(int(u[2] * (len(pieces) + 1)), _pick(_SPAM_URLS, u[3]))
    if u[4] < 0.4:
        pieces.append(" ".join([_pick(_SPAM_REPEAT, u[5])] * (3 + int(u[6] * 4))))
    text = " ".join(pieces)
    return text.upper() + "!!!" if u[7] < 0.25 else text


_STYLE_FUNCS = {
    "coco": _coco,
    "vg": _vg,
    "cc3m": _cc3m,
    "laion": _laion,
    "sbu": _sbu,
    "fr": _fr,
    "de": _de,
    "es": _es,
    "spam": _spam,
}

_PERTURB = {
    "a": "one", "large": "big", "small": "little", "big": "large", "little": "small", "in": "at",
    "photo": "picture", "picture": "photo", "image": "picture", "illustration": "drawing", "the": "this",
    "center": "middle", "corner": "area", "there": "here", "this": "that",
}  # fmt: skip
_PERTURB_APPEND = ("photo", "image", "picture", "pic")


def perturb_caption(texts: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Near-duplicate captions: each text with exactly one word replaced (or one word appended)."""
    out = []
    for text, u in zip(texts, rng.random(len(texts)).tolist()):
        words = text.split(" ")
        candidates = [i for i, word in enumerate(words) if word in _PERTURB]
        if candidates:
            i = candidates[int(u * len(candidates))]
            words[i] = _PERTURB[words[i]]
        else:
            words.append(_pick(_PERTURB_APPEND, u))
        out.append(" ".join(words))
    return out
