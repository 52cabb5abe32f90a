"""Label-quality scorers: confident learning (Northcutt et al., 2021) through cleanlab.

For a labelled pool (a ``label`` column and features: an embedding column,
or a text column), two population scorers:

``label_quality(features, label, folds=5, seed=0, method="self_confidence")`` -> float
    ``cleanlab.rank.get_label_quality_scores(labels, pred_probs, method=method)``:
    in [0, 1], low for rows whose given label the model doubts.
``label_issue(features, label, folds=5, seed=0, filter_by="prune_by_noise_rate")`` -> bool
    ``cleanlab.filter.find_label_issues(labels, pred_probs, filter_by=filter_by)``:
    true for the rows confident learning finds mislabelled
    (``filter not label_issue(emb, label)`` is the paper's prune).

``pred_probs`` are out-of-sample: K-fold cross-validation
(``cleanlab.count.estimate_cv_predicted_probabilities``: stratified folds
shuffled with ``seed``) of a logistic regression (scikit-learn,
L2-regularised with C = 1, L-BFGS, at most 1000 iterations) on the
standardised embedding, or on the TF-IDF of the text (word unigrams and
bigrams, sublinear tf; the vocabulary is learnt from every row, labels are
not used for it). Both scorers share one cross-validation for the same
inputs (cached under the score workdir).

Labels may be strings or whole numbers; the classes are the distinct
labels, in sorted order. Rows whose label or features are null get null and
take no part. Rows are ordered by their id hash before the folds are drawn,
so the result does not depend on the pool's row order; it does not depend
on the thread count either (checked in ``tests/test_labels.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cbdsl.scorers.api import RunError
from cbdsl.scorers.geometry import embedding_matrix
from cbdsl.scorers.registry import Input, Params, model_scorer


class FoldParams(Params):
    folds: int = Field(default=5, ge=2, le=100, description="cross-validation folds for the out-of-sample predicted probabilities")
    seed: int = Field(default=0, ge=0, lt=2**32, description="seed of the fold assignment")


class QualityParams(FoldParams):
    method: Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"] = Field(
        default="self_confidence", description="cleanlab's label quality score")


class IssueParams(FoldParams):
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                       "predicted_neq_given", "low_normalized_margin", "low_self_confidence"] = Field(
        default="prune_by_noise_rate", description="cleanlab's rule for which rows are label issues")


INPUTS = [Input("features", "any"), Input("label", "key")]


@model_scorer("label_quality", inputs=INPUTS, params=QualityParams, output="float", population=True,
              method="confident_learning")
def label_quality(ctx, features, label):
    """cleanlab's label quality score from cross-validated predicted probabilities (low = likely mislabelled)."""
    import polars as pl
    from cleanlab.rank import get_label_quality_scores

    cv = _cross_validated(ctx, features, label)
    scores = get_label_quality_scores(cv.labels, cv.pred_probs, method=ctx.params.method) if cv.n else []
    return cv.column(scores, pl.Float64)


@model_scorer("label_issue", inputs=INPUTS, params=IssueParams, output="bool", population=True,
              method="confident_learning")
def label_issue(ctx, features, label):
    """True for the rows confident learning finds mislabelled (cleanlab's find_label_issues)."""
    import polars as pl
    from cleanlab.filter import find_label_issues

    cv = _cross_validated(ctx, features, label)
    issues = find_label_issues(cv.labels, cv.pred_probs, filter_by=ctx.params.filter_by, n_jobs=1) if cv.n else []
    return cv.column(issues, pl.Boolean)


# --- cross-validated predicted probabilities -------------------------------------------


class _CrossValidated:
    def __init__(self, valid, order, labels, pred_probs):
        self.valid = valid  # bool [n]: rows with a label and features
        self.order = order  # the id-hash order of the valid rows
        self.labels = labels  # int64 [m] in that order
        self.pred_probs = pred_probs  # float64 [m, classes] in that order

    @property
    def n(self) -> int:
        return len(self.labels)

    def column(self, values, dtype):
        """Values in id-hash order -> a Series over all rows in the caller's order (null where invalid)."""
        import numpy as np
        import polars as pl

        values = np.asarray(values)
        out = np.zeros(len(self.valid), dtype=values.dtype if values.size else np.float64)
        idx = np.flatnonzero(self.valid)
        out[idx[self.order]] = values
        series = pl.Series("value", out, dtype=dtype)
        return series if self.valid.all() else series.scatter(np.flatnonzero(~self.valid), None)


