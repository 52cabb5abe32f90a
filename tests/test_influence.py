"""`influence` (LESS/ICONS core): mean cosine of per-sample last-layer gradients to each target task, checked
against per-sample autograd; LESS's max and ICONS' vote; the projection; asset errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from cbdsl.stages import check_source
from cbdsl.dsl.diagnostics import PolicyError
from cbdsl.scorers.api import RunError
from cbdsl.pipelines.data.writing import add_asset
from cbdsl.scorers.models.proxy import Projector, prepare
from conftest_pools import make_pool, run_policy

rng = np.random.default_rng(1)
N = 60
EMB = rng.normal(size=(N, 6)).astype(np.float32)
LABELS = np.where(EMB[:, 0] > 0.3, 2, (EMB[:, 1] > 0).astype(np.int64))
SCHEMA = {"emb": pl.Array(pl.Float32, 6)}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("influence")
    frame = pl.DataFrame({"id": [f"r{i:03d}" for i in range(N)], "emb": EMB.tolist(), "label": LABELS},
                         schema_overrides=SCHEMA)
    made = make_pool(root / "t", frame)
    target = pl.DataFrame({"emb": rng.normal(size=(9, 6)).astype(np.float32).tolist(), "label": [2, 2, 2, 0, 0, 1, 1, 1, 0],
                           "task": ["a", "a", "a", "b", "b", "c", "c", "c", "b"]}, schema_overrides=SCHEMA)
    target.write_parquet(root / "target.parquet")
    add_asset(made.path, "target-tasks", root / "target.parquet", kind="table")
    (root / "eval.jsonl").write_text('{"text": "held out"}\n')
    add_asset(made.path, "held-out", root / "eval.jsonl", kind="eval")
    return type(made).open(made.path)


def _influence(pool, **params) -> np.ndarray:
    args = ", ".join(f"{k}={_lit(v)}" for k, v in params.items())
    _c, result = run_policy(f'pool "t"\nlet s = influence(emb, label, {args})\nselect top s\n', pool, explain=True)
    return result.frame.sort("id")["s"].to_numpy()


def _lit(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_lit(x) for x in v) + "]"
    return repr(v)


def _autograd_unit_grads(model, x, y) -> np.ndarray:
    """Per-sample gradient of CE with respect to the last layer's weight and bias, unit-normalised."""
    out = []
    for i in range(len(y)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        g = torch.cat([model.head.weight.grad.flatten(), model.head.bias.grad])
        out.append((g / g.norm()).numpy())
    return np.asarray(out)


def test_mean_max_vote_match_an_independent_computation(pool):
    frame = pool.scan().collect()
    prep = prepare(frame["id"], [frame["emb"], frame["label"]], 128)
    model = prep.proxy.build(4)
    pool_grads = _autograd_unit_grads(model, *prep.data)
    target = pool.read_asset("target-tasks")
    per_task = []
    for task in ("a", "b", "c"):
        part = target.filter(pl.col("task") == task)
        data, ok = prep.proxy.prepare(part["emb"].cast(SCHEMA["emb"]), part["label"])
        assert ok.all()
        per_task.append(pool_grads @ _autograd_unit_grads(model, *data).mean(0))  # mean cosine to the task
    expected = np.stack(per_task, axis=1)  # canonical row order
    back = np.empty_like(expected)
    back[prep.order] = expected  # -> pool row order (the pool is written sorted by id)

    common = dict(target="target-tasks", epochs=0, seed=4, dims=4096)
    np.testing.assert_allclose(_influence(pool, aggregate="mean", **common), back.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_influence(pool, aggregate="max", **common), back.max(1), rtol=1e-5, atol=1e-6)
    votes = (back > np.quantile(back, 0.8, axis=0)).sum(1)
    np.testing.assert_array_equal(_influence(pool, aggregate="vote", **common), votes)
    assert votes.max() >= 1 and votes.min() == 0  # not every row votes the same


def test_warm_up_checkpoints_and_determinism(pool):
    a = _influence(pool, target="target-tasks", epochs=2, warmup=0.5, batch_size=8)
    b = _influence(pool, target=["target-tasks"], epochs=2, warmup=0.5, batch_size=8, seed=1)
    assert np.isfinite(a).all() and not np.allclose(a, b)
    import shutil

    shutil.rmtree(pool.scores_dir)
    np.testing.assert_array_equal(a, _influence(pool, target="target-tasks", epochs=2, warmup=0.5, batch_size=8))


def test_projector_is_exact_when_small_and_keeps_inner_products_when_large():
    g, h = torch.randn(5, 3, 4), torch.randn(5, 3, 7)
    exact = torch.einsum("bta,btc->bac", g, h).flatten(1)
    assert torch.allclose(Projector(28, 0)([(g, h)]), exact)
    g, h = torch.randn(40, 2, 300), torch.randn(40, 2, 64)
    full = torch.einsum("bta,btc->bac", g, h).flatten(1)
    small = Projector(4096, 0)([(g, h)])
    assert small.shape == (40, 64 * 64)
    cos_full = F.normalize(full, dim=1) @ F.normalize(full, dim=1).T
    cos_small = F.normalize(small, dim=1) @ F.normalize(small, dim=1).T
    assert (cos_full - cos_small).abs().max() < 0.1
    assert torch.equal(small, Projector(4096, 0)([(g, h)]))  # seeded


def test_asset_errors_say_where_and_what_to_do(pool):
    with pytest.raises(RunError, match="names the asset `nope`, which pool `t` does not have") as err:
        _influence(pool, target="nope")
    assert "cbdsl pool add-asset t nope FILE" in err.value.hints[0]
    with pytest.raises(PolicyError, match="E112: `held-out` is the pool's `eval` asset"):
        _influence(pool, target="held-out")  # refused when compiling, before the run reads it
    _p, diags = check_source('pool "t"\nlet s = influence(emb, label, target="/data/target.jsonl")\nselect top s\n',
                             "p.cur", {"id": "str", "emb": "embedding", "label": "int"})
    assert [d.code for d in diags if d.is_error] == ["E209"] and "never a path" in diags[0].message
