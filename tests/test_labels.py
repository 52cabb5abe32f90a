"""Confident-learning scorers (``label_quality``, ``label_issue``) through cleanlab.

The scorers are checked against an independent computation: scikit-learn's
own cross-validation (``cross_val_predict`` over the same stratified,
seeded folds, rows in id-hash order) gives the out-of-sample predicted
probabilities, and cleanlab's functions turn them into the expected scores.
On an easy separable pool with flipped labels, the flips are found.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from cbdsl.scorers.api import RunError
from cbdsl.scorers.api import ScoreContext
from cbdsl.scorers import labels as label_scorers
from cbdsl.scorers.models.kmeans import canonical_order
from cbdsl.scorers.registry import registry
from conftest_pools import make_pool, policy, run_policy

N, D, K, FLIPS = 300, 8, 3, 15


def ids(n: int) -> list[str]:
    return [f"r{i:04d}" for i in range(n)]


@pytest.fixture(scope="module")
def labelled():
    """Three well-separated Gaussian classes in 8-D, 15 labels flipped to another class."""
    rng = np.random.default_rng(0)
    means = 4.0 * np.eye(K, D)
    truth = np.repeat(np.arange(K), N // K)
    x = (means[truth] + 0.5 * rng.standard_normal((N, D))).astype(np.float32)
    flipped = np.sort(rng.choice(N, FLIPS, replace=False))
    given = truth.copy()
    given[flipped] = (truth[flipped] + rng.integers(1, K, FLIPS)) % K
    names = np.array(["cat", "dog", "fox"])
    return x, names[given], flipped


@pytest.fixture(scope="module")
def pool(tmp_path_factory, labelled):
    x, given, _ = labelled
    return make_pool(tmp_path_factory.mktemp("labels") / "p", {
        "id": ids(N), "emb": [list(map(float, r)) for r in x], "label": given.tolist()})


def expected_pred_probs(x: np.ndarray, given: np.ndarray, folds: int = 5, seed: int = 0):
    """Independent: rows in id-hash order, scikit-learn's cross_val_predict on the same folds."""
    order = canonical_order(pl.Series(ids(len(x))))
    classes, y = np.unique(given[order], return_inverse=True)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    folds_ = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(clf, x[order], y, cv=folds_, method="predict_proba")
    return order, y, probs


def values(expr: str, pool) -> dict[str, float]:
    _c, result = run_policy(policy(f"select top {expr}"), pool)
    sel = result.selection
    return dict(zip(sel.get_column("id").to_list(), sel.get_column("score").to_list()))


def test_label_quality_is_cleanlabs_score_of_cross_validated_probabilities(labelled, pool) -> None:
    x, given, _ = labelled
    order, y, probs = expected_pred_probs(x, given)
    want = get_label_quality_scores(y, probs)
    got = values("label_quality(emb, label)", pool)
    assert [got[f"r{i:04d}"] for i in order] == pytest.approx(want.tolist(), abs=1e-9)
    margin = values('label_quality(emb, label, method="normalized_margin")', pool)
    want_margin = get_label_quality_scores(y, probs, method="normalized_margin")
    # scikit-learn keeps float32 features in float32, so its probabilities carry float32 rounding
    assert [margin[f"r{i:04d}"] for i in order] == pytest.approx(want_margin.tolist(), abs=1e-6)


def test_label_issue_finds_the_flipped_labels(labelled, pool) -> None:
    x, given, flipped = labelled
    order, y, probs = expected_pred_probs(x, given)
    want = find_label_issues(y, probs)
    _c, result = run_policy(policy("filter label_issue(emb, label)"), pool)
    found = set(result.selection.get_column("id").to_list())
    assert found == {f"r{order[i]:04d}" for i in np.flatnonzero(want)}
    truth = {f"r{i:04d}" for i in flipped}
    assert len(found & truth) / len(truth) >= 0.9  # recall on an easy separable case
    assert len(found - truth) <= 3  # and few clean rows taken for issues


