"""The vision-language proxy on (image, question, answer): loss, EL2N and the head's gradient count the answer's
tokens only, checked against a masked computation written here with the full model (images through the
frozen tower) on the proxy the scorer trained; determinism; the scorer API on a pool with an image folder;
influence targets with image bytes; wrong inputs. A tiny base (a few steps on 64 captions) stands in for the
real one, in this module's tmp folder."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from cbdsl.pipelines.data import demo_it
from cbdsl.pipelines.data.image_folder import Images
from cbdsl.pipelines.data.writing import add_asset, write_pool
from cbdsl.scorers.api import RunError
from cbdsl.scorers.models import vlm, vlm_base, vlm_proxy
from cbdsl.scorers.models.proxy import grad_norm, make_proxy, prepare, reproducible
from cbdsl.scorers.models.vlm_recipe import BaseRecipe, VLMConfig
from conftest_pools import run_policy

CONFIG = VLMConfig(vocab=300, width=32, layers=1, heads=2, context=128, visual_tokens=2)
RECIPE = BaseRecipe(steps=4, batch_size=16, lr=2e-3, warmup=2, seed=0, threads=1, rows=64, clip_steps=4,
                    clip_batch=16)
N = 24  # rows of the demo instruction pool, then the hand-made ones below
LONG, NULL_Q, BROKEN, TEXT_ONLY, SAME_A = N, N + 1, N + 2, N + 3, N + 4
SCORE = "epochs=1, seeds=1, batch_size=8"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tiny base, made the module's default; one torch thread (the proxy's fixed count is the real one's)."""
    chosen = vlm_proxy.Base(CONFIG, RECIPE, tmp_path_factory.mktemp("vlm-base"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vlm_proxy, "BASE", chosen)
        patch.setattr(vlm_proxy, "THREADS", 1)
        yield chosen


@pytest.fixture(scope="module")
def rows():
    """(ids, image paths, questions, answers, {path: bytes}): demo rows and the edge cases."""
    d = demo_it.generate_demo_it(200, seed=0)
    frame = d.pool.head(N)
    paths, questions, answers = frame["image"].to_list(), frame["question"].to_list(), frame["answer"].to_list()
    files = {p: d.images[p] for p in paths if p is not None}
    some = next(p for p in paths if p is not None)
    paths += [some, some, "broken/not-an-image.png", None, some]
    questions += ["What is shown? " * 80, None, "What colour is the shape?", "What is two plus two?",
                  "A different question about the same picture?"]
    answers += ["A shape.", "Red.", "Blue.", "Four.", answers[paths.index(some)]]
    questions[paths.index(some)] = "What colour is the shape?"  # SAME_A: the same image and answer, another question
    files["broken/not-an-image.png"] = b"not an image"
    ids = [f"r{i:03d}" for i in range(len(paths))]
    return ids, paths, questions, answers, files


@pytest.fixture(scope="module")
def pool(tmp_path_factory, rows, base):
    ids, paths, questions, answers, files = rows
    root = tmp_path_factory.mktemp("vlp")
    for rel, data in files.items():
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "images" / rel).write_bytes(data)
    frame = pl.DataFrame({"id": ids, "image": paths, "question": questions, "answer": answers,
                          "text": [f"{q} {a}" for q, a in zip(questions, answers)]},
                         schema={"id": pl.String, "image": pl.String, "question": pl.String, "answer": pl.String,
                                 "text": pl.String})
    made = write_pool(frame, root / "t", name="t", images=Images(root / "images", move=True))
    some = next(p for p in paths if p is not None)
    target = pl.DataFrame({"image": [files[some], None], "question": ["What colour is the shape?", "What is 1 + 1?"],
                           "answer": ["Red.", "Two."]}, schema={"image": pl.Binary, "question": pl.String,
                                                                 "answer": pl.String})
    target.write_parquet(root / "target.parquet")
    add_asset(made.path, "target-tasks", root / "target.parquet", kind="table")
    target.with_columns(pl.lit(some).alias("image")).write_parquet(root / "by-path.parquet")
    add_asset(made.path, "target-paths", root / "by-path.parquet", kind="table")
    return type(made).open(made.path)


