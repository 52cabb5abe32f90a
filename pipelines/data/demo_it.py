"""The demo instruction pool, ``demo-it``: LLaVA-665K-shaped conversations about synthetic images, with
known defects at known rates.

Why it exists: the instruction-tuning track of Curation-Bench selects
conversations of LLaVA-665K for LLaVA-1.5. Here the same loop runs on a
2-core CPU: this pool is curated, the ``mini-vlm`` backend instruction-tunes
a small vision-language model on the selection and scores it on a held-out
suite. Records have LLaVA's shape (``id``, ``image`` relative to an image
folder, ``conversations`` of human/gpt turns with ``<image>`` in the first),
images are the demo's shapes (:mod:`~cbdsl.pipelines.data.synth`), and the
pool's columns are exactly those the LLaVA importer makes
(:func:`~cbdsl.pipelines.data.importers.llava_frame`) plus ``image_sha256``.

Sources follow LLaVA's mix (share of rows; the image folders are LLaVA's):

==============  =====  ===============  ===========================================
source          share  images           turns (:mod:`~cbdsl.pipelines.data.instructions`)
==============  =====  ===============  ===========================================
llava_instruct   30%   coco/train2017   conversation, detailed description, reasoning
vqa              12%   coco/train2017   short answers, yes/no existence and attributes
gqa              12%   gqa/images       compositional short answers
aokvqa            8%   coco/train2017   multiple choice, answered by letter
ocr_vqa          10%   ocr_vqa/images   the word written on a banner
refcoco           8%   coco/train2017   the box of a described shape
vg                8%   vg/VG_100K       a short description of a box
sharegpt         12%   (none)           text-only chat: arithmetic, shapes, colours
==============  =====  ===============  ===========================================

Defects (a row has at most one of the content defects; copies are of clean
rows and are flagged, the originals not): ``wrong_answer`` (the question is
right, the answers contradict the image), ``other_image`` (a coherent
conversation about another image), ``boilerplate`` (a generic templated
prompt and a generic answer), ``one_word`` (a one-word reply where a
description or sentence is asked), ``rambling`` (the answer buried in filler
and repetition), ``truncated`` (cut mid-word), ``refusal`` (refusal
boilerplate), ``non_english`` (the exchange in French, German or Spanish),
``unanswerable`` (asks whether an absent shape is there; the answer says yes),
``exact_duplicate`` (the same record under a new id) and ``near_duplicate``
(the same image and answer, the question with one word changed). The rates
per source are :data:`DEFECT_RATES`; the truth goes to the ``demo-defects``
asset (kind ``truth``: never readable by a policy). Version 2's rates make
the defects a reader can see common (about 30% of rows) and label noise rare
(about 9%): with version 1's (label noise 18%), removing the visible junk
concentrated the noise no rule sees and the best policy was 1.7 seed sigmas
above random; now 6.5 (README "Validity of the mini-vlm backend").

Random streams: ``numpy.random.default_rng([seed, STREAMS[...]])`` with
stream ids disjoint from the CLIP demo's: 10 the pool, 11 the evaluation
suite of ``mini-vlm``, 12 the caption set its base model is pretrained on.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cbdsl.pipelines.data import instructions as it
from cbdsl.pipelines.data import synth
from cbdsl.pipelines.data.demo import replace_rates, split_counts
from cbdsl.pipelines.data.demo_it_eval import eval_asset
from cbdsl.pipelines.data.image_folder import Images
from cbdsl.pipelines.data.llava import llava_frame
from cbdsl.pipelines.data.writing import add_asset, write_pool

DEMO_IT_VERSION = 2
"""Bump when the generator's output changes for a given (rows, seed)."""
BASE_DATA_VERSION = 1
"""Bump when the base model's data changes: :func:`clean_turns` or the captions of
:func:`cbdsl.scorers.models.vlm_base.captions` (defect rates are not part of it)."""

NAME = "demo-it"
DEFAULT_ROWS = 20_000
STREAMS: dict[str, int] = {"pool": 10, "eval": 11, "base": 12}

SOURCE_SHARES: dict[str, float] = {"llava_instruct": 0.30, "vqa": 0.12, "gqa": 0.12, "aokvqa": 0.08,
                                   "ocr_vqa": 0.10, "refcoco": 0.08, "vg": 0.08, "sharegpt": 0.12}
FOLDERS = {"llava_instruct": "coco/train2017", "vqa": "coco/train2017", "aokvqa": "coco/train2017",
           "refcoco": "coco/train2017", "gqa": "gqa/images", "ocr_vqa": "ocr_vqa/images", "vg": "vg/VG_100K"}

