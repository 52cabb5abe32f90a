"""Scoring the mini vision-language model on the held-out suite (:mod:`~cbdsl.pipelines.data.demo_it_eval`).

Why it exists: the ``mini-vlm`` backend reports one number per benchmark and
their mean, each computed as the suite's table says, with no judge model:
greedy answers compared exactly (after LLaVA's answer normalisation: lower
case, no final period), choices by likelihood, descriptions by the share of
the image's attributes they name, boxes by IoU.
"""

from __future__ import annotations

import re

from collections.abc import Sequence

import numpy as np

from cbdsl.scorers.models import vlm

MAX_NEW = {"exact": 8, "recall": 48, "box": 24}  # tokens a greedy answer may take
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalise(answer: str) -> str:
    return answer.strip().lower().rstrip(".").strip()


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_of(text: str) -> list[float] | None:
    numbers = [float(x) for x in _NUMBER.findall(text)]
    if len(numbers) < 4 or not (numbers[0] < numbers[2] and numbers[1] < numbers[3]):
        return None
    return numbers[:4]


def f1_yes(predicted: list[str], truth: list[str]) -> float:
    """POPE's F1 with "yes" the positive class."""
    tp = sum(p == "yes" and t == "yes" for p, t in zip(predicted, truth))
    fp = sum(p == "yes" and t == "no" for p, t in zip(predicted, truth))
    fn = sum(p != "yes" and t == "yes" for p, t in zip(predicted, truth))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def evaluate(model: vlm.MiniVLM, tok, suite: Sequence[dict], *, device: str = "cpu") -> dict[str, float]:
    """Each benchmark's score in [0, 1], in the suite's order; ``suite`` is rows of
    :func:`~cbdsl.pipelines.data.demo_it_eval.eval_suite` as dicts (``to_dicts()``)."""
    benchmarks: dict[str, list[dict]] = {}
    for row in suite:
        benchmarks.setdefault(row["benchmark"], []).append(row)
    return {bench: score(model, tok, rows, device=device) for bench, rows in benchmarks.items()}


def score(model: vlm.MiniVLM, tok, rows: Sequence[dict], *, device: str = "cpu") -> float:
    """One benchmark's score: its rows share a ``scoring`` rule (exact, f1, choice, recall, box)."""
    kind = rows[0]["scoring"]
    questions = [r["question"] for r in rows]
    truth = [r["answer"] for r in rows]
    images, _ = vlm.load_images([r["image"] for r in rows])
    if kind in ("choice", "f1"):
        choices = [r["choices"] for r in rows]
        picked = vlm.choice_scores(model, tok, questions, choices, images, device=device)
        predicted = [c[k] for c, k in zip(choices, picked)]
        if kind == "f1":
            return f1_yes(predicted, truth)
        return float(np.mean([p == t for p, t in zip(predicted, truth)]))
    answers = vlm.generate(model, tok, questions, images, max_new=MAX_NEW[kind], device=device)
    if kind == "exact":
        return float(np.mean([normalise(a) == normalise(t) for a, t in zip(answers, truth)]))
    if kind == "recall":
        return float(np.mean([np.mean([k in a.lower() for k in r["keywords"]]) for a, r in zip(answers, rows)]))
    boxes = [box_of(a) for a in answers]
    return float(np.mean([b is not None and iou(b, [float(x) for x in r["keywords"]]) >= 0.5
                          for b, r in zip(boxes, rows)]))
