"""The classifier proxy of labelled pools: features -> one hidden layer (ReLU) -> class logits.

Why this shape: EL2N, GraNd and forgetting are defined for a classifier
(Paul et al. train ResNets; DeepCore's GraNd reads the last linear layer),
and a labelled pool here has an embedding or a text per row, not pixels.
An MLP with one hidden layer of :data:`HIDDEN` units is the smallest model
with a penultimate representation of its own, trains in seconds on CPU, and
is deterministic for a seed.

Features (:class:`Encoder`, fitted on the pool, then applied to the pool or
a target set alike): an embedding column is standardised per dimension
(mean and std over the pool); a text column becomes ``log1p`` counts of its
lowercased wordpunct unigrams and bigrams hashed into :data:`TEXT_BUCKETS`
buckets (DSIR's featurisation), then standardised. Classes are the pool's
distinct labels in sorted order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cbdsl.scorers.api import RunError
from cbdsl.scorers.dsir import features
from cbdsl.scorers.geometry import embedding_matrix
from cbdsl.scorers.models.kmeans import digest

HIDDEN = 64
TEXT_BUCKETS = 1024


class MLP(torch.nn.Module):
    def __init__(self, width: int, classes: int, hidden: int = HIDDEN):
        super().__init__()
        self.fc = torch.nn.Linear(width, hidden)
        self.head = torch.nn.Linear(hidden, classes)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation (the input of the last layer)."""
        return torch.relu(self.fc(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x))


def build(width: int, classes: int, seed: int) -> MLP:
    """A fresh MLP; the same seed gives the same weights (the caller's RNG state is kept)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(width, classes).eval()


@dataclass(frozen=True)
class Encoder:
    """Feature standardisation and class ids, fitted on the pool's rows."""

    text: bool
    mean: np.ndarray
    std: np.ndarray
    classes: tuple

    @property
    def width(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, features, labels) -> Encoder:
        import polars as pl

        text = features.dtype == pl.String
        ok = (~features.is_null() & ~labels.is_null()).to_numpy()
        x = _raw(features.filter(pl.Series(ok)), text)
        classes = tuple(np.unique(_labels(labels.filter(pl.Series(ok)))).tolist())
        if len(classes) < 2:
            raise RunError(f"a classifier proxy needs at least two classes; the labelled rows have {len(classes)}",
                           ("check the label column",))
        std = x.std(axis=0) if len(x) else np.ones(x.shape[1])
        return cls(text, x.mean(axis=0) if len(x) else np.zeros(x.shape[1]), np.where(std > 0, std, 1.0), classes)

    def key(self) -> dict:
        return {"text": self.text, "stats": digest(self.mean, self.std), "classes": [str(c) for c in self.classes]}

    def encode(self, features, labels) -> tuple[tuple[torch.Tensor, torch.Tensor], np.ndarray]:
        """((float32 features, int64 class ids) of the usable rows, bool mask): null or unknown labels are out."""
        import polars as pl

        ok = (~features.is_null() & ~labels.is_null()).to_numpy()
        y = _labels(labels.filter(pl.Series(ok)))
        lookup = {c: i for i, c in enumerate(self.classes)}
        known = np.asarray([v in lookup for v in y.tolist()], dtype=bool)
        ok[np.flatnonzero(ok)[~known]] = False
        x = (_raw(features.filter(pl.Series(ok)), self.text) - self.mean) / self.std
        ids = np.asarray([lookup[v] for v in y[known].tolist()], dtype=np.int64)
        return (torch.from_numpy(x.astype(np.float32)), torch.from_numpy(ids)), ok


def _labels(series) -> np.ndarray:
    import polars as pl

    return series.to_numpy() if series.dtype.is_integer() else series.cast(pl.String).to_numpy().astype(object)


def _raw(series, text: bool) -> np.ndarray:
    if text:
        rows, buckets = features(series, 2, TEXT_BUCKETS)
        counts = np.bincount(rows * TEXT_BUCKETS + buckets, minlength=len(series) * TEXT_BUCKETS)
        return np.log1p(counts.reshape(len(series), TEXT_BUCKETS).astype(np.float64))

    x, _valid = embedding_matrix(series)
    return x.astype(np.float64)