CONTENT_DEFECTS = ("wrong_answer", "other_image", "boilerplate", "one_word", "rambling", "truncated", "refusal",
                   "non_english", "unanswerable")
DEFECTS = (*CONTENT_DEFECTS, "exact_duplicate", "near_duplicate")

# fmt: off
_R = dict  # a source's rates; a defect a source cannot have is left out (rate 0)
DEFECT_RATES: dict[str, dict[str, float]] = {
    "llava_instruct": _R(wrong_answer=0.04, other_image=0.03, boilerplate=0.08, one_word=0.12, rambling=0.08,
                         truncated=0.08, refusal=0.08, non_english=0.06, unanswerable=0.02,
                         exact_duplicate=0.05, near_duplicate=0.05),
    "vqa":     _R(wrong_answer=0.06, other_image=0.03, boilerplate=0.06, rambling=0.04, refusal=0.06, non_english=0.04,
                  unanswerable=0.03, exact_duplicate=0.06, near_duplicate=0.06),
    "gqa":     _R(wrong_answer=0.06, other_image=0.03, boilerplate=0.04, rambling=0.04, refusal=0.04, non_english=0.04,
                  unanswerable=0.025, exact_duplicate=0.05, near_duplicate=0.05),
    "aokvqa":  _R(wrong_answer=0.06, other_image=0.025, refusal=0.06, non_english=0.04,
                  exact_duplicate=0.04, near_duplicate=0.04),
    "ocr_vqa": _R(wrong_answer=0.06, other_image=0.03, refusal=0.08, unanswerable=0.02,
                  exact_duplicate=0.05, near_duplicate=0.05),
    "refcoco": _R(wrong_answer=0.06, other_image=0.03, refusal=0.15, exact_duplicate=0.04, near_duplicate=0.04),
    "vg":      _R(wrong_answer=0.06, other_image=0.03, refusal=0.15, non_english=0.06,
                  exact_duplicate=0.04, near_duplicate=0.04),
    "sharegpt": _R(wrong_answer=0.04, boilerplate=0.10, rambling=0.10, truncated=0.08, refusal=0.12, non_english=0.10,
                   exact_duplicate=0.06, near_duplicate=0.06),
}
# fmt: on
"""Share of each source's rows with each defect (exact counts per source, rounded)."""

BOILERPLATE = (
    ("Look at the image and respond in a helpful, harmless and honest way.",
     "This is an image. It shows something. Let me know if you have any other questions."),
    ("Please respond to the following input as an AI assistant.",
     "Sure! As an AI assistant, I am happy to help. Here is my response to your input."),
    ("Here is an image. Please provide an appropriate response.",
     "Thank you for sharing. This image is interesting and contains some content."),
)
REFUSALS = ("I'm sorry, but I cannot help with that request.",
            "As an AI language model, I am unable to answer questions about this content.",
            "I apologize, but I can't provide an answer to that.")
_FOREIGN_DETAIL = {"fr": "Décrivez l'image en détail.", "de": "Beschreiben Sie das Bild ausführlich.",
                   "es": "Describe la imagen en detalle."}
_FOREIGN_SUM = {"fr": ("Combien font {x} plus {y} ?", "{x} plus {y} font {z}."),
                "de": ("Was ist {x} plus {y}?", "{x} plus {y} ist {z}."),
                "es": ("¿Cuánto es {x} más {y}?", "{x} más {y} son {z}.")}
_NEAR = {"What": "Which", "Where": "In which place", "Is": "Would you say", "Please": "Kindly", "the": "this",
         "shape": "figure", "Describe": "Portray", "How": "In what way"}


@dataclass(frozen=True)
class DemoItPool:
    pool: pl.DataFrame
    defects: pl.DataFrame
    records: list[dict[str, Any]]
    images: dict[str, bytes]  # relative path -> PNG bytes
    lineage: dict[str, Any]


