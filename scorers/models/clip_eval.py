"""What a CLIP knows of the demo's attributes: zero-shot accuracy with prompt ensembles, and retrieval.

Why it exists: two users measure a CLIP on held-out clean demo images, the
``mini`` backend (:func:`evaluate`, its versioned suite) and the teacher's
sidecar (:func:`zero_shot_accuracy`). Both classify each attribute (shape,
color, size, position, texture) the way CLIP evaluates, against the mean
text embedding of captions in the training style that name each value
(:func:`prototypes`); here it is written once.

Every number is deterministic for a given model and thread count: the
captions come from seeded generators, and the texts are embedded in the
same batches every time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from cbdsl.pipelines.data import synth
from cbdsl.pipelines.data.demo import EVAL_ROWS, EVAL_SEED, eval_set, generate_clean
from cbdsl.scorers.models.tinyclip import TinyConfig, config_of, encode_images, encode_texts, load_images, tokenize

#: The attributes of the mini suite, in the order its scores are drawn and reported.
SUITE_ATTRIBUTES = ("shape", "color", "size", "position", "texture")

#: Single-word prompts of :func:`zero_shot_accuracy`: one per attribute value, naming only that attribute.
PROMPTS: dict[str, str] = {
    "shape": "a {}", "color": "a {} shape", "size": "a {} shape", "texture": "a {} shape", "position": "a shape in the {}",
}
_POSITION_WORDS = {"center": "center", "top left": "top left corner", "top right": "top right corner",
                   "bottom left": "bottom left corner", "bottom right": "bottom right corner"}


def prototypes(model, attribute: str, rng: np.random.Generator, *, ensemble: int, config: TinyConfig,
               device: str = "cpu") -> torch.Tensor:
    """One unit text embedding per value of ``attribute`` [values, dim]: CLIP's prompt ensembles.

    Each value's is the normalized mean embedding of ``ensemble`` captions in
    the training style that name that value, the other attributes drawn at
    random from ``rng`` ("a small red striped circle in the center", ...).
    """
    out = []
    for code in range(len(synth.ATTRIBUTES[attribute])):
        attrs = synth.sample_attributes(ensemble, rng)
        attrs[attribute][:] = code
        emb = encode_texts(model, tokenize(synth.caption(attrs, "coco", rng), config), device=device)
        out.append(F.normalize(emb.mean(0), dim=0))
    return torch.stack(out)


def zero_shot(model, images: torch.Tensor, data: pl.DataFrame, attributes: Iterable[str], rng: np.random.Generator, *,
              ensemble: int, config: TinyConfig, device: str = "cpu") -> dict[str, float]:
    """Accuracy per attribute: a row is right when its true value's prototype is the nearest to its image.

    ``images`` are the unit image embeddings of ``data``'s rows, whose
    attribute columns are the truth; prototypes are drawn in the order of
    ``attributes``.
    """
    out = {}
    for attr in attributes:
        truth = codes(data, attr)
        predicted = (images @ prototypes(model, attr, rng, ensemble=ensemble, config=config, device=device).T).argmax(1)
        out[attr] = float((predicted.numpy() == truth).mean())
    return out


def codes(data: pl.DataFrame, attribute: str) -> np.ndarray:
    """The value codes (positions in ``synth.ATTRIBUTES[attribute]``) of a column of the demo's rows."""
    values = synth.ATTRIBUTES[attribute]
    return np.asarray([values.index(v) for v in data.get_column(attribute).to_list()])


