"""A synthetic DataComp-small metadata pool: 12.8M rows, DataComp's schema, realistic values.

The pool looks like one that ``cbdsl pool import datacomp`` made from
DataComp's metadata parquet (see ``cbdsl.pipelines.data.importers.read_datacomp``):
the columns, in that order, are

    id                         = uid (the pool's id column)
    uid                        32 lowercase hex characters (a 128-bit hash)
    url                        http(s)://domain/path/file.ext
    text                       the caption (alt text)
    original_width/_height     Int64 pixels
    clip_b32_similarity_score  Float32, ~N(0.27, 0.045), rounded to 1e-4 (many ties)
    clip_l14_similarity_score  Float32, ~N(0.25, 0.05), rounded to 1e-4, correlated with B/32
    sha256                     64 lowercase hex characters
    width, height              aliases of original_width/_height (as the importer adds)

``face_bboxes`` is left out (no policy here reads it).

Distributions, chosen to exercise what DataComp's basic filter tests:

- captions: 0.5% empty or whitespace-only, 6% one word (a third of them
  file names such as ``IMG_20190312_142355.jpg``), 6% two words, 70% 3 to 15
  words, the rest a long tail (16 to a few hundred words, SEO spam);
  words follow a Zipf law over a vocabulary of common alt-text words plus
  ~40k generated ones; ~8% European non-English (accents), ~4% CJK (often
  without spaces, sometimes with U+3000), ~2% Cyrillic, ~1% Arabic; numbers,
  separators (``|``, ``-``) and a few emoji. Words are separated by a space,
  sometimes by two spaces, NO-BREAK SPACE (U+00A0), a tab or a newline; ~3%
  of the captions have leading or trailing whitespace. Every whitespace used is
  whitespace both for Python's ``str.split()`` and for Rust's regex ``\\s``
  (Unicode White_Space), so cbdsl's ``words()`` equals ``len(text.split())``
  on every caption. (They differ only on U+001C..U+001F, which Python splits
  on and Unicode does not call white space; the generator never writes them.)
- sizes: ~30% small images (shorter side < 200 px), ~55% common sizes
  (256..2048 on the long side with common aspect ratios, 3:1 included, so the
  ``aspect <= 3`` bound has exact ties), ~12% log-normal, ~3% extreme aspect
  ratios (banners 728x90, skyscrapers 160x600, ...).
- CLIP scores: see above; the L/14 threshold for the top 30% sits in a
  rounding bucket shared by thousands of rows, so ties at the threshold matter.

Generation is vectorised (NumPy + Arrow compute kernels, no Python loop per
row) and streams shards, one per thread and a thread per core; the card is
then computed column by column from the written shards with cbdsl's own
``column_stats``. Memory is two shards in flight, then one column: 12.8M rows
take 63 s and 2.7 GB at peak on 2 idle cores. The same seed gives the same
pool byte for byte (the same content hash), and the result is a valid pool
(``Pool.open`` reads it, ``cbdsl pool info`` shows it); for one shard it is
exactly what ``write_pool`` writes for the same frame.

    python tests/benchmarks/datacomp_pool.py DEST [--rows 12800000] [--shards N] [--seed 0] [--overwrite]

``make_pool`` reuses an existing pool at DEST when it was made with the same
generator version, rows, shards and seed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

try:
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError as err:  # not a dependency of cbdsl: the `bench` extra installs it
    raise SystemExit(f"{err}: the benchmarks need cbdsl's `bench` extra: "
                     '.venv/bin/python -m pip install -e ".[bench]"') from None

GENERATOR = "tests/benchmarks/datacomp_pool.py"
GENERATOR_VERSION = 1
SHARD_ROWS = 1_000_000  # write_pool's default shard size
DATACOMP_SMALL_ROWS = 12_800_000

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_LS = pa.large_string()

# --------------------------------------------------------------------------- vocabularies

_EN_CORE = """
the a of and in with for on to at by from is this an or your new my our as are it all
photo image picture stock vector illustration background free download hd wallpaper view
black white red blue green gray grey brown pink yellow orange purple gold silver dark light
set of two three one 2 3 4 5 10 large small big little old vintage modern classic design
woman man women men girl boy child kids baby family people person couple young happy smiling
dog cat horse bird fish flower tree trees garden house home room kitchen bedroom bathroom
living interior exterior building city street road car cars bike train plane boat beach sea
ocean lake river mountain mountains forest park sky sunset sunrise night day winter summer
spring autumn fall snow rain water fire wood wooden stone glass metal steel leather cotton
dress shirt shoes jacket bag hat ring necklace earrings watch jewelry fashion style wedding
party christmas birthday holiday travel hotel restaurant food cake coffee tea wine beer
pizza chicken salad chocolate fruit apple sale buy online shop store price best top quality
cheap luxury premium original official logo icon pattern texture art painting drawing print
poster card book cover page map diagram chart table chair sofa bed lamp door window wall
floor tile rug curtain table office desk computer laptop phone iphone samsung screen tv
camera video game games toy toys sport sports football soccer basketball golf tennis team
player ball running fitness yoga health beauty hair face hands eyes skin body care makeup
men's women's kid's size color colors inch cm mm x vs how what why when where best top
free shipping hand made handmade custom personalized gift gifts ideas idea diy easy simple
with without inside outside under over near front back side left right up down out off into
"""

_EU = """
le la les des du de et en un une pour avec sur dans est au aux maison été très belle jolie
chaussures robe femme homme enfant noir blanc rouge bleu vert cuisine chambre salle voyage
der die das und mit für von auf im ist ein eine zum zur größe schöne weiß schwarz rot blau
grün küche straße haus garten frau mann kinder kleid schuhe geschenk günstig kaufen
el la los las del con por para una uno más año niño niña mujer hombre casa cocina baño
vestido zapatos rojo azul verde blanco negro fotografía diseño pequeño grande
il lo gli della delle con per una più città bambino donna uomo casa cucina bagno bianco
nero rosso azzurro verde scarpe vestito regalo
o os as do da dos das com para uma não são ção coração mulher homem criança vermelho
"""

_CYR = """
и в на с по для из от не это как фото картинка дом кухня женщина мужчина ребенок платье
обувь красный синий зеленый белый черный купить цена доставка новый большой маленький
красивый город улица море лес горы зима лето весна осень праздник подарок семья кошка собака
"""

_AR = """
في من على إلى مع هذا صورة منزل امرأة رجل طفل فستان أحمر أزرق أخضر أبيض أسود شراء سعر جديد
كبير صغير جميل مدينة بحر
"""

_CJK_CHARS = (
    "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里"
    "后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两"
    "长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最"
    "猫狗花树山水海风雪雨春夏秋冬红蓝绿白黑金银衣服鞋包帽女装男装儿童婚纱照片图片壁纸高清风景美食蛋糕咖啡茶酒"
    "の は を に が で と た し て ア イ ウ エ オ カ キ ク ケ コ サ シ ス セ ソ タ チ ツ テ ト ナ ニ ヌ ネ ノ "
    "写真画像素材無料可愛いおしゃれ春夏秋冬猫犬花東京大阪京都日本"
).replace(" ", "")

_SYMBOLS = ["-", "|", "&", "/", ":", "–", "•", "...", "(1)", "(2)", "#1", "@", "+", "!", "?", "™", "®"]
_EMOJI = ["😀", "😍", "❤️", "🔥", "✨", "👍", "🎄", "🌸", "⭐", "💕", "🐶", "🍕"]
_EXTS = [".jpg", ".jpg", ".jpg", ".jpeg", ".png", ".png", ".webp", ".gif", ".JPG", ""]


def _words(text: str) -> list[str]:
    return list(dict.fromkeys(text.split()))


def _zipf_cdf(n: int, s: float = 1.05, q: float = 2.7) -> np.ndarray:
    w = 1.0 / (np.arange(n, dtype=np.float64) + q) ** s
    c = np.cumsum(w)
    return c / c[-1]


def _pseudo_words(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct pronounceable words (brand names, rare words), 2..12 letters."""
    onsets = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
              "br", "ch", "cl", "cr", "dr", "fl", "fr", "gr", "pl", "pr", "sh", "sk", "sl", "sp", "st", "str",
              "th", "tr", "", ""]
    vowels = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "ee", "ie", "oo", "ou", "y"]
    codas = ["", "", "", "n", "r", "s", "t", "l", "m", "ng", "ck", "rt", "st", "x", "nd"]
    out: dict[str, None] = {}
    while len(out) < n:
        m = 2 * (n - len(out))
        syll = rng.integers(1, 4, size=m)
        parts = []
        for k in range(3):
            o = np.array(onsets, dtype=object)[rng.integers(0, len(onsets), m)]
            v = np.array(vowels, dtype=object)[rng.integers(0, len(vowels), m)]
            c = np.array(codas, dtype=object)[rng.integers(0, len(codas), m)]
            parts.append(np.where(syll > k, o + v + c, ""))
        for w in parts[0] + parts[1] + parts[2]:
            if 2 <= len(w) <= 12:
                out.setdefault(w, None)
    return list(out)[:n]


