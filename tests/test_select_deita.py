"""`select deita(score, emb, threshold)` end to end: the same ids in the same order as the rule written here in
plain Python (score order with id-hash ties and null scores last, rows without an embedding never taken), the
same selection whatever the pool's row order, the threshold boundary, and the short selection the run reports."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from cbdsl.pipelines.engine.kernels import hashing
from cbdsl.stages import check_source
from conftest_pools import make_pool, run_policy

N, D = 300, 6
rng = np.random.default_rng(12)
CENTERS = rng.standard_normal((40, D))
EMB = (CENTERS[rng.integers(0, 40, N)] + 0.3 * rng.standard_normal((N, D))).astype(np.float32)
SCORE = np.round(rng.random(N), 1)  # ten values: many ties, broken by the id hash
IDS = [f"r{i:03d}" for i in range(N)]
NULL_SCORE = {4, 50, 51, 299}
NULL_EMB = {7, 51, 120}


def frame(order=None) -> pl.DataFrame:
    order = list(range(N)) if order is None else order
    return pl.DataFrame({
        "id": [IDS[i] for i in order],
        "score": [None if i in NULL_SCORE else float(SCORE[i]) for i in order],
        "emb": [None if i in NULL_EMB else EMB[i].tolist() for i in order],
    }, schema_overrides={"emb": pl.Array(pl.Float32, D)})


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return make_pool(tmp_path_factory.mktemp("deita") / "t", frame())


def reference(k: int, threshold: float) -> list[str]:
    """DEITA's rule on the pool, in plain Python."""
    h = dict(zip(IDS, hashing.hash_strings(IDS).tolist()))
    walk = sorted(range(N), key=lambda i: (i in NULL_SCORE, -SCORE[i] if i not in NULL_SCORE else 0, h[IDS[i]], IDS[i]))
    rows = {i: [float(v) for v in EMB[i]] for i in range(N)}

    def sim(i, c):
        s = 0.0
        for a, b in zip(rows[i], rows[c]):
            s += a * b
        n_i = math.sqrt(sum_sq(rows[i]))
        n_c = math.sqrt(sum_sq(rows[c]))
        return s / (n_i * n_c)

    chosen: list[int] = []
    for i in walk:
        if len(chosen) == k:
            break
        if i in NULL_EMB:
            continue
        if not any(sim(i, c) > threshold for c in chosen):
            chosen.append(i)
    return [IDS[i] for i in chosen]


def sum_sq(row) -> float:
    s = 0.0
    for v in row:
        s += v * v
    return s


def policy(budget: int | None, threshold: float | None = None) -> str:
    params = "" if threshold is None else f", threshold={threshold!r}"
    return f'pool "t"\n' + (f"budget {budget}\n" if budget is not None else "") + f"select deita(score, emb{params})\n"


def selected(pool, budget, threshold=None):
    _c, result = run_policy(policy(budget, threshold), pool)
    return result.selection.get_column("id").to_list(), result


@pytest.mark.parametrize("threshold", [0.9, 0.6, 0.3])
def test_same_ids_in_the_same_order_as_the_rule(pool, threshold):
    every = reference(N, threshold)
    budget = min(len(every), 40)
    ids, result = selected(pool, budget, threshold)
    assert ids == reference(budget, threshold)
    assert not result.warnings
    assert result.selection.get_column("score").to_list() == [SCORE[int(i[1:])] if int(i[1:]) not in NULL_SCORE
                                                               else None for i in ids]


def test_the_default_threshold_is_deitas(pool):
    assert selected(pool, 30)[0] == reference(30, 0.9)


def test_row_order_of_the_pool_does_not_matter(pool, tmp_path):
    shuffled = make_pool(tmp_path / "t", frame(list(np.random.default_rng(3).permutation(N))))
    assert selected(shuffled, 60, 0.8)[0] == selected(pool, 60, 0.8)[0]


def test_null_scores_are_walked_last_and_null_embeddings_never_taken(pool):
    ids, result = selected(pool, None, 1.0)  # no budget: every row the rule takes
    assert ids == reference(N, 1.0)
    assert not {IDS[i] for i in NULL_EMB} & set(ids)
    assert ids[-3:] == [i for i in reference(N, 1.0) if int(i[1:]) in NULL_SCORE]  # 51 has no embedding
    assert len(ids) == N - len(NULL_EMB)
    assert len(result.warnings) == 1 and "short" in result.warnings[0]  # the null embeddings were left


def test_threshold_boundary(tmp_path):
    """cos((1,0,0,0), (1,1,1,1)) = 0.5 exactly: a row at the threshold is taken, one above it is not."""
    rows = pl.DataFrame({"id": ["a", "b", "c"], "score": [3.0, 2.0, 1.0],
                         "emb": [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]]},
                        schema_overrides={"emb": pl.Array(pl.Float32, 4)})
    pool = make_pool(tmp_path / "t", rows)
    assert selected(pool, 3, 0.5)[0] == ["a", "b", "c"]
    ids, result = selected(pool, 3, 0.4999999)
    assert ids == ["a", "c"]
    assert result.warnings == ["select `deita` took 2 rows, 1 short of the quota of 3: it accepts no other row, so "
                               "the selection is smaller than the budget (loosen the strategy's parameters, say a "
                               "higher `threshold`, or lower the budget)"]


def test_short_selection_per_mix_group_and_no_warning_when_full(tmp_path):
    rows = pl.DataFrame({"id": [f"x{i}" for i in range(6)], "src": ["a", "a", "a", "b", "b", "b"],
                         "score": [6.0, 5, 4, 3, 2, 1],
                         "emb": [[1, 0], [1, 0.01], [0, 1], [1, 0], [0, 1], [-1, 0]]},
                        schema_overrides={"emb": pl.Array(pl.Float32, 2)})
    pool = make_pool(tmp_path / "t", rows)
    _c, result = run_policy('pool "t"\nmix by src { a: 0.5, b: 0.5 }\nbudget 6\nselect deita(score, emb)\n', pool)
    picked = result.selection.get_column("id").to_list()  # groups interleave by pick index, then id hash
    assert sorted(picked) == ["x0", "x2", "x3", "x4", "x5"] and picked[:2] == ["x0", "x3"]  # x1 is x0's twin
    assert len(result.warnings) == 1 and "mix group `a`" in result.warnings[0]
    _c, result = run_policy('pool "t"\nmix by src { a: 0.5, b: 0.5 }\nbudget 4\nselect deita(score, emb)\n', pool)
    assert result.selection.height == 4 and not result.warnings


def test_bad_parameters_are_diagnostics():
    schema = {"id": "str", "score": "float", "emb": "embedding", "text": "str"}
    for clause, words in (("select deita(score, emb, threshold=1.5)", "at most 1"),
                          ("select deita(score, emb, threshold=-2)", "at least -1"),
                          ("select deita(score, text)", "embedding"),
                          ("select deita(score)", "")):
        _p, diags = check_source(f'pool "t"\nbudget 3\n{clause}\n', "p.cur", schema)
        errors = [d for d in diags if d.is_error]
        assert errors and words in errors[0].message, (clause, [d.message for d in errors])
