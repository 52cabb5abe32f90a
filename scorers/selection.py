"""Select strategies: how `select` picks rows within each mix group.

``top E`` and ``bottom E`` order by a number; ``random(seed)`` draws
uniformly; ``weighted(E, seed)`` draws without replacement with probability
proportional to E (DSIR's importance resampling); ``kcenter(EMB, seed)`` is
the greedy k-center core-set of Sener & Savarese (2018); ``stratified(COL)``
takes an equal share of each group of COL. Ties are broken by a hash of the
row id and every draw has a seed, so a selection is reproducible.

These are steps of the plan, not row expressions: the planner lowers them,
so their entries have no ``lower`` function.
"""

from __future__ import annotations

from pydantic import Field

from cbdsl.compiler.types import UNKNOWN
from cbdsl.scorers.registry import Entry, Input, Params, register


class SeedParams(Params):
    seed: int = Field(default=0, ge=0, description="the seed of the random draw (a whole number, 0 or more)")


for _entry in (
    Entry("top", "select", inputs=(Input("x", "number"),), output=UNKNOWN,
          summary="Keep the rows with the largest x."),
    Entry("bottom", "select", inputs=(Input("x", "number"),), output=UNKNOWN,
          summary="Keep the rows with the smallest x."),
    Entry("random", "select", params=SeedParams, output=UNKNOWN, method="random",
          summary="A uniform random sample without replacement."),
    Entry("weighted", "select", inputs=(Input("weight", "number"),), params=SeedParams, output=UNKNOWN,
          method="dsir", summary="A random sample without replacement, with probability proportional to the weight."),
    Entry("kcenter", "select", inputs=(Input("embedding", "embedding"),), params=SeedParams, output=UNKNOWN,
          cost="cpu_model", method="kcenter",
          summary="Greedy k-center: each pick is the row farthest from those already picked."),
    Entry("stratified", "select", inputs=(Input("group", "column"),), params=SeedParams, output=UNKNOWN,
          summary="An equal share from each group of a column (as many as a small group has)."),
):
    register(_entry)