_TABLE_BITS = 18  # inverse-CDF lookup tables of 2**18 entries per token class


class _Vocab:
    """Every token the captions use, in one Arrow array, with a Zipf sampling table per token class.

    Sampling is a table lookup (the inverse CDF quantised to 2**18 steps), so
    drawing ten million tokens costs one fancy index, not a binary search each.
    """

    CLASSES = ("en", "en_title", "rare", "rare_title", "eu", "eu_title", "cyr", "ar", "cjk", "num", "sym",
               "emoji", "file")

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 10_000_019])
        en = _words(_EN_CORE)
        seen = set(en)
        rare = [w for w in _pseudo_words(rng, 40_000) if w not in seen]
        eu = _words(_EU)
        chars = np.array(list(dict.fromkeys(_CJK_CHARS)), dtype=object)
        cjk = list(dict.fromkeys("".join(chars[rng.integers(0, len(chars), k)]) for k in rng.integers(2, 7, 8000)))
        numbers = [str(i) for i in range(0, 101)] + [str(y) for y in range(1950, 2024)] + [
            "1920x1080", "1080p", "4k", "4K", "HD", "3D", "2x", "x2", "100%", "$19.99", "50%", "no.1", "v2"]
        files = []
        for prefix, digits in (("IMG_", 4), ("DSC", 5), ("DSC_", 4), ("P", 7), ("Screenshot_", 8), ("", 6)):
            num = rng.integers(0, 10 ** digits, size=2500)
            ext = np.array(_EXTS, dtype=object)[rng.integers(0, len(_EXTS), size=2500)]
            files += [f"{prefix}{n:0{digits}d}{e}" for n, e in zip(num, ext)]
        files = ["untitled", "image", "photo", "img", "thumbnail", "logo", "banner", "Home", "default", "1"] + files
        files = list(dict.fromkeys(files))

        def title(words):
            return [w[:1].upper() + w[1:] for w in words]

        words = {"en": en, "en_title": title(en), "rare": rare, "rare_title": title(rare), "eu": eu,
                 "eu_title": title(eu), "cyr": _words(_CYR), "ar": _words(_AR), "cjk": cjk, "num": numbers,
                 "sym": _SYMBOLS, "emoji": _EMOJI, "file": files}
        tokens: list[str] = []
        tables = []
        steps = (np.arange(1 << _TABLE_BITS, dtype=np.float64) + 0.5) / (1 << _TABLE_BITS)
        for name in self.CLASSES:
            w = words[name]
            cdf = _zipf_cdf(len(w), s=1.0 if name in ("num", "file", "cjk", "rare", "rare_title") else 1.07)
            idx = np.minimum(np.searchsorted(cdf, steps, side="right"), len(w) - 1)
            tables.append((idx + len(tokens)).astype(np.int32))
            tokens += w
        self.table = np.stack(tables)  # (classes, 2**18) -> token index
        self.tokens = pa.array(tokens, _LS)
        self.size = len(tokens)
        self.cls = {name: i for i, name in enumerate(self.CLASSES)}

    def sample(self, rng: np.random.Generator, cls: np.ndarray) -> np.ndarray:
        """One token index per entry of ``cls`` (class numbers), Zipf-distributed within its class."""
        return self.table[cls, rng.integers(0, 1 << _TABLE_BITS, size=cls.shape[0])]