def test_filter_not_label_issue_end_to_end(labelled, pool) -> None:
    _x, _given, flipped = labelled
    _c, result = run_policy(policy("filter not label_issue(emb, label)"), pool)
    kept = set(result.selection.get_column("id").to_list())
    assert not kept & {f"r{i:04d}" for i in flipped}
    assert len(kept) >= N - FLIPS - 3
    quality = values("label_quality(emb, label)", pool)
    flipped_ids = {f"r{i:04d}" for i in flipped}
    assert max(quality[r] for r in flipped_ids) < min(q for r, q in quality.items() if r not in flipped_ids) + 0.5
    assert np.mean([quality[r] for r in flipped_ids]) < 0.2 < np.mean([q for r, q in quality.items() if r not in flipped_ids])


def test_text_features(tmp_path) -> None:
    """Text is turned into TF-IDF features; flipped labels of two obvious topics are found."""
    rng = np.random.default_rng(1)
    pets = ["cat", "dog", "kitten", "puppy", "pet", "fur", "leash", "vet"]
    money = ["stock", "market", "price", "bond", "trade", "bank", "fund", "yield"]
    texts, truth = [], []
    for i in range(120):
        words = pets if i % 2 == 0 else money
        texts.append(" ".join(rng.choice(words, 6)))
        truth.append("pets" if i % 2 == 0 else "money")
    given = list(truth)
    flipped = [3, 10, 47, 88]
    for i in flipped:
        given[i] = "money" if given[i] == "pets" else "pets"
    text_pool = make_pool(tmp_path / "t", {"id": ids(120), "text": texts, "label": given})
    _c, result = run_policy(policy("filter label_issue(text, label)"), text_pool)
    assert set(result.selection.get_column("id").to_list()) == {f"r{i:04d}" for i in flipped}


def context(params: dict, n: int, workdir=None) -> ScoreContext:
    entry = registry().get("label_quality")
    return ScoreContext(params=entry.params.model_validate(params), pool=None, ids=pl.Series(ids(n)),
                        workdir=workdir)


def test_threads_do_not_change_the_scores(labelled) -> None:
    x, given, _ = labelled
    emb = pl.Series("emb", [list(map(float, r)) for r in x]).list.to_array(D)
    lab = pl.Series("label", given.tolist())
    runs = []
    for n in (1, 2):
        with threadpool_limits(n):
            runs.append(label_scorers.label_quality(context({}, N), emb, lab).to_numpy().tobytes())
    assert runs[0] == runs[1]


def test_nulls_and_integer_labels(labelled) -> None:
    x, given, _ = labelled
    emb = pl.Series("emb", [None if i == 5 else list(map(float, r)) for i, r in enumerate(x)])
    lab = pl.Series("label", [None if i == 7 else ["cat", "dog", "fox"].index(g)
                              for i, g in enumerate(given)])
    got = label_scorers.label_quality(context({}, N), emb, lab)
    assert got.null_count() == 2 and got[5] is None and got[7] is None
    assert got.drop_nulls().is_between(0.0, 1.0).all()


def test_pred_probs_are_cached(labelled, tmp_path) -> None:
    x, given, _ = labelled
    emb = pl.Series("emb", [list(map(float, r)) for r in x]).list.to_array(D)
    lab = pl.Series("label", given.tolist())
    first = label_scorers.label_quality(context({}, N, tmp_path), emb, lab)
    assert len(list(tmp_path.glob("cv-logreg-*.npy"))) == 1
    again = label_scorers.label_quality(context({}, N, tmp_path), emb, lab)
    assert first.to_list() == again.to_list()


def test_errors(labelled) -> None:
    x, _given, _ = labelled
    emb = pl.Series("emb", [list(map(float, r)) for r in x]).list.to_array(D)
    with pytest.raises(RunError, match="at least two classes"):
        label_scorers.label_quality(context({}, N), emb, pl.Series("label", ["cat"] * N))
    tiny = pl.Series("label", ["a", "b", "a", "b"])
    with pytest.raises(RunError, match="needs a class with at least 5 rows"):
        label_scorers.label_quality(context({}, 4), emb[:4], tiny)