def with_rates(changes: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """DEFECT_RATES with some (source, defect) rates replaced: how the validity benchmark tries other pools.

    Raises ValueError naming an unknown source or defect, a defect the source
    cannot have (text-only chat has no image to contradict), a rate outside
    [0, 1], or a source whose defects sum above 1.
    """
    return replace_rates(DEFECT_RATES, changes, DEFECTS, "demo-it", lambda rates: (tuple(rates),), own_only=True)


def generate_demo_it(rows: int = DEFAULT_ROWS, seed: int = 0,
                     rates: dict[str, dict[str, float]] | None = None) -> DemoItPool:
    """The pool's records, frame, images and truth; the same (rows, seed, rates) gives byte-identical output.
    ``rates`` (default :data:`DEFECT_RATES`) are per source, as :func:`with_rates` makes them."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 10:
        raise ValueError(f"rows must be a whole number of at least 10, not {rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number of at least 0, not {seed!r}")
    rates_of = DEFECT_RATES if rates is None else rates
    rng = np.random.default_rng([seed, STREAMS["pool"]])
    counts = split_counts(rows, SOURCE_SHARES)
    plan = []  # (source, defect or "", copy kind 0/1/2, original index)
    for source, n in zip(SOURCE_SHARES, counts):
        rates = rates_of.get(source, {})
        k_exact, k_near = round(rates.get("exact_duplicate", 0) * n), round(rates.get("near_duplicate", 0) * n)
        base = n - k_exact - k_near
        defects = [d for d in CONTENT_DEFECTS for _ in range(round(rates.get(d, 0) * n))][:base]
        defects += [""] * (base - len(defects))
        start = len(plan)
        plan += [(source, d, 0, -1) for d in rng.permutation(np.asarray(defects, dtype=object)).tolist()]
        clean = [start + i for i in range(base) if plan[start + i][1] == ""]
        for kind, k in ((1, k_exact), (2, k_near)):
            originals = rng.choice(clean, k, replace=len(clean) < k).tolist() if k else []
            plan += [(source, "", kind, int(o)) for o in originals]
    n = len(plan)
    attrs = synth.sample_attributes(n, rng)
    names = synth.attribute_names(attrs)
    draws = rng.random((n, it.DRAWS)).tolist()
    other = {k: ((v + rng.integers(1, len(synth.ATTRIBUTES[k]), n)) % len(synth.ATTRIBUTES[k])).astype(np.int8)
             for k, v in attrs.items()}  # every attribute differs: the "other image" a wrong row describes
    other_names = synth.attribute_names(other)
    words = rng.integers(0, len(synth.RENDERED_WORDS), (n, 2))
    languages = rng.integers(0, 3, n)
    sub = rng.random(n)  # the task within a source (llava_instruct: conversation / detail / reasoning)

    perm = rng.permutation(n)  # row order of the pool: neither ids nor order reveal the defects
    position = np.empty(n, dtype=np.int64)
    position[perm] = np.arange(n)
    width = max(6, len(str(n - 1)))
    ids = [f"it{i:0{width}d}" for i in range(n)]

    records: list[dict[str, Any] | None] = [None] * n
    images: dict[str, bytes] = {}
    truth: list[dict[str, Any]] = [{}] * n
    image_rows = [i for i, p in enumerate(plan) if p[0] != "sharegpt" and p[2] == 0]
    pngs = _render(attrs, image_rows, [synth.RENDERED_WORDS[words[i, 0]] if plan[i][0] == "ocr_vqa" else None
                                       for i in image_rows], rng)
    paths: dict[int, str] = {}
    for i, png in zip(image_rows, pngs):
        paths[i] = f"{FOLDERS[plan[i][0]]}/{position[i]:012d}.png"
        images[paths[i]] = png
    for i, (source, defect, kind, orig) in enumerate(plan):
        a = {k: str(v[i]) for k, v in names.items()}
        codes = {k: int(v[i]) for k, v in attrs.items()}
        if kind:
            base = records[orig]  # originals come first in the plan
            turns = [dict(turn) for turn in base["conversations"]]
            if kind == 2:
                turns[0]["value"] = _perturb(turns[0]["value"], draws[i][0])
            rec = {"id": ids[position[i]], **({"image": base["image"]} if "image" in base else {}),
                   "conversations": turns}
            a = truth[orig]["attributes"]
            task = truth[orig]["task"]
        else:
            o = {k: str(v[i]) for k, v in other_names.items()}
            oc = {k: int(v[i]) for k, v in other.items()}
            word = synth.RENDERED_WORDS[words[i, 0]]
            turns, task = _turns(source, defect, a, codes, o, oc, word, synth.RENDERED_WORDS[words[i, 1]],
                                 synth.LANGUAGES[languages[i]], sub[i], draws[i])
            rec = {"id": ids[position[i]], **({"image": paths[i]} if i in paths else {}),
                   "conversations": _conversation(turns, i in paths)}
        records[i] = rec
        truth[i] = {"attributes": a, "task": task, "defect": defect, "kind": kind,
                    "group": ids[position[orig]] if kind else None}

    order = perm.tolist()
    ordered = [records[i] for i in order]
    frame = llava_frame(list(enumerate(ordered)), Path(NAME))
    frame = frame.with_columns(pl.Series("image_sha256", [
        hashlib.sha256(images[r["image"]]).hexdigest() if "image" in r else None for r in ordered],
        dtype=pl.String))
    flags = {d: [truth[i]["defect"] == d for i in order] for d in CONTENT_DEFECTS}
    flags["exact_duplicate"] = [truth[i]["kind"] == 1 for i in order]
    flags["near_duplicate"] = [truth[i]["kind"] == 2 for i in order]
    defects = pl.DataFrame({
        "id": frame.get_column("id"),
        **{d: flags[d] for d in DEFECTS},
        "dup_group": pl.Series([truth[i]["group"] for i in order], dtype=pl.String),
        "task": [truth[i]["task"] for i in order],
        **{k: [truth[i]["attributes"][k] for i in order] for k in synth.ATTRIBUTES},
    })
    lineage = {"generator": "cbdsl.pipelines.data.demo_it", "demo_it_version": DEMO_IT_VERSION, "rows": n,
               "seed": seed, "rng": f"numpy.random.default_rng([{seed}, {STREAMS['pool']}])",
               "streams": dict(STREAMS), "source_shares": dict(SOURCE_SHARES),
               "defect_rates": {s: dict(r) for s, r in rates_of.items()},
               "defect_counts": {d: int(sum(flags[d])) for d in DEFECTS}, "defects_asset": "demo-defects",
               "images": len(images)}
    return DemoItPool(frame, defects, ordered, images, lineage)


def make_demo_it(path: str | os.PathLike, rows: int = DEFAULT_ROWS, seed: int = 0, overwrite: bool = False,
                 rates: dict[str, dict[str, float]] | None = None) -> Path:
    """Generate the pool and write it at ``path``: shards, its image folder inside it, the ``demo-defects`` truth
    and the ``mini-vlm-eval`` suite (kind ``eval``, for the audit)."""
    demo = generate_demo_it(rows, seed, rates)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        for rel, png in demo.images.items():
            file = folder / rel
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(png)
        write_pool(demo.pool, path, name=NAME, id_column="id", lineage=demo.lineage, overwrite=overwrite,
                   images=Images(folder, move=True))
        truth = Path(tmp) / "demo-defects.parquet"
        demo.defects.write_parquet(truth, compression="zstd")
        add_asset(path, "demo-defects", truth, kind="truth",
                  description=f"ground truth of the demo instruction pool, one row per id: a bool per defect "
                              f"({', '.join(DEFECTS)}), dup_group, the task, and the image's true attributes; for "
                              "tests and the benchmark, never for policies")
        suite = Path(tmp) / "mini-vlm-eval.parquet"
        eval_asset().write_parquet(suite, compression="zstd")
        add_asset(path, "mini-vlm-eval", suite, kind="eval",
                  description="the mini-vlm backend's held-out suite (questions, answers and image hashes), "
                              "for the audit")
    return Path(path)


# ---------------------------------------------------------------- rows


def _render(attrs: dict[str, np.ndarray], rows: list[int], words: list[str | None],
            rng: np.random.Generator) -> list[bytes]:
    """PNG bytes of each row's 32x32 image; OCR rows get their word on a banner."""
    index = np.asarray(rows, dtype=np.int64)
    pictures = synth.render_images(synth.take(attrs, index), synth.IMAGE_SIZE, rng)
    text = [k for k, w in enumerate(words) if w is not None]
    if text:
        pictures[text] = synth.draw_text(pictures[text], [words[k] for k in text], rng)
    return synth.encode_png(pictures)


def clean_turns(source: str, a: dict[str, str], codes: dict[str, int], word: str, sub: float,
                u: list[float]) -> tuple[it.Turns, str]:
    """A source's clean turns about an image with attributes ``a``, and the task's name."""
    if source == "llava_instruct":
        if sub < 0.40:
            return it.conversation(a, u), "conversation"
        if sub < 0.65:
            return it.detail(a, u), "detail"
        return it.reasoning(a, u), "reasoning"
    if source == "vqa":
        return it.short(a, u), "short"
    if source == "gqa":
        return it.compositional(a, u), "compositional"
    if source == "aokvqa":
        return it.choice(a, u)[0], "choice"
    if source == "ocr_vqa":
        return it.ocr(word, u), "ocr"
    if source == "refcoco":
        return it.grounding(a, codes), "grounding"
    if source == "vg":
        return it.region(a, codes), "region"
    return it.text_only(u), "text"


def _turns(source, defect, a, codes, other, other_codes, word, other_word, language, sub, u):
    turns, task = clean_turns(source, a, codes, word, sub, u)
    if defect == "wrong_answer":
        wrong, _ = clean_turns(source, other, other_codes, other_word, sub, u)
        if task == "choice":
            right = "ABCD".index(turns[0][1])
            wrong = [(turns[0][0], "ABCD"[(right + 1 + int(u[20] * 3)) % 4])]
        elif task == "text":
            wrong = [(turns[0][0], _wrong_fact(turns[0][1], u[21]))]
        turns = [(q, _flip(w) if w == right else w) for (q, right), (_, w) in zip(turns, wrong)]
    elif defect == "other_image":
        turns, _ = clean_turns(source, other, other_codes, other_word, sub, u)
    elif defect == "boilerplate":
        turns = [it.pick(BOILERPLATE, u[20])]
    elif defect == "one_word":
        turns = [(q, a["shape"].capitalize() + ".") for q, _ in turns]
    elif defect == "rambling":
        q, ans = turns[0]
        low = ans[0].lower() + ans[1:]
        turns = [(q, f"Well, so, basically, um, {low} As I said before, {low} And also, you know, {low} "
                     "That is more or less it, I think, basically, more or less, so yes.")] + turns[1:]
    elif defect == "truncated":
        q, ans = turns[0]
        turns = [(q, ans[: max(3, int(len(ans) * (0.35 + 0.3 * u[22])))].rstrip(" ,"))]
    elif defect == "refusal":
        turns = [(q, it.pick(REFUSALS, u[20])) for q, _ in turns]
    elif defect == "non_english":
        if source == "sharegpt":
            x, y = 2 + int(u[1] * 40), 2 + int(u[2] * 40)
            q, ans = _FOREIGN_SUM[language]
            turns = [(q.format(x=x, y=y), ans.format(x=x, y=y, z=x + y))]
        else:
            caption = synth.caption({k: np.array([v]) for k, v in codes.items()}, language,
                                    np.random.default_rng(int(u[23] * 2**32)))[0]
            turns = [(_FOREIGN_DETAIL[language], caption[0].upper() + caption[1:] + ".")]
    elif defect == "unanswerable":
        absent = it.pick([s for s in synth.SHAPES if s != a["shape"]], u[20])
        turns = [(f"Is there a {absent} in the image?", f"Yes, there is a {absent} in the image.")]
    return _keep_format(source, turns), task


def _flip(answer: str) -> str:
    """The wrong answer where the other image's answer happens to be right: yes for no, or a word changed."""
    return {"yes": "no", "no": "yes"}.get(answer, answer + " not")


def _keep_format(source: str, turns: it.Turns) -> it.Turns:
    """A defective row keeps its sub-dataset's answer-format line, as templated datasets do (so the source a
    policy reads, which the importer derives from the prompt, is the row's own)."""
    suffix = {"vqa": it.SHORT, "gqa": it.SHORT, "ocr_vqa": it.SHORT, "aokvqa": it.LETTER}.get(source)
    (q, ans), *rest = turns
    if suffix and not q.endswith(suffix):
        q = f"{q}\n{suffix}"
    return [(q, ans), *rest]


def _wrong_fact(answer: str, u: float) -> str:
    """A text-only answer made false: its last number changed, else its last word another colour."""
    numbers = re.findall(r"\d+", answer)
    if numbers:
        last = numbers[-1]
        head, _, tail = answer.rpartition(last)
        return f"{head}{int(last) + 1 + int(u * 9)}{tail}"
    head, _, word = answer.rstrip(".").rpartition(" ")
    return f"{head} {it.pick([c for c in synth.COLORS if c != word], u)}."


def _conversation(turns: it.Turns, image: bool) -> list[dict[str, str]]:
    out = []
    for k, (q, a) in enumerate(turns):
        out.append({"from": "human", "value": f"<image>\n{q}" if image and k == 0 else q})
        out.append({"from": "gpt", "value": a})
    return out


def _perturb(question: str, u: float) -> str:
    """A near duplicate's question: one word of the question proper replaced (or ``please`` added); the
    ``<image>`` line, a box prompt's template and the answer-format line stay as they are."""
    image = question.startswith("<image>\n")
    body = question.removeprefix("<image>\n")
    head, tail = "", ""
    for template in (it.BBOX, it.REGION):
        if body.startswith(template):
            head, body = template, body[len(template):]
    if "\n" in body:
        body, tail = body.split("\n", 1)
        tail = "\n" + tail
    words = body.split(" ")
    hits = [k for k, w in enumerate(words) if w in _NEAR]
    if hits:
        k = hits[min(int(u * len(hits)), len(hits) - 1)]
        words[k] = _NEAR[words[k]]
        body = " ".join(words)
    else:
        body = body.rstrip("?.") + ", please?" if body.endswith("?") else body + " Please."
    return ("<image>\n" if image else "") + head + body + tail
