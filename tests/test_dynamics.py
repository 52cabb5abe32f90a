"""Training-dynamics scorers (EL2N, GraNd, loss, forgetting): each proxy's measurement against the paper's
formula computed independently (NumPy, or per-sample autograd), Toneva's count from a recorded run, seed
averaging, determinism, and the policy-level behaviour (nulls, bad inputs)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from cbdsl.stages import check_source
from cbdsl.scorers.api import RunError
from cbdsl.scorers.models.proxy import grad_norm, prepare
from conftest_pools import make_pool, run_policy

rng = np.random.default_rng(0)
N = 48
EMB = rng.normal(size=(N, 8)).astype(np.float32)
LABELS = (EMB[:, 0] + 0.5 * rng.normal(size=N) > 0).astype(np.int64)
LABELS[:6] = 2  # a third class
TEXTS = [f"sample {i} says {'ab' * (i % 5)} the end" for i in range(N)]


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    frame = pl.DataFrame({"id": [f"r{i:03d}" for i in range(N)], "emb": EMB.tolist(), "label": LABELS,
                          "text": TEXTS}, schema_overrides={"emb": pl.Array(pl.Float32, 8)})
    return make_pool(tmp_path_factory.mktemp("labelled") / "t", frame)


def _decodes(data) -> bool:
    from PIL import Image

    try:
        Image.open(__import__("io").BytesIO(data)).convert("RGB")
        return True
    except Exception:  # noqa: BLE001
        return False


def _prepared(pool, *cols, batch_size=16):
    frame = pool.scan().collect()
    return prepare(frame["id"], [frame[c] for c in cols], batch_size)


def test_classifier_el2n_loss_grand_match_the_formulas(labelled):
    prep = _prepared(labelled, "emb", "label")
    model = prep.proxy.build(3)
    prep.proxy.train(model, prep.data, epochs=2, seed=3)
    rows = prep.batches(16)[0]
    m = prep.proxy.measure(model, prep.data, rows)
    x, y = (t.numpy() for t in prep.data)
    w1, b1 = model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy()
    w2, b2 = model.head.weight.detach().numpy(), model.head.bias.detach().numpy()
    h = np.maximum(x[rows] @ w1.T + b1, 0)
    p = _softmax(h @ w2.T + b2)
    onehot = np.eye(p.shape[1])[y[rows]]
    np.testing.assert_allclose(m.el2n, np.linalg.norm(p - onehot, axis=1), rtol=1e-5)
    np.testing.assert_allclose(m.loss, -np.log(p[np.arange(len(rows)), y[rows]]), rtol=1e-5)
    # DeepCore: ||[g, g (x) h]|| = ||g|| sqrt(1 + ||h||^2)
    deepcore = np.linalg.norm(p - onehot, axis=1) * np.sqrt(1 + (h ** 2).sum(1))
    np.testing.assert_allclose(grad_norm(m.blocks), deepcore, rtol=1e-5)
    # ... which is the per-sample gradient of the loss with respect to the last layer's weight and bias
    for r, i in enumerate(rows[:4]):
        model.zero_grad()
        F.cross_entropy(model(prep.data[0][i:i + 1]), prep.data[1][i:i + 1]).backward()
        direct = torch.cat([model.head.weight.grad.flatten(), model.head.bias.grad]).norm().item()
        assert direct == pytest.approx(deepcore[r], rel=1e-5)


def test_contrastive_measure_is_in_batch_infonce_and_own_path_projection_gradient(tmp_path):
    from cbdsl.pipelines.data.demo import make_demo
    from cbdsl.pipelines.data.pool import Pool

    make_demo(tmp_path / "demo", rows=60)
    pool = Pool.open(tmp_path / "demo")
    prep = _prepared(pool, "image", "text", batch_size=8)
    assert prep.proxy.kind == "contrastive"
    assert prep.rows == sum(_decodes(b) for b in pool.scan(["image"]).collect()["image"])  # corrupt ones are out
    model = prep.proxy.build(0)
    rows = prep.batches(8)[1]
    m = prep.proxy.measure(model, prep.data, rows)
    model.eval()
    img = F.normalize(model.encode_image(prep.data[0][rows]), dim=-1).detach().numpy()
    txt = F.normalize(model.encode_text(prep.data[1][rows]), dim=-1).detach().numpy()
    logits = model.logit_scale.exp().item() * img @ txt.T
    p, q = _softmax(logits), _softmax(logits.T)
    eye = np.eye(len(rows))
    ce = -(np.log(np.diag(p)) + np.log(np.diag(q))) / 2
    np.testing.assert_allclose(m.loss, ce, rtol=1e-4)
    np.testing.assert_allclose(m.el2n, (np.linalg.norm(p - eye, axis=1) + np.linalg.norm(q - eye, axis=1)) / 2, rtol=1e-4)
    assert (m.correct == ((p.argmax(1) == np.arange(len(rows))) & (q.argmax(1) == np.arange(len(rows))))).all()
    # GraNd: per pair, autograd of its own loss with respect to both projections, the other rows detached
    x, t = prep.data[0][rows], prep.data[1][rows]
    for i in range(3):
        model.zero_grad()
        u = F.normalize(model.encode_image(x), dim=-1)
        v = F.normalize(model.encode_text(t), dim=-1)
        own = torch.arange(len(rows)) == i
        u = torch.where(own[:, None], u, u.detach())
        v = torch.where(own[:, None], v, v.detach())
        z = model.logit_scale.exp().detach() * u @ v.T
        loss = (F.cross_entropy(z[i:i + 1], torch.tensor([i])) + F.cross_entropy(z.T[i:i + 1], torch.tensor([i]))) / 2
        gv, gt = torch.autograd.grad(loss, [model.visual.proj, model.text_projection])
        direct = torch.sqrt(gv.pow(2).sum() + gt.pow(2).sum()).item()
        assert grad_norm(m.blocks)[i] == pytest.approx(direct, rel=1e-4)


def test_language_measure_is_token_mean_of_the_formulas(labelled):
    prep = _prepared(labelled, "text")
    assert prep.proxy.kind == "language"
    model = prep.proxy.build(1)
    rows = prep.batches(16)[0][:5]
    m = prep.proxy.measure(model, prep.data, rows)
    for r, i in enumerate(rows):
        ids = torch.from_numpy(prep.data[i])[None]
        hidden = model.transformer(input_ids=ids).last_hidden_state[0, :-1].detach()
        w = model.lm_head.weight.detach().clone().requires_grad_(True)
        logits = hidden @ w.T
        target = ids[0, 1:]
        loss = F.cross_entropy(logits, target)
        p = _softmax(logits.detach().numpy())
        el2n = np.linalg.norm(p - np.eye(p.shape[1])[target.numpy()], axis=1).mean()
        (grad,) = torch.autograd.grad(loss, w)
        assert m.loss[r] == pytest.approx(loss.item(), rel=1e-4)
        assert m.el2n[r] == pytest.approx(el2n, rel=1e-4)
        assert grad_norm(m.blocks)[r] == pytest.approx(grad.norm().item(), rel=1e-4)


def test_forgetting_counts_toneva_transitions_of_the_same_run(labelled):
    """The scorer's count equals one recomputed from the presentations of an identical (seeded) run."""
    epochs = 6
    prep = _prepared(labelled, "emb", "label", batch_size=8)
    model = prep.proxy.build(0)
    seen: dict[int, list[bool]] = {i: [] for i in range(prep.rows)}

    def record(idx, correct, *_):
        for i, c in zip(idx.tolist(), correct.tolist()):
            seen[i].append(bool(c))

    prep.proxy.train(model, prep.data, epochs=epochs, seed=0, hook=record)
    expected = []
    for i in range(prep.rows):
        acc = np.asarray(seen[i], dtype=int)
        expected.append(epochs if not acc.any() else int((np.diff(acc) == -1).sum()))
    scores = _scores(labelled, f"forgetting(emb, label, epochs={epochs}, batch_size=8)")
    by_row = scores.to_numpy()[prep.order]  # canonical order
    np.testing.assert_array_equal(by_row, expected)
    assert max(expected) > 0 and min(expected) < epochs  # the case is not degenerate