def _cross_validated(ctx, features, label) -> _CrossValidated:
    import numpy as np
    import polars as pl

    p = ctx.params
    valid = (~features.is_null() & ~label.is_null()).to_numpy()
    if not valid.all():
        mask = pl.Series(valid)
        features, label, ids = features.filter(mask), label.filter(mask), ctx.ids.filter(mask)
    else:
        ids = ctx.ids
    order = _kmeans().canonical_order(ids)
    ctx.progress(len(valid))
    if len(order) == 0:
        return _CrossValidated(valid, order, np.zeros(0, np.int64), np.zeros((0, 0)))
    take = pl.Series(order)
    features, label = features.gather(take), label.gather(take)
    if not label.dtype.is_numeric():
        label = label.cast(pl.String)
    classes, y = np.unique(label.to_numpy(), return_inverse=True)
    if len(classes) < 2:
        raise RunError(f"confident learning needs at least two classes, but every labelled row has the label {classes[0]!r}",
                       ("check the label column",))
    counts = np.bincount(y)
    if counts.max() < p.folds:
        raise RunError(f"{p.folds}-fold cross-validation needs a class with at least {p.folds} rows; the largest has {counts.max()}",
                       ("lower `folds`",))
    x, key = _features(features)
    pred_probs = _pred_probs(x, y.astype(np.int64), p.folds, p.seed, key, ctx.workdir)
    return _CrossValidated(valid, order, y.astype(np.int64), pred_probs)


def _features(series):
    """(feature matrix, content key): standardised-later dense embeddings, or the TF-IDF of text."""
    import numpy as np
    import polars as pl

    if series.dtype == pl.String:
        from sklearn.feature_extraction.text import TfidfVectorizer

        # Numba: off `cbdsl check`, which imports the scorer modules
        from cbdsl.pipelines.engine.kernels.hashing import hash_strings

        texts = series.to_list()
        tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float64)
        return tfidf.fit_transform(texts), _kmeans().digest(hash_strings(series), kind="tfidf")
    x, _valid = embedding_matrix(series)
    return x, _kmeans().digest(x, kind="embedding")


def _pred_probs(x, y, folds: int, seed: int, key: str, workdir):
    """Out-of-sample P(label | x) by ``folds``-fold cross-validation (cleanlab's), cached by content."""
    import os
    from pathlib import Path

    import numpy as np

    full_key = _kmeans().digest(y, features=key, folds=int(folds), seed=int(seed), model="logreg-c1-lbfgs-1000", format=1)
    path = Path(workdir) / f"cv-logreg-{full_key}.npy" if workdir is not None else None
    if path is not None and path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(y), int(y.max()) + 1):
                return cached
        except (OSError, ValueError):
            pass
    import warnings

    from cleanlab.count import estimate_cv_predicted_probabilities
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(C=1.0, max_iter=1000, random_state=0)
    clf = model if not isinstance(x, np.ndarray) else make_pipeline(StandardScaler(), model)
    with warnings.catch_warnings():
        # small classes and slow convergence are reported by the scores themselves, not as noise
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        warnings.filterwarnings("ignore", message=".*Duplicated some data across multiple folds.*")
        pred_probs = estimate_cv_predicted_probabilities(x, y, clf=clf, cv_n_folds=int(folds), seed=int(seed))
    pred_probs = np.ascontiguousarray(pred_probs, dtype=np.float64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
        np.save(tmp, pred_probs)
        os.replace(tmp, path)
    return pred_probs


def _kmeans():
    """The model module `kmeans` (NumPy), imported when a scorer runs, not when `cbdsl check` loads this module."""
    import cbdsl.scorers.models.kmeans as kmeans  # NumPy: off `cbdsl check`

    return kmeans