# --------------------------------------------------------------------------- columns


def _hex_column(rng: np.random.Generator, n: int, nbytes: int) -> pa.Array:
    """n random lowercase hex strings of 2*nbytes characters, built in place (no Python loop)."""
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    out = np.empty((n, 2 * nbytes), dtype=np.uint8)
    out[:, 0::2] = _HEX[raw >> 4]
    out[:, 1::2] = _HEX[raw & 15]
    offsets = np.arange(n + 1, dtype=np.int64) * (2 * nbytes)
    return pa.Array.from_buffers(_LS, n, [None, pa.py_buffer(offsets), pa.py_buffer(out.reshape(-1))])


def _choice(rng: np.random.Generator, n: int, weights: dict[str, float]) -> np.ndarray:
    names = list(weights)
    p = np.array([weights[k] for k in names], dtype=np.float64)
    return rng.choice(len(names), size=n, p=p / p.sum())


LANGS = {"en": 0.85, "eu": 0.08, "cjk": 0.04, "cyr": 0.02, "ar": 0.01}


def _strings(values: list[str], index: np.ndarray) -> pa.Array:
    return pa.array(values, _LS).take(pa.array(index))


def _captions(rng: np.random.Generator, n: int, vocab: _Vocab) -> pa.Array:
    C = vocab.cls
    lang = _choice(rng, n, LANGS)  # index into LANGS
    # word counts: a mixture (see the module docstring)
    kind = _choice(rng, n, {"empty": 0.005, "one": 0.06, "two": 0.06, "mid": 0.70, "long": 0.17, "spam": 0.005})
    k = np.zeros(n, dtype=np.int64)  # kind 0: empty or whitespace-only
    k[kind == 1] = 1
    k[kind == 2] = 2
    mid = kind == 3
    k[mid] = np.clip(np.rint(rng.lognormal(math.log(7.0), 0.45, size=int(mid.sum()))), 3, 15)
    long_ = kind == 4
    k[long_] = 16 + np.minimum(rng.geometric(1 / 10, size=int(long_.sum())) - 1, 150)
    spam = kind == 5
    k[spam] = rng.integers(60, 400, size=int(spam.sum()))

    total = int(k.sum())
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(k, out=offsets[1:])
    row = np.repeat(np.arange(n, dtype=np.int32), k)
    first = np.zeros(total, dtype=bool)
    first[offsets[:-1][k > 0]] = True

    # the token class of every token: the row's language, then overrides
    en, eu, cjk_l, cyr, ar = range(5)
    lang_cls = np.array([C["en"], C["eu"], C["cjk"], C["cyr"], C["ar"]], dtype=np.int8)
    cls = lang_cls[lang][row]
    u = rng.random(total, dtype=np.float32)
    v = rng.random(total, dtype=np.float32)
    is_en = cls == C["en"]
    cls[is_en & (v < 0.2)] = C["rare"]  # brand names and rare words
    cls[(cls == C["eu"]) & (v < 0.15)] = C["en"]  # English words in European captions
    titled = (cls == C["en"]) | (cls == C["rare"]) | (cls == C["eu"])
    cls[titled & (u < np.where(first, 0.55, 0.18))] += 1  # X_title follows X in CLASSES
    not_cjk = lang[row] != cjk_l
    cls[(u >= 0.90) & (u < 0.95) & not_cjk] = C["num"]
    cls[(u >= 0.95) & (u < 0.975) & not_cjk & ~first] = C["sym"]
    cls[(u >= 0.975) & (u < 0.978) & ~first] = C["emoji"]
    one_file = (k == 1) & (rng.random(n) < 0.33)  # a third of the one-word captions are file names
    cls[offsets[:-1][one_file]] = C["file"]
    tok = vocab.sample(rng, cls)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), vocab.tokens.take(pa.array(tok)))

    seps = [" ", "  ", "\u00a0", "\t", "\n", " \n", ", ", "", "\u3000"]
    sep = _choice(rng, n, {" ": 0.955, "  ": 0.015, "nbsp": 0.012, "tab": 0.004, "nl": 0.003, "sp-nl": 0.003,
                           ", ": 0.008})
    cjk_sep = np.array([7, 0, 8])[_choice(rng, n, {"none": 0.6, "space": 0.25, "ideographic": 0.15})]
    sep = np.where(lang == cjk_l, cjk_sep, sep)
    text = pc.binary_join(lists, _strings(seps, sep))

    pads = ["", " ", "  ", "\n", "\t", "   "]
    weights = {"": 0.985, " ": 0.01, "  ": 0.002, "nl": 0.002, "tab": 0.001}
    lead = _choice(rng, n, weights)
    trail = _choice(rng, n, weights)
    lead[(kind == 0) & (rng.random(n) < 0.3)] = 5  # whitespace-only captions: no words, some characters
    return pc.binary_join_element_wise(_strings(pads, lead), text, _strings(pads, trail), pa.scalar("", _LS))


