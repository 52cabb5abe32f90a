"""Training-dynamics scorers: EL2N, GraNd, per-sample loss and forgetting events of a proxy model.

Each trains a small proxy on the pool (:mod:`cbdsl.scorers.models.proxy`:
cbdsl-tiny for ``(image, text)``, an MLP for ``(features, label)``, a
byte-level GPT-2 for ``(text)``, and for ``(question, answer,
proxy="tiny-lm")`` the same GPT-2 scoring the answer's tokens only, the
question being context, as instruction tuning's loss does; for ``(image,
question, answer)`` the mini vision-language model of the ``mini-vlm``
backend, fine-tuned from its cached base with the tower frozen, its loss the
answer's tokens given the image and the question) ``seeds`` times from fresh
initialisations (the vision-language proxy: from its base each time, the
seed ordering the data) for ``epochs`` epochs, then measures every row in
its scoring batch:

``el2n(...)``
    Paul et al. 2021: ``E_seeds ||softmax(f(x)) - onehot(y)||_2`` after
    ``epochs`` epochs (paper: 20 of 200, 10 seeds). Contrastive pools: the
    mean of the image->text and text->image softmax over the in-batch
    similarity logits, against the one-hot at the pair itself. Text pools:
    the mean over next-byte predictions.
``grand(...)``
    Paul et al.'s GraNd as DeepCore approximates it: the norm of the loss
    gradient with respect to the last layer only, ``||[g, g h^T]||`` with
    ``g = softmax - onehot`` and ``h`` the penultimate features (paper: at
    initialisation, ``epochs=0``, 10 seeds). Contrastive: the two
    projections, each row's own path (the rest of the batch held fixed).
``loss(...)``
    the per-sample loss (contrastive: the pair's symmetric InfoNCE in its
    batch, CLIP's loss per row; text: mean next-byte NLL; instruction rows:
    mean NLL of the answer's tokens), averaged over seeds.
``forgetting(...)``
    Toneva et al. 2019: the number of times a row goes from correctly to
    incorrectly predicted between consecutive presentations during training,
    summed over seeds; a row never predicted correctly gets ``epochs`` per
    seed, the reference's maximum count. Contrastive "correct": the pair
    retrieves itself both ways in its training batch; text: most next bytes right.

The four share one trace per (data, proxy, epochs, seeds, seed, batch_size,
lr), cached as ``dynamics-<key>.npz`` in the score workdir, so ``el2n`` and
``loss`` of one proxy train it once. Rows a proxy cannot use (an undecodable
image, a null text or label) score null and take no part. Population
scorers: the proxy trains on every row. Deterministic: seeded weights, data
order and scoring batches; one CPU thread (two, fixed, for the
vision-language proxy, as its model's recipe trains).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cbdsl.scorers.registry import Input, Params, model_scorer

INPUTS = [Input("inputs", "any", variadic=True, min_count=1)]
FORMAT = 1
PROXY_HELP = ('cbdsl\'s own small proxy: "tiny" picks it by the inputs; "tiny-lm" is the byte GPT-2, which '
              "reads (text) or (question, answer) and then counts the answer's tokens only")


class DynamicsParams(Params):
    proxy: Literal["tiny", "tiny-lm"] = Field(default="tiny", description=PROXY_HELP)
    epochs: int = Field(default=1, ge=0, le=1000, description="epochs of proxy training before the measurement")
    seeds: int = Field(default=1, ge=1, le=100, description="proxies trained from different initialisations; scores are averaged")
    seed: int = Field(default=0, ge=0, lt=2**31, description="the first seed (weights and data order); seeds are seed, seed+1, ...")
    batch_size: int = Field(default=128, ge=2, le=65536, description="training and scoring batch (contrastive: the in-batch candidates)")
    lr: float | None = Field(default=None, gt=0, le=1, description="peak learning rate; auto: 2e-3 CLIP, 1e-2 MLP, 3e-3 LM, 1e-3 VLM")


class El2nParams(DynamicsParams):
    epochs: int = Field(default=20, ge=0, le=1000, description="epochs before the measurement (paper: 20)")
    seeds: int = Field(default=10, ge=1, le=100, description="initialisations averaged (paper: 10)")


class GrandParams(DynamicsParams):
    epochs: int = Field(default=0, ge=0, le=1000, description="epochs before the measurement (paper: 0, at initialisation)")
    seeds: int = Field(default=10, ge=1, le=100, description="initialisations averaged (paper: 10)")


class ForgettingParams(DynamicsParams):
    epochs: int = Field(default=20, ge=1, le=1000, description="epochs of training whose presentations are counted")


def trace(ctx, inputs) -> tuple:
    """(prepared rows, {loss, el2n, grand, forgetting} arrays over them), from the workdir cache when there."""
    import numpy as np

    p = ctx.params
    prep = _proxy().prepare(ctx.ids, list(inputs), p.batch_size, p.lr, p.proxy)
    key = prep.digest(epochs=p.epochs, seeds=p.seeds, seed=p.seed, batch_size=p.batch_size, lr=p.lr, format=FORMAT)
    path = ctx.workdir / f"dynamics-{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            ctx.progress(len(prep.valid))
            return prep, {k: cached[k] for k in cached.files}
    m = prep.rows
    ctx.expect(p.seeds * (p.epochs + 1) * m + (len(prep.valid) - m))
    ctx.progress(len(prep.valid) - m)
    sums = {k: np.zeros(m) for k in ("loss", "el2n", "grand", "forgetting")}
    with _proxy().reproducible():
        _train_and_measure(ctx, prep, p, sums)
    out = {k: (v if k == "forgetting" else v / p.seeds) for k, v in sums.items()}
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return prep, out


def _train_and_measure(ctx, prep, p, sums: dict) -> None:
    """Add each seed's training-dynamics measurements into ``sums`` (the proxy trained once per seed)."""
    import numpy as np

    m = prep.rows
    for s in range(p.seed, p.seed + p.seeds):
        model = prep.proxy.build(s)
        last = np.full(m, -1, dtype=np.int8)  # -1: not presented yet
        events, learned = np.zeros(m), np.zeros(m, dtype=bool)

        def hook(idx, correct, _lr, _epoch_end, _model, last=last, events=events, learned=learned):
            i, c = idx.numpy(), correct.numpy().astype(bool)
            events[i] += (last[i] == 1) & ~c
            learned[i] |= c
            last[i] = c
            ctx.progress(len(i))

        prep.proxy.train(model, prep.data, epochs=p.epochs, seed=s, hook=hook)
        sums["forgetting"] += np.where(learned, events, p.epochs)
        for rows in prep.batches(p.batch_size):
            measured = prep.proxy.measure(model, prep.data, rows)
            sums["loss"][rows] += measured.loss
            sums["el2n"][rows] += measured.el2n
            sums["grand"][rows] += _proxy().grad_norm(measured.blocks)
            ctx.progress(len(rows))


