"""The held-out suite of the ``mini-vlm`` backend: eight benchmarks shaped like LLaVA-1.5's, on images the
demo instruction pool never contains.

Why it exists: an instruction-tuned model is judged by what it answers. The
suite asks what LLaVA's benchmarks ask, about fresh images of the demo's
generator (stream ``eval``, disjoint from the pool's), and every answer is
scored without a judge model:

===========  =====================  ====================================================
benchmark    shaped like            scored by
===========  =====================  ====================================================
vqa          VQAv2                  greedy answer == the attribute (exact match)
gqa          GQA                    greedy answer == the attribute a composed question asks
textvqa      TextVQA                greedy answer == the word on the banner
pope         POPE                   accuracy of yes/no existence questions (half yes), the
                                    answer picked by likelihood
mme          MME (perception)       accuracy of yes/no attribute questions, by likelihood
mmbench      MMBench                accuracy of the most likely of four listed options
llava_bench  LLaVA-Bench (detail)   share of the five attributes a greedy description names
refcoco      RefCOCO                accuracy of the most likely of the ten boxes a shape can
                                    have (a box with IoU >= 0.5 is the right one's)
===========  =====================  ====================================================

Questions carry LLaVA's short-answer suffix (``Answer the question using a
single word or phrase.``), as LLaVA-1.5's evaluation prompts for VQAv2, GQA,
TextVQA, POPE and MME do. Likelihood-scored answers compare the mean
log-likelihood per token of each candidate (``yes`` and ``no`` need not be
the same number of tokens). MMBench lists its four options and takes the
option's text, not its letter: a letter is a format the pool may or may not
teach, the option's text is what the image shows. Two departures keep a
score from flipping between runs on a threshold: POPE reports accuracy, not
F1 of "yes" (a model that slides from mostly-no to mostly-yes moved F1 from
0.03 to 0.52 with the same discrimination), and RefCOCO picks among the ten
possible boxes by likelihood instead of parsing a generated box (whose
exact digits a small model learns all at once or not at all: 0.08 against
0.32 on one seed).
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from cbdsl.pipelines.data import instructions as it
from cbdsl.pipelines.data import synth

BENCHMARKS = ("vqa", "gqa", "textvqa", "pope", "mme", "mmbench", "llava_bench", "refcoco")
SCORING = {"vqa": "exact", "gqa": "exact", "textvqa": "exact", "pope": "choice", "mme": "choice",
           "mmbench": "choice", "llava_bench": "recall", "refcoco": "choice"}
ROWS = 500  # per benchmark
SEED = 0
TEST_ROWS = 250  # per benchmark: the test part's ~12 s keep a submission under two minutes on two cores
TEST_SEED = 1
"""The test part: the same generator at another seed (its questions are disjoint from the dev part's, whose
scores an agent sees); its scores never reach the sandbox."""
STREAM = 11  # demo_it.STREAMS["eval"]

SCHEMA = {"id": pl.String, "benchmark": pl.String, "scoring": pl.String, "image": pl.Binary, "question": pl.String, "answer": pl.String,
          "choices": pl.List(pl.String), "keywords": pl.List(pl.String)}


def eval_suite(rows: int = ROWS, seed: int = SEED) -> pl.DataFrame:
    """``rows`` questions per benchmark (:data:`BENCHMARKS` order): id, benchmark, scoring (its rule, from
    :data:`SCORING`), image (PNG), question (the
    human turn, without ``<image>``), answer, choices (the candidates of likelihood-scored benchmarks), keywords
    (what a description must name; the box's four numbers for refcoco)."""
    rng = np.random.default_rng([seed, STREAM])
    n = rows * len(BENCHMARKS)
    attrs = synth.sample_attributes(n, rng)
    names = synth.attribute_names(attrs)
    draws = rng.random((n, it.DRAWS)).tolist()
    words = rng.integers(0, len(synth.RENDERED_WORDS), n)
    bench = [b for b in BENCHMARKS for _ in range(rows)]
    pictures = synth.render_images(attrs, synth.IMAGE_SIZE, rng)
    ocr = [i for i, b in enumerate(bench) if b == "textvqa"]
    pictures[ocr] = synth.draw_text(pictures[ocr], [synth.RENDERED_WORDS[words[i]] for i in ocr], rng)
    out = []
    for i, b in enumerate(bench):
        a = {k: str(v[i]) for k, v in names.items()}
        codes = {k: int(v[i]) for k, v in attrs.items()}
        out.append(_question(b, a, codes, synth.RENDERED_WORDS[words[i]], draws[i]))
    width = len(str(n - 1))
    return pl.DataFrame({
        "id": [f"ev{i:0{width}d}" for i in range(n)],
        "benchmark": bench,
        "scoring": [SCORING[b] for b in bench],
        "image": synth.encode_png(pictures),
        "question": [q for q, _, _, _ in out],
        "answer": [ans for _, ans, _, _ in out],
        "choices": [c for _, _, c, _ in out],
        "keywords": [k for _, _, _, k in out],
    }, schema=SCHEMA)


def _question(bench: str, a: dict[str, str], codes: dict[str, int], word: str,
              u: list[float]) -> tuple[str, str, list[str], list[str]]:
    if bench == "vqa":
        k = it.pick(tuple(synth.ATTRIBUTES), u[0])
        return f"{it.ask(k, a, u[1])}\n{it.SHORT}", a[k], [], []
    if bench == "gqa":
        (q, ans), = it.compositional(a, u)
        return q, ans, [], []
    if bench == "textvqa":
        (q, ans), = it.ocr(word, u)
        return q, ans, [], []
    if bench == "pope":
        return f"{it.existence(a, u[3:5])}\n{it.SHORT}", "yes" if u[3] < 0.5 else "no", ["yes", "no"], []
    if bench == "mme":
        q, yes = it.attribute_check(a, u[3:6])
        return f"{q}\n{it.SHORT}", "yes" if yes else "no", ["yes", "no"], []
    if bench == "mmbench":
        turns, right = it.choice(a, u)
        options = [line[3:] for line in turns[0][0].split("\n")[1:5]]
        question = turns[0][0].rsplit("\n", 1)[0]  # the question and its options, without the letter line
        return f"{question}\n{it.SHORT}", options[right], options, []
    if bench == "llava_bench":
        return it.pick(it.DETAIL_PROMPTS, u[0]), it.describe(a), [], [a[k] for k in synth.ATTRIBUTES]
    (q, ans), = it.grounding(a, codes)
    boxes = [it.box_text(synth.bounding_box(p, z)) for p in range(len(synth.POSITIONS)) for z in range(len(synth.SIZES))]
    return q, ans, boxes, []


def eval_asset(rows: int = ROWS) -> pl.DataFrame:
    """The suite as a pool asset for the contamination audit: ids, the question and answer as ``text``, and
    the image hashes."""
    suite = eval_suite(rows)
    return pl.DataFrame({
        "id": suite.get_column("id"),
        "text": [f"{q}\n{a}" for q, a in zip(suite.get_column("question"), suite.get_column("answer"))],
        "image_sha256": [hashlib.sha256(b).hexdigest() for b in suite.get_column("image").to_list()],
    })
