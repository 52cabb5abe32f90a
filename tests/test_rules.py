"""The optimizer rules, one fixture file each (``tests/fixtures/rules/<rule>.json``), and their doctests.

A fixture file is a list of cases ``{"name", "input": <Plan JSON>, "expected":
<Plan JSON>}``; the test checks ``rule(input) == expected``. The inputs were
made from small policies (``plan(resolve(parse(text)))``), or by hand where a
plan needs a model scorer (``Score`` steps of cost ``gpu_model``/``cpu_model``;
no scorer runs at plan level); every expected plan was reviewed by hand. A
case with a ``"bug"`` field holds the *correct* expected plan for a known bug
and is an expected failure until the rule is fixed.
"""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import pytest

from cbdsl.compiler.ir import FilterStep, Plan
from cbdsl.compiler.rules import RULES, optimize

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rules"
RULE_BY_NAME = {rule.__name__: rule for rule in RULES}
RULE_MODULES = ["constant_folding", "predicate_ordering", "projection_pruning", "shared_subexpressions"]


def load(rule_name: str) -> list[dict]:
    return json.loads((FIXTURES / f"{rule_name}.json").read_text(encoding="utf-8"))


def cases():
    for name in RULE_BY_NAME:
        for case in load(name):
            marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {case['bug']}")] if "bug" in case else []
            yield pytest.param(name, case, id=f"{name}: {case['name']}", marks=marks)


@pytest.mark.parametrize(("rule_name", "case"), list(cases()))
def test_rule_fixture(rule_name, case):
    rule = RULE_BY_NAME[rule_name]
    got = rule(Plan.model_validate(case["input"]))
    expected = Plan.model_validate(case["expected"])
    assert got.model_dump(mode="json") == expected.model_dump(mode="json")  # readable diff on failure
    assert got == expected


@pytest.mark.parametrize(("rule_name", "case"), [c for c in cases() if not c.marks])
def test_rule_is_idempotent(rule_name, case):
    rule = RULE_BY_NAME[rule_name]
    once = rule(Plan.model_validate(case["input"]))
    assert rule(once) == once


@pytest.mark.parametrize("rule_name", list(RULE_BY_NAME))
def test_every_rule_has_fixtures_including_one_where_it_must_not_fire(rule_name):
    found = load(rule_name)
    assert len(found) >= 3
    assert len({c["name"] for c in found}) == len(found)
    assert any(c["input"] == c["expected"] for c in found), "a case where the rule must leave the plan alone"
    assert any(c["input"] != c["expected"] for c in found)
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(RULE_BY_NAME)


@pytest.mark.parametrize("module", RULE_MODULES)
def test_rule_doctests(module):
    mod = importlib.import_module(f"cbdsl.compiler.rules.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if module == "constant_folding":
        assert result.attempted >= 2


def test_optimize_records_the_rules_and_keeps_filters_and_clauses():
    for rule_name in RULE_BY_NAME:
        for case in load(rule_name):
            plan = Plan.model_validate(case["input"])
            out = optimize(plan)
            assert out.rules == tuple(RULE_BY_NAME)
            # no rule drops or invents a filter clause: the conjunction is the same set of clauses
            assert sorted(f.clause for f in out.of(FilterStep)) == sorted(f.clause for f in plan.of(FilterStep))