def _scores(pool, call: str) -> np.ndarray:
    _c, result = run_policy(f'pool "t"\nlet s = {call}\nselect top s\n', pool, explain=True)
    return result.frame.sort("id")["s"].to_numpy()


def _inputs(pool):
    frame = pool.scan().collect()
    images = pl.Series("image", pool.read_images(frame["image"].to_list()), dtype=pl.Binary)
    return frame, [images, frame["question"], frame["answer"]]


def _trained(pool, seed=0):
    frame, inputs = _inputs(pool)
    prep = prepare(frame["id"], inputs, 8)
    model = prep.proxy.build(seed)
    with reproducible():
        prep.proxy.train(model, prep.data, epochs=1, seed=seed)
    return frame, prep, model


def _direct(model, tok, image: bytes | None, question: str, answer: str):
    """The documented computation, written out: the whole model (the tower too) on one row in eval mode; the
    answer tokens' NLL, EL2N, and the gradient of their mean NLL with respect to the (tied) head alone."""
    ids, target = vlm.encode_conversation(tok, [(question, answer)], CONFIG.context - CONFIG.visual_tokens)
    pixels, _has = vlm.load_images([image])
    model.eval()
    with torch.no_grad():
        h = model.hidden(torch.tensor([ids]), model.visual_tokens(pixels))[0, CONFIG.visual_tokens:-1]
    w = model.embed.weight.detach().clone().requires_grad_(True)
    counted = torch.tensor(target[1:])
    nxt = torch.tensor(ids[1:])
    logits = (h @ w.T)[counted]
    ce = F.cross_entropy(logits, nxt[counted])
    (grad,) = torch.autograd.grad(ce, w)
    p = torch.softmax(logits.detach().double(), -1).numpy()
    el2n = np.linalg.norm(p - np.eye(p.shape[1])[nxt[counted].numpy()], axis=1).mean()
    return ce.item(), el2n, grad.norm().item(), int(counted.sum())


def test_the_inputs_pick_the_vision_language_proxy_and_its_key_names_the_base(pool):
    _frame, inputs = _inputs(pool)
    proxy = make_proxy(inputs, 8)
    assert isinstance(proxy, vlm_proxy.VisionLanguageProxy) and proxy.lr == vlm_proxy.LR
    assert proxy.key()["base"] == vlm_base.base_key(CONFIG, RECIPE) != vlm_base.base_key()


def test_loss_el2n_grand_are_the_answer_token_formulas_of_the_trained_proxy(pool, rows):
    """The scorer's per-row loss is the masked mean NLL of the model it trained (rebuilt here: the same base,
    seed and data order), computed with images through the tower; EL2N and the head's gradient norm too."""
    loss = _scores(pool, f"loss(image, question, answer, {SCORE})")
    frame, prep, model = _trained(pool)
    _m, tok = prep.proxy._base()
    _ids, _paths, questions, answers, files = rows
    order = prep.order[prep.valid]  # input row of each prepared row
    measured = prep.proxy.measure(model, prep.data, np.arange(prep.rows))
    norms = grad_norm(measured.blocks)
    for r in range(prep.rows):
        i = int(order[r])
        path = frame["image"][i]
        ce, el2n, gnorm, _count = _direct(model, tok, files[path] if path else None, questions[i], answers[i])
        assert loss[i] == pytest.approx(ce, rel=1e-4)
        assert measured.loss[r] == pytest.approx(ce, rel=1e-4)
        assert measured.el2n[r] == pytest.approx(el2n, rel=1e-4)
        assert norms[r] == pytest.approx(gnorm, rel=1e-4)
    assert np.isfinite(loss[TEXT_ONLY])  # a null image is a zero image, not a null score
    assert np.isnan(loss[[LONG, NULL_Q, BROKEN]]).all()  # no answer token in the context, null question, bad file
    assert prep.rows == len(loss) - 3