def _score(ctx, inputs, what: str):
    prep, values = trace(ctx, inputs)
    return prep.column(values[what], what)


@model_scorer("el2n", inputs=INPUTS, params=El2nParams, output="float", method="el2n", population=True)
def el2n(ctx, *inputs):
    """EL2N: ||softmax - onehot||_2 of a proxy after a few epochs, averaged over seeds (contrastive: in-batch)."""
    return _score(ctx, inputs, "el2n")


@model_scorer("grand", inputs=INPUTS, params=GrandParams, output="float", method="grand", population=True)
def grand(ctx, *inputs):
    """GraNd: the norm of a proxy's last-layer loss gradient (DeepCore's approximation), averaged over seeds."""
    return _score(ctx, inputs, "grand")


@model_scorer("loss", inputs=INPUTS, params=DynamicsParams, output="float", method="loss", population=True)
def loss(ctx, *inputs):
    """Per-sample loss of a proxy trained on the pool (contrastive: the pair's symmetric InfoNCE in its batch)."""
    return _score(ctx, inputs, "loss")


@model_scorer("forgetting", inputs=INPUTS, params=ForgettingParams, output="float", method="forgetting",
              population=True)
def forgetting(ctx, *inputs):
    """Forgetting events during proxy training (Toneva et al.), summed over seeds; never learned: `epochs`."""
    return _score(ctx, inputs, "forgetting")


def _proxy():
    """The model module `proxy` (torch), imported when a scorer runs, not when `cbdsl check` loads this module."""
    import cbdsl.scorers.models.proxy as proxy  # torch: off `cbdsl check`

    return proxy
