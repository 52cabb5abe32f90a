"""The optimizer: an ordered tuple of pure rules, ``Plan -> Plan``.

Each rule lives in its own module, says in its docstring why it is safe
(none may change the selection), and has a fixture file of input/expected
plans in ``tests/fixtures/rules/``. :func:`optimize` only chains them.
"""

from __future__ import annotations

from collections.abc import Callable

from cbdsl.compiler.ir import Plan
from cbdsl.compiler.rules.constant_folding import fold_constants
from cbdsl.compiler.rules.predicate_ordering import order_predicates
from cbdsl.compiler.rules.projection_pruning import prune_projection
from cbdsl.compiler.rules.shared_subexpressions import share_subexpressions

Rule = Callable[[Plan], Plan]

RULES: tuple[Rule, ...] = (
    fold_constants,
    share_subexpressions,
    order_predicates,
    prune_projection,
)


def optimize(plan: Plan, rules: tuple[Rule, ...] = RULES) -> Plan:
    """Apply the rules in order; the plan records which ran."""
    for rule in rules:
        plan = rule(plan)
        plan = plan.model_copy(update={"rules": (*plan.rules, rule.__name__)})
    return plan