def evaluate(model, *, rows: int = EVAL_ROWS, device: str = "cpu", ensemble: int = 16,
             seed: int = EVAL_SEED) -> dict[str, float]:
    """The ``mini`` backend's suite: zero-shot accuracy per attribute and retrieval recall@1 both ways.

    On ``eval_set(rows, seed)``, clean pairs the pool never contains (``seed``: the dev part, or
    ``demo.TEST_SEED`` for the test part, prompts drawn at the same seed); the suite's version is the mini
    backend's ``SUITE_VERSION``.
    """
    data = eval_set(rows, seed)
    config = config_of(model)
    img = encode_images(model, load_images(data.get_column("image").to_list(), config), device=device)
    txt = encode_texts(model, tokenize(data.get_column("text").to_list(), config), device=device)
    rng = np.random.default_rng([seed, 11])
    accuracy = zero_shot(model, img, data, SUITE_ATTRIBUTES, rng, ensemble=ensemble, config=config, device=device)
    out = {f"zeroshot_{attr}": value for attr, value in accuracy.items()}
    sim = (img @ txt.T).numpy()
    target = np.arange(len(sim))
    out["retrieval_image_to_text_r1"] = float((sim.argmax(1) == target).mean())
    out["retrieval_text_to_image_r1"] = float((sim.argmax(0) == target).mean())
    return out


def zero_shot_accuracy(model, *, rows: int = 1000, seed: int = 1, config: TinyConfig | None = None,
                       device: str = "cpu", ensemble: int = 32) -> dict[str, Any]:
    """How well a model knows the demo's attributes, on held-out clean images; chance included.

    The images are ``generate_clean(rows, seed, stream="teacher")`` with a
    seed other than the teacher's (1 by default; the teacher trains on seed
    0), so none was trained on. Three measures:

    - ``words``: zero-shot accuracy per attribute with single-word prompts
      (:data:`PROMPTS` filled with each value: "a red shape", "a circle"); a
      row is right when its true value's prompt is the nearest text.
    - ``captions``: the same with prompt ensembles of ``ensemble`` captions
      (:func:`prototypes`), CLIP's own practice.
    - ``mismatch_auc``: the probability that an image's true caption scores
      higher than a caption whose every attribute is wrong (the demo pool's
      "mismatched" defect); 0.5 is chance.

    Chance for accuracy is 1 / number of values (shape 1/6, color 1/8, size
    1/2, position 1/5, texture 1/3); each dict has ``mean`` and ``chance``.
    """
    config = config or config_of(model)
    data = generate_clean(rows, seed, stream="teacher")
    img = encode_images(model, load_images(data.get_column("image").to_list(), config), device=device)
    rng = np.random.default_rng([seed, 7])
    word_prompts = [template.format(_POSITION_WORDS[value] if attr == "position" else value)
                    for attr, template in PROMPTS.items() for value in synth.ATTRIBUTES[attr]]
    word_emb = encode_texts(model, tokenize(word_prompts, config), device=device)
    truth = {attr: codes(data, attr) for attr in PROMPTS}
    words: dict[str, float] = {}
    start = 0
    for attr in PROMPTS:
        stop = start + len(synth.ATTRIBUTES[attr])
        words[attr] = round(float(((img @ word_emb[start:stop].T).argmax(1).numpy() == truth[attr]).mean()), 4)
        start = stop
    captions = {attr: round(value, 4) for attr, value in
                zero_shot(model, img, data, PROMPTS, rng, ensemble=ensemble, config=config, device=device).items()}
    chance = [1 / len(synth.ATTRIBUTES[attr]) for attr in PROMPTS]
    for table in (words, captions):
        table["mean"] = round(float(np.mean([table[a] for a in PROMPTS])), 4)
        table["chance"] = round(float(np.mean(chance)), 4)
    wrong = {a: (c + rng.integers(1, len(synth.ATTRIBUTES[a]), len(c))) % len(synth.ATTRIBUTES[a]) for a, c in truth.items()}
    true_txt = encode_texts(model, tokenize(data.get_column("text").to_list(), config), device=device)
    wrong_txt = encode_texts(model, tokenize(synth.caption(wrong, "coco", rng), config), device=device)
    matched = (img * true_txt).sum(1).numpy()
    mismatched = (img * wrong_txt).sum(1).numpy()
    auc = float((matched[:, None] > mismatched[None, :]).mean() + 0.5 * (matched[:, None] == mismatched[None, :]).mean())
    return {"words": words, "captions": captions, "mismatch_auc": round(auc, 4)}