_LONG_SIDES = np.array([256, 300, 320, 400, 450, 480, 500, 512, 540, 600, 640, 700, 720, 750, 768, 800, 850, 900,
                        960, 1000, 1024, 1080, 1200, 1280, 1500, 1600, 1920, 2048])
_LONG_P = np.array([3, 5, 3, 6, 4, 5, 7, 4, 2, 8, 6, 3, 3, 4, 3, 8, 2, 4, 3, 6, 6, 3, 5, 4, 3, 2, 3, 2], dtype=float)
_RATIOS = np.array([1.0, 4 / 3, 3 / 2, 16 / 9, 5 / 4, 2.0, 3.0, 1.0 / (4 / 3), 1 / 1.5, 9 / 16, 0.8, 1 / 3])
_RATIO_P = np.array([20, 20, 17, 10, 5, 3, 1.5, 9, 8, 3, 3, 0.5], dtype=float)
_BANNERS = np.array([[728, 90], [468, 60], [160, 600], [120, 600], [300, 1050], [970, 250], [1200, 300],
                     [1500, 500], [900, 300], [600, 200], [2000, 400], [250, 1000]])


def _sizes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    kind = _choice(rng, n, {"small": 0.30, "common": 0.55, "lognormal": 0.12, "banner": 0.03})
    w = np.empty(n, dtype=np.int64)
    h = np.empty(n, dtype=np.int64)
    # small: thumbnails and icons, shorter side < 200, any aspect
    s = kind == 0
    m = int(s.sum())
    short = np.rint(np.exp(rng.uniform(math.log(16), math.log(200), m))).astype(np.int64)
    short = np.minimum(short, 199)
    long_ = np.rint(short * rng.choice([1.0, 1.0, 1.25, 1.333, 1.5, 1.778, 2.0, 3.5], m)).astype(np.int64)
    flip = rng.random(m) < 0.6
    w[s], h[s] = np.where(flip, long_, short), np.where(flip, short, long_)
    # common sizes: a standard long side and a standard ratio
    c = kind == 1
    m = int(c.sum())
    side = _LONG_SIDES[rng.choice(len(_LONG_SIDES), m, p=_LONG_P / _LONG_P.sum())]
    ratio = _RATIOS[rng.choice(len(_RATIOS), m, p=_RATIO_P / _RATIO_P.sum())]
    landscape = ratio >= 1
    other = np.rint(np.where(landscape, side / ratio, side * ratio)).astype(np.int64)
    w[c] = side
    h[c] = other
    w[c] = np.where(landscape, side, other)
    h[c] = np.where(landscape, other, side)
    # log-normal: arbitrary sizes
    g = kind == 2
    m = int(g.sum())
    area = rng.lognormal(math.log(400 * 350), 0.9, m)
    ar = np.exp(rng.normal(0.15, 0.35, m))
    w[g] = np.maximum(1, np.rint(np.sqrt(area * ar))).astype(np.int64)
    h[g] = np.maximum(1, np.rint(np.sqrt(area / ar))).astype(np.int64)
    # banners and skyscrapers: extreme aspect ratios
    b = kind == 3
    m = int(b.sum())
    pick = _BANNERS[rng.integers(0, len(_BANNERS), m)]
    w[b], h[b] = pick[:, 0], pick[:, 1]
    return w, h