def _scores(pool, call: str) -> pl.Series:
    _compiled, result = run_policy(f'pool "t"\nlet s = {call}\nselect top s\n', pool, explain=True)
    frame = result.frame.sort(pool.id_column)
    return frame["s"]


def test_el2n_averages_over_seeds(labelled):
    both = _scores(labelled, "el2n(emb, label, epochs=2, seeds=2, seed=5)").to_numpy()
    first = _scores(labelled, "el2n(emb, label, epochs=2, seeds=1, seed=5)").to_numpy()
    second = _scores(labelled, "el2n(emb, label, epochs=2, seeds=1, seed=6)").to_numpy()
    np.testing.assert_allclose(both, (first + second) / 2, rtol=1e-12)
    assert not np.allclose(first, second)


def test_scores_are_deterministic_bytes(labelled, tmp_path):
    """Same policy, pool and seed: the same score file, byte for byte, after the caches are gone."""
    import shutil

    def fresh() -> bytes:
        shutil.rmtree(labelled.scores_dir, ignore_errors=True)
        _scores(labelled, "loss(text, epochs=1, batch_size=16)")
        (path,) = labelled.scores_dir.glob("loss-*.parquet")
        return path.read_bytes()

    assert fresh() == fresh()


def test_thread_count_does_not_change_the_bytes(labelled):
    """The proxies train on one thread inside the scorer, whatever the caller set (float sums follow threads)."""
    import shutil

    import torch

    runs, before = [], torch.get_num_threads()
    for n in (1, 2):
        torch.set_num_threads(n)
        try:
            shutil.rmtree(labelled.scores_dir, ignore_errors=True)
            runs.append(_scores(labelled, "el2n(emb, label, epochs=1, seeds=1)").to_numpy().tobytes())
        finally:
            torch.set_num_threads(before)
        assert torch.get_num_threads() == before
    assert runs[0] == runs[1]


def test_text_classifier_and_null_rows(tmp_path):
    frame = pl.DataFrame({"id": [f"r{i:03d}" for i in range(N)], "text": [None, *TEXTS[1:]],
                          "label": ["a" if v else "b" for v in LABELS[:-1]] + [None]})
    pool = make_pool(tmp_path / "t", frame)
    scores = _scores(pool, "grand(text, label, epochs=1, seeds=1)")
    assert scores.null_count() == 2 and scores[0] is None and scores[N - 1] is None
    assert (scores.drop_nulls() > 0).all()


def test_bad_inputs_are_a_clear_error(labelled):
    with pytest.raises(RunError, match=r"a proxy model needs \(image, text\)"):
        _scores(labelled, "loss(emb)")


def test_pending_no_more():
    schema = {"id": "str", "image": "binary", "text": "str", "emb": "embedding", "label": "int"}
    for call in ("el2n(image, text)", "grand(emb, label)", "loss(text)", "forgetting(text)"):
        _policy, diags = check_source(f'pool "t"\nlet s = {call}\nselect top s\n', "p.cur", schema)
        assert not [d for d in diags if d.is_error], [d.message for d in diags]
