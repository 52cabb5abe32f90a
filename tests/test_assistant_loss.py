"""The language proxy on (question, answer) pairs (`proxy="tiny-lm"`): loss, EL2N, GraNd and influence count the
answer's tokens only, the question being context. Checked against a masked computation written here, on the
proxy trained by the scorer itself."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from cbdsl.pipelines.data.writing import add_asset
from cbdsl.scorers.api import RunError
from cbdsl.scorers.models import lm
from cbdsl.scorers.models.proxy import grad_norm, pair_sequences, prepare, reproducible
from conftest_pools import make_pool, run_policy

N = 40
QUESTIONS = [f"What does row {i} say about the {'cat' if i % 3 else 'dog'}?" for i in range(N)]
ANSWERS = [f"It ({i}) says {'meow' * (i % 4)} and {'woof ' * (i % 3)}." for i in range(N)]
QUESTIONS[5] = "Q" * 200  # longer than the window: only its last bytes stay
ANSWERS[6] = "A long answer. " * 20  # cut at the window's end
QUESTIONS[7], ANSWERS[8] = None, None
QUESTIONS[9], ANSWERS[9] = "An entirely different question about birds?", ANSWERS[10]  # same answer as row 10


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    frame = pl.DataFrame({"id": [f"r{i:03d}" for i in range(N)], "question": QUESTIONS, "answer": ANSWERS,
                          "text": [f"{q}\n{a}" if q and a else None for q, a in zip(QUESTIONS, ANSWERS)]})
    made = make_pool(root / "t", frame)
    target = pl.DataFrame({"question": ["What does the cat say?", "What does the dog say?"],
                           "answer": ["It says meow.", "It says woof."]})
    target.write_parquet(root / "target.parquet")
    add_asset(made.path, "target-tasks", root / "target.parquet", kind="table")
    return type(made).open(made.path)


def _scores(pool, call: str) -> np.ndarray:
    _c, result = run_policy(f'pool "t"\nlet s = {call}\nselect top s\n', pool, explain=True)
    return result.frame.sort("id")["s"].to_numpy()


def _sequence(question: str, answer: str, window: int = 128) -> tuple[list[int], int]:
    """The documented layout, written out: EOS, the question's last bytes, EOS, the answer's bytes, EOS."""
    q = [b + lm.BYTE_OFFSET for b in question.encode()]
    a = [b + lm.BYTE_OFFSET for b in answer.encode()] + [lm.EOS]
    room = window - 3
    keep = min(len(q), max(room // 2, room - (len(a) - 1)))
    q = q[len(q) - keep:]
    return ([lm.EOS, *q, lm.EOS, *a])[:window], len(q) + 2


def _trained(pool, epochs=1, seed=0, batch_size=8):
    frame = pool.scan().collect()
    prep = prepare(frame["id"], [frame["question"], frame["answer"]], batch_size, None, "tiny-lm")
    model = prep.proxy.build(seed)
    with reproducible():
        prep.proxy.train(model, prep.data, epochs=epochs, seed=seed)
    return frame, prep, model


def test_pair_layout_and_mask():
    seqs, first = pair_sequences(QUESTIONS, ANSWERS, 128)
    for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS, strict=True)):
        if q is None or a is None:
            assert seqs[i] is None
            continue
        expected, start = _sequence(q, a)
        assert seqs[i].tolist() == expected and first[i] == start and len(expected) <= 128
        scored = bytes(b - lm.BYTE_OFFSET for b in seqs[i][first[i]:] if b != lm.EOS).decode()
        assert a.startswith(scored) and (scored == a or len(seqs[i]) == 128)  # the answer, never the question
    keep = 125 - len(ANSWERS[5].encode())  # a long question fills what the answer leaves of the window
    assert first[5] == 2 + keep and len(seqs[5]) == 128 and seqs[5][1:first[5] - 1].tolist() == [ord("Q") + 3] * keep
    assert first[6] == 2 + len(QUESTIONS[6].encode()) and len(seqs[6]) == 128  # a long answer is cut at the end


def test_loss_el2n_grand_are_the_answer_token_formulas_of_the_trained_proxy(pool):
    """The scorer's per-row loss is the masked mean NLL of the model it trained (rebuilt here from the same
    seed); EL2N and the last-layer gradient norm are the same token average, over answer tokens only."""
    loss = _scores(pool, 'loss(question, answer, proxy="tiny-lm", epochs=1, batch_size=8)')
    frame, prep, model = _trained(pool)
    by_id = {f"r{i:03d}": i for i in range(N)}  # the scores are sorted by id
    order = prep.order[prep.valid]  # input row of each prepared row
    rows = np.arange(prep.rows)[:12]
    m = prep.proxy.measure(model, prep.data, rows)
    for r in rows:
        i = int(order[r])
        seq, start = _sequence(frame["question"][i], frame["answer"][i])
        ids = torch.tensor([seq])
        hidden = model.transformer(input_ids=ids).last_hidden_state[0, :-1].detach()
        w = model.lm_head.weight.detach().clone().requires_grad_(True)
        logits = hidden @ w.T
        target = ids[0, 1:]
        answer = slice(start - 1, None)  # target t is token t + 1: the answer's tokens from `start` on
        ce = F.cross_entropy(logits[answer], target[answer])
        p = torch.softmax(logits.detach()[answer].double(), -1).numpy()
        el2n = np.linalg.norm(p - np.eye(p.shape[1])[target[answer].numpy()], axis=1).mean()
        (grad,) = torch.autograd.grad(ce, w)
        assert loss[by_id[frame["id"][i]]] == pytest.approx(ce.item(), rel=1e-4)
        assert m.loss[r] == pytest.approx(ce.item(), rel=1e-4)
        assert m.el2n[r] == pytest.approx(el2n, rel=1e-4)
        assert grad_norm(m.blocks)[r] == pytest.approx(grad.norm().item(), rel=1e-4)
        g, _h = m.blocks[0]
        assert g[r - rows[0], :start - 1].abs().max() == 0  # no gradient from a question position
    assert np.isnan(loss[7]) and np.isnan(loss[8])  # a null question or answer: no score


def test_the_question_changes_the_loss_of_the_same_answer(pool):
    loss = _scores(pool, 'loss(question, answer, proxy="tiny-lm", epochs=1, batch_size=8)')
    assert ANSWERS[9] == ANSWERS[10] and QUESTIONS[9] != QUESTIONS[10]
    assert loss[9] != loss[10]
    el2n = _scores(pool, 'el2n(question, answer, proxy="tiny-lm", epochs=1, seeds=1, batch_size=8)')
    assert el2n[9] != el2n[10] and np.isfinite(el2n[[0, 1, 2, 5, 6]]).all()


def test_question_bytes_never_count(pool):
    """Rewriting a question's bytes moves its answer's loss only through the context: the number of scored
    tokens, and so the mean's divisor, stays the answer's."""
    frame, prep, model = _trained(pool)
    seqs, first = prep.data
    for r in range(prep.rows):
        scored = prep.proxy._forward(model, prep.data, np.array([r]))[3][0]
        i = int(prep.order[prep.valid][r])
        assert scored.sum().item() == min(len(ANSWERS[i].encode()) + 1, len(seqs[r]) - int(first[r]))
        assert scored[:int(first[r]) - 1].sum().item() == 0


def test_text_alone_is_unchanged_by_the_tiny_lm_proxy(pool):
    """`(text)` picks the same byte GPT-2: proxy="tiny-lm" gives the same scores (one trace, one training)."""
    plain = _scores(pool, "loss(text, epochs=1, batch_size=16)")
    traces = sorted(pool.scores_dir.rglob("dynamics-*.npz"))
    named = _scores(pool, 'loss(text, proxy="tiny-lm", epochs=1, batch_size=16)')
    assert plain.tobytes() == named.tobytes()
    assert traces and sorted(pool.scores_dir.rglob("dynamics-*.npz")) == traces  # read back, not trained again


def test_influence_of_pairs_reads_question_and_answer_targets(pool):
    a = _scores(pool, 'influence(question, answer, proxy="tiny-lm", target="target-tasks", epochs=1, warmup=0.5, '
                      "batch_size=8, dims=256)")
    b = _scores(pool, 'influence(question, answer, proxy="tiny-lm", target="target-tasks", epochs=1, warmup=0.5, '
                      "batch_size=8, dims=256)")
    assert a.tobytes() == b.tobytes()
    valid = ~np.isnan(a)
    assert valid.sum() == N - 2 and np.unique(a[valid]).size > N // 2


def test_two_texts_without_tiny_lm_are_a_clear_error(pool):
    with pytest.raises(RunError, match="distinct values") as err:
        _scores(pool, "loss(question, answer, epochs=1)")
    assert 'proxy="tiny-lm"' in err.value.hints[0]
    with pytest.raises(RunError, match=r'`proxy="tiny-lm"` reads \(text\) or \(question, answer\)'):
        _scores(pool, 'loss(question, answer, text, proxy="tiny-lm")')
