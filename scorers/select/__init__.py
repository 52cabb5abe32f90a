"""Select strategies: how `select` picks rows within each mix group, one module per strategy.

``top E`` and ``bottom E`` order by a number; ``random(seed)`` draws
uniformly; ``weighted(E, seed)`` draws without replacement with probability
proportional to E (DSIR's importance resampling); ``kcenter(EMB, seed)`` is
the greedy k-center core-set of Sener & Savarese (2018); ``stratified(COL)``
takes an equal share of each group of COL; ``deita(E, EMB, threshold)`` walks
the rows by E, best first, skipping each one too similar to a row already
taken (DEITA, Liu et al. 2024), and may take fewer rows than its quota. Ties are broken by a hash of the
row id and every draw has a seed, so a selection is reproducible.

A module here is named by its strategy's id and registers it with
:func:`~cbdsl.scorers.registry.strategy`: the signature the checker reads
(inputs, parameters, cost class, catalogue method, whether its first input
is a score) and the ``run`` function the engine calls once per mix group
with a :class:`~cbdsl.scorers.api.SelectContext`. The registry imports a
module the first time a policy names its id (and all of them when it lists
the strategies: :data:`cbdsl.scorers.registry.PACKAGES`), so a new strategy
is a new file. ``cbdsl check`` imports these modules: NumPy, Polars and the
kernels are imported inside ``run``, the context classes only for typing.
"""

from __future__ import annotations

from pydantic import Field

from cbdsl.scorers.registry import Params


class SeedParams(Params):
    """The parameters of a strategy that draws at random: its seed."""

    seed: int = Field(default=0, ge=0, description="the seed of the random draw (a whole number, 0 or more)")
