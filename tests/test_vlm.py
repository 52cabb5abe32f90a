"""The mini vision-language model: its conversation layout, its loss mask, reproducible training, scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbdsl.pipelines.data import demo_it
from cbdsl.scorers.models import vlm, vlm_eval
from cbdsl.scorers.models.vlm_recipe import VLMConfig, VLMRecipe

SMALL = VLMConfig(vocab=300, width=32, layers=1, heads=2, context=96, visual_tokens=2)


def build(seed: int) -> vlm.MiniVLM:
    from cbdsl.scorers.models import tinyclip

    return vlm.build(SMALL, seed, tinyclip.build(tinyclip.MINI, seed=0).visual, tinyclip.MINI.embed_dim)


@pytest.fixture(scope="module")
def data():
    d = demo_it.generate_demo_it(200, seed=0)
    texts = [t["value"] for r in d.records for t in r["conversations"]]
    tok = vlm.train_tokenizer(texts, SMALL.vocab)
    turns = [vlm.turns_of(r) for r in d.records]
    images = [d.images.get(r.get("image")) for r in d.records]
    return tok, turns, images, vlm.encode(tok, turns, images, SMALL)


def test_the_tokenizer_is_deterministic_and_round_trips(data):
    tok = data[0]
    texts = ["What color is the shape?", "Ein großes blaues Dreieck.", "[0.13, 0.57, 0.43, 0.87]"]
    assert vlm.train_tokenizer(texts * 3, 280).to_str() == vlm.train_tokenizer(texts * 3, 280).to_str()
    for text in texts:
        assert vlm.decode(tok, tok.encode(text).ids) == text


def test_only_answers_and_their_end_are_counted(data):
    tok = data[0]
    ids, target = vlm.encode_conversation(tok, [("Q one?", "A one."), ("Q two?", "A two.")], 200)
    counted = [i for i, t in zip(ids, target) if t]
    assert vlm.decode(tok, counted) == "A one. A two."
    assert [i for i, t in zip(ids, target) if t and i == vlm.EOS] == [vlm.EOS, vlm.EOS]
    text = vlm.decode(tok, ids)
    assert text == "USER: Q one? ASSISTANT: A one. USER: Q two? ASSISTANT: A two."


def test_turns_of_a_llava_record():
    record = {"id": "1", "image": "x.png", "conversations": [
        {"from": "gpt", "value": "skipped"}, {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."},
        {"from": "human", "value": "Q2?"}, {"from": "gpt", "value": "A2."}]}
    assert vlm.turns_of(record) == [("Q?", "A."), ("Q2?", "A2.")]


def test_training_is_reproducible_and_learns(data):
    _, _, _, enc = data
    recipe = VLMRecipe(steps=12, batch_size=16, lr=3e-3, warmup=2, seed=0, threads=1, freeze_vision=False)
    before = vlm.answer_losses(build(0), enc, threads=1)
    a = vlm.train(build(0), enc, recipe)
    b = vlm.train(build(0), enc, recipe)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    after = vlm.answer_losses(a, enc, threads=1)
    assert np.nanmean(after) < np.nanmean(before)
    frozen = build(0)
    vision = {k: v.clone() for k, v in frozen.state_dict().items() if k.startswith("vision.")}
    assert vision
    vlm.train(frozen, enc, VLMRecipe(steps=2, batch_size=16, threads=1, freeze_vision=True))
    assert all(torch.equal(frozen.state_dict()[k], v) for k, v in vision.items())


def test_answer_losses_are_the_mean_over_answer_tokens(data):
    tok, turns, images, enc = data
    model = build(1)
    losses = vlm.answer_losses(model, enc, batch_size=7, threads=1)
    i = 5
    ids, target = vlm.encode_conversation(tok, turns[i], SMALL.context - SMALL.visual_tokens)
    pixels, _ = vlm.load_images([images[i]])
    with torch.no_grad():
        logits = model(torch.tensor([ids]), pixels)[0, SMALL.visual_tokens:]
    logp = torch.log_softmax(logits[:-1].double(), -1)
    picked = [-float(logp[k, ids[k + 1]]) for k in range(len(ids) - 1) if target[k + 1]]
    assert losses[i] == pytest.approx(np.mean(picked), rel=1e-5)


def test_generation_and_choices_agree_with_the_logits(data):
    tok, _, images, enc = data
    model = build(2)
    pixels, _ = vlm.load_images(images[:4])
    questions = ["What color is the shape?", "Is there a ring in the image?", "What color is the shape?", "Hi"]
    out = vlm.generate(model, tok, questions, pixels, max_new=3)
    prompt = [vlm.BOS] + tok.encode(vlm.prompt(questions[0])).ids
    with torch.no_grad():
        first = int(model(torch.tensor([prompt]), pixels[:1])[0, -1].argmax())
    assert out[0].startswith(vlm.decode(tok, [first])) or first <= vlm.EOS
    picked = vlm.choice_scores(model, tok, questions[:2], [["red", "blue"], ["yes", "no"]], pixels[:2])
    assert all(p in (0, 1) for p in picked)


def test_scoring_rules():
    assert vlm_eval.normalise(" Red. ") == "red"
    assert vlm_eval.box_of("[0.13, 0.13, 0.43, 0.43]") == [0.13, 0.13, 0.43, 0.43]
    assert vlm_eval.box_of("[0.5, 0.1, 0.2, 0.3]") is None and vlm_eval.box_of("left") is None
    assert vlm_eval.iou([0, 0, 1, 1], [0, 0, 1, 1]) == 1 and vlm_eval.iou([0, 0, 1, 1], [0.5, 0, 1.5, 1]) == pytest.approx(1 / 3)
    assert vlm_eval.f1_yes(["yes", "no", "yes"], ["yes", "yes", "no"]) == pytest.approx(0.5)
    assert vlm_eval.f1_yes(["no"], ["yes"]) == 0.0