def _scores(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    z1 = rng.standard_normal(n)
    z2 = 0.7 * z1 + math.sqrt(1 - 0.49) * rng.standard_normal(n)
    b32 = np.round(np.clip(0.27 + 0.045 * z1, 0.0, 0.55), 4).astype(np.float32)
    l14 = np.round(np.clip(0.25 + 0.05 * z2, -0.05, 0.50), 4).astype(np.float32)
    return b32, l14


_PATHS = ["/wp-content/uploads/2019/03/", "/wp-content/uploads/2021/11/", "/images/", "/img/",
          "/media/catalog/product/cache/1/image/", "/photos/", "/static/", "/i/", "/thumb/", "/files/",
          "/assets/images/", "/"]


def _urls(rng: np.random.Generator, n: int, domains: pa.Array) -> pa.Array:
    scheme = _strings(["https://", "http://"], (rng.random(n) >= 0.85).astype(np.int64))
    table = np.minimum(np.searchsorted(_zipf_cdf(len(domains), s=0.9),
                                       (np.arange(1 << 16) + 0.5) / (1 << 16), side="right"), len(domains) - 1)
    dom = domains.take(pa.array(table[rng.integers(0, 1 << 16, n)]))
    path = _strings(_PATHS, rng.integers(0, len(_PATHS), n))
    name = _hex_column(rng, n, 6)
    ext = _strings(list(_EXTS), rng.integers(0, len(_EXTS), n))
    return pc.binary_join_element_wise(scheme, dom, path, name, ext, pa.scalar("", _LS))


def _domains(seed: int) -> pa.Array:
    rng = np.random.default_rng([seed, 20_000_003])
    words = _pseudo_words(rng, 6000)
    tlds = np.array([".com", ".com", ".com", ".net", ".org", ".de", ".fr", ".co.uk", ".ru", ".jp", ".cn",
                     ".com.br", ".it", ".es", ".info", ".shop"], dtype=object)
    sub = np.array(["", "", "www.", "cdn.", "img.", "images.", "i0.wp.", "static."], dtype=object)
    out = [s + w + t for s, w, t in zip(sub[rng.integers(0, len(sub), len(words))], words,
                                         tlds[rng.integers(0, len(tlds), len(words))])]
    return pa.array(out, _LS)


def make_shard(rows: int, seed: int, shard: int, vocab: _Vocab | None = None,
               domains: pa.Array | None = None) -> pl.DataFrame:
    """One shard of the pool as a Polars frame (deterministic in seed and shard index)."""
    vocab = vocab or _Vocab(seed)
    domains = domains if domains is not None else _domains(seed)
    rng = np.random.default_rng([seed, shard])
    uid = _hex_column(rng, rows, 16)
    w, h = _sizes(rng, rows)
    b32, l14 = _scores(rng, rows)
    table = pa.table({
        "uid": uid,
        "url": _urls(rng, rows, domains),
        "text": _captions(rng, rows, vocab),
        "original_width": pa.array(w),
        "original_height": pa.array(h),
        "clip_b32_similarity_score": pa.array(b32),
        "clip_l14_similarity_score": pa.array(l14),
        "sha256": _hex_column(rng, rows, 32),
    })
    frame = pl.from_arrow(table)
    # what read_datacomp adds: id = uid first, width/height aliases last
    frame = frame.with_columns(pl.col("original_width").alias("width"), pl.col("original_height").alias("height"))
    return frame.select(pl.col("uid").alias("id"), pl.all())


# --------------------------------------------------------------------------- the pool


def _parameters(rows: int, shards: int | None, seed: int) -> dict:
    return {"generator": GENERATOR, "generator_version": GENERATOR_VERSION, "rows": rows, "shards": shards,
            "seed": seed}


def existing(dest: str | os.PathLike, rows: int, shards: int | None, seed: int):
    """The pool at dest if it was generated with exactly these parameters, else None."""
    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.data.errors import PoolError

    try:
        pool = Pool.open(dest)
    except PoolError:
        return None
    if pool.card.lineage.get("parameters") != _parameters(rows, shards, seed):
        return None
    return pool


def make_pool(dest: str | os.PathLike, rows: int = DATACOMP_SMALL_ROWS, shards: int | None = None, seed: int = 0,
              *, overwrite: bool = False, verbose: bool = False):
    """Write (or reuse) the synthetic DataComp pool at ``dest``; return it opened (a ``Pool``).

    ``shards`` defaults to shards of a million rows and a last one with the
    rest, as ``write_pool`` cuts (its default ``shard_rows``); a number of
    shards cuts the rows evenly. The shards are written with the same parquet settings as
    ``write_pool`` (zstd level 3, statistics, its row-group size), the card
    with cbdsl's own statistics, content hash and atomic card write.
    """
    from cbdsl import __version__
    from cbdsl.pipelines.data.card import (
        ASSETS_DIR, FORMAT_VERSION, SCORES_DIR, SHARDS_DIR, PoolCard, ShardInfo, write_card,
    )
    from cbdsl.pipelines.data.columns import column_stats, type_name
    from cbdsl.pipelines.data.hashing import content_hash, sha256_file
    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.data.roots import CARD_FILE
    from cbdsl.pipelines.data.writing import row_group_rows

    if rows < 1:
        raise ValueError("rows must be at least 1")
    requested = shards
    if shards is None:  # as write_pool (and so `cbdsl pool import datacomp`) cuts: full shards, then the rest
        bounds = np.minimum(np.arange(math.ceil(rows / SHARD_ROWS) + 1, dtype=np.int64) * SHARD_ROWS, rows)
    elif not 1 <= shards <= rows:
        raise ValueError("shards must be between 1 and rows")
    else:  # even cuts
        bounds = np.linspace(0, rows, shards + 1).round().astype(np.int64)
    shards = len(bounds) - 1
    dest = Path(dest).expanduser().absolute()
    found = existing(dest, rows, requested, seed)
    if found is not None and not overwrite:
        if verbose:
            print(f"reusing the pool at {dest} ({rows} rows, {len(found.card.shards)} shards, seed {seed})",
                  file=sys.stderr)
        return found
    if dest.exists() and any(dest.iterdir()):
        if not ((dest / CARD_FILE).is_file() or (dest / SHARDS_DIR).is_dir()):
            raise ValueError(f"{dest} is a non-empty directory that is not a pool; refusing to write into it")

    start = time.perf_counter()
    vocab, domains = _Vocab(seed), _domains(seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.writing-{uuid.uuid4().hex[:12]}"
    try:
        for sub in (SHARDS_DIR, SCORES_DIR, ASSETS_DIR):
            (tmp / sub).mkdir(parents=True)
        first = make_shard(int(bounds[1] - bounds[0]), seed, 0, vocab, domains)
        group_rows = row_group_rows(first, SHARD_ROWS)
        schema_frame = first.head(0)

        def write(i: int, frame: pl.DataFrame | None = None):
            n = int(bounds[i + 1] - bounds[i])
            frame = frame if frame is not None else make_shard(n, seed, i, vocab, domains)
            rel = f"{SHARDS_DIR}/part-{i:05d}.parquet"
            frame.write_parquet(tmp / rel, compression="zstd", compression_level=3, statistics=True,
                                row_group_size=group_rows)
            if verbose:
                print(f"  shard {i + 1}/{shards}: {n} rows ({time.perf_counter() - start:.1f}s)", file=sys.stderr)
            return ShardInfo(file=rel, rows=n, sha256=sha256_file(tmp / rel))

        # NumPy, Arrow and Polars release the GIL in the heavy steps: threads overlap shards
        with ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 4))) as ex:
            futures = [ex.submit(write, 0, first)] + [ex.submit(write, i) for i in range(1, shards)]
            del first
            infos = [f.result() for f in futures]

        schema = {c: type_name(t) for c, t in schema_frame.schema.items()}
        dtypes = {c: str(t) for c, t in schema_frame.schema.items()}
        files = [str(tmp / s.file) for s in infos]
        stats: dict = {}
        for col, kind in schema.items():  # one column at a time: bounded memory
            column = pl.scan_parquet(files).select(col).collect()
            if col == "id":
                ids = column.get_column("id")
                if ids.null_count() or ids.is_duplicated().any():
                    raise RuntimeError("generated ids are not unique")  # 128-bit random: never
            stats.update(column_stats(column, {col: kind}, "id"))
            del column
        lineage = {
            "importer": "synthetic-datacomp",
            "parameters": _parameters(rows, requested, seed),
            "note": "synthetic DataComp-small-like metadata for benchmarks; not real data",
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "cbdsl_version": __version__,
        }
        card = PoolCard(
            format_version=FORMAT_VERSION, name=dest.name, id_column="id", schema=schema, dtypes=dtypes,
            rows=rows, shards=infos, stats=stats,
            content_hash=content_hash([s.sha256 for s in infos], schema, dtypes, "id"),
            lineage=lineage, assets={},
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        write_card(dest, card)  # last: until now the directory is not a pool
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"wrote {rows} rows in {shards} shards to {dest} in {time.perf_counter() - start:.1f}s",
              file=sys.stderr)
    return Pool.open(dest)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", help="pool directory (reused when it holds a pool of the same parameters)")
    ap.add_argument("--rows", type=int, default=DATACOMP_SMALL_ROWS)
    ap.add_argument("--shards", type=int, default=None, help="default: one per million rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="regenerate even if a matching pool exists")
    args = ap.parse_args(argv)
    pool = make_pool(args.dest, args.rows, args.shards, args.seed, overwrite=args.overwrite, verbose=True)
    print(json.dumps({"pool": str(pool.path), "rows": pool.card.rows, "shards": len(pool.card.shards),
                      "content_hash": pool.content_hash}))


if __name__ == "__main__":
    main()