def test_question_tokens_never_count(pool, rows):
    """Only the answer's tokens and its end are counted, in training and in every measurement; the question
    moves an answer's loss through the context alone."""
    frame, prep, model = _trained(pool)
    _m, tok = prep.proxy._base()
    _features, ids, target, length = prep.data
    order = prep.order[prep.valid]
    measured = prep.proxy.measure(model, prep.data, np.arange(prep.rows))
    g, _h = measured.blocks[0]
    for r in range(prep.rows):
        i = int(order[r])
        answer, n = rows[3][i], int(length[r])
        counted = target[r, 1:n]
        scored = ids[r, 1:n][counted].tolist()
        full = n < CONFIG.context - CONFIG.visual_tokens  # else the answer may be cut at the window's end
        assert scored[-1] == vlm.EOS or not full
        assert vlm.decode(tok, scored) == answer.strip() if full else answer.startswith(vlm.decode(tok, scored)[:-1])
        first = int(counted.float().argmax())
        assert not counted[:first].any() and counted[first:].all()  # one run of answer tokens, at the end
        assert g[r, :first].abs().max() == 0 and g[r, first:int(length[r]) - 1].abs().sum() > 0
    loss = _scores(pool, f"loss(image, question, answer, {SCORE})")
    same = rows[1].index(rows[1][SAME_A])
    assert rows[3][same] == rows[3][SAME_A] and rows[1][same] == rows[1][SAME_A] and rows[2][same] != rows[2][SAME_A]
    assert loss[same] != loss[SAME_A]


def test_the_same_seed_gives_the_same_scores(pool):
    """Training twice from the base with one seed gives the same weights; a second scorer run from an empty
    cache gives the same bytes; another seed orders the data otherwise."""
    _f, _p, a = _trained(pool, seed=0)
    _f, _p, b = _trained(pool, seed=0)
    _f, _p, c = _trained(pool, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    first = _scores(pool, f"el2n(image, question, answer, {SCORE})")
    for path in sorted(pool.scores_dir.rglob("*")):
        if path.is_file():
            path.unlink()
    again = _scores(pool, f"el2n(image, question, answer, {SCORE})")
    assert first.tobytes() == again.tobytes()


def test_el2n_grand_forgetting_influence_through_the_scorer_api(pool):
    el2n = _scores(pool, f"el2n(image, question, answer, {SCORE})")
    valid = ~np.isnan(el2n)
    assert valid.sum() == len(el2n) - 3 and ((el2n[valid] > 0) & (el2n[valid] < np.sqrt(2))).all()
    grand = _scores(pool, f"grand(image, question, answer, {SCORE})")
    forgetting = _scores(pool, f"forgetting(image, question, answer, {SCORE})")
    assert (grand[valid] > 0).all() and set(np.unique(forgetting[valid])) <= {0.0, 1.0}
    call = 'influence(image, question, answer, target="target-tasks", epochs=1, warmup=0.5, batch_size=8, dims=256)'
    a, b = _scores(pool, call), _scores(pool, call)
    assert a.tobytes() == b.tobytes() and (~np.isnan(a)).sum() == valid.sum() and np.unique(a[valid]).size > 10


def test_a_target_with_image_paths_is_refused(pool):
    with pytest.raises(RunError, match="`image` as String, but the inputs read it as image bytes") as err:
        _scores(pool, 'influence(image, question, answer, target="target-paths", epochs=1, batch_size=8, dims=256)')
    assert "file bytes" in err.value.hints[0]


@pytest.mark.parametrize("call, message, hint", [
    ("loss(question, image, answer)", r"reads \(image, question, answer\) in that order", "loss(image, question, answer)"),
    ("loss(image, question, answer, text)", "a proxy model needs", "el2n(image, question, answer)"),
    ("loss(text, question, answer)", "the first of three inputs holds text", "--image-folder"),
    ('loss(image, question, answer, proxy="tiny-lm")', r'`proxy="tiny-lm"` reads \(text\)', "loss(image, question, answer)"),
])
def test_wrong_inputs_say_what_fits(pool, call, message, hint):
    with pytest.raises(RunError, match=message) as err:
        _scores(pool, call)
    assert hint in err.value.hints[0]
