"""The optimizer rules, two fixture files each, and their doctests.

Text fixtures, ``tests/fixtures/rules/<module>.txt`` (one per module of ``compiler/rules/``): pairs of
policy text in and plan text out (the plan after that rule alone), as sqlglot keeps ``.sql`` pairs; the
format is described at the top of each file. After an intended change, regenerate the plan texts with

    CBDSL_UPDATE_GOLDENS=1 .venv/bin/python -m pytest -q tests/test_rules.py

and review the diff like code.

JSON fixtures, ``tests/fixtures/rules/<rule>.json``:

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
import os
import re
from pathlib import Path

import pytest

from cbdsl.compiler.ir import FilterStep, Plan
from cbdsl.compiler.rules import RULES, optimize
from cbdsl.dsl.parser import parse
from cbdsl.pipelines.engine.execute import plan_text
from cbdsl.stages import plan, resolve

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


# --- text fixtures: policy in, plan text out ------------------------------------------------------------

#: The columns the text fixtures' policies read (those of tests/test_plan.py, and a bool).
TEXT_SCHEMA = {"id": "str", "x": "float", "y": "int", "g": "str", "text": "str", "width": "int", "height": "int",
               "emb": "embedding", "url": "str", "image": "binary", "toks": "int", "ok": "bool"}
RULE_OF_MODULE = {rule.__module__.rsplit(".", 1)[1]: rule for rule in RULES}
UPDATE = os.environ.get("CBDSL_UPDATE_GOLDENS") == "1"
_CASE = re.compile(r"^=== (?P<name>.+?)\n(?P<policy>.*?)^--- (?P<marker>changed|unchanged)\n(?P<plan>.*?)(?=^=== |\Z)",
                   re.MULTILINE | re.DOTALL)
_AFTER = re.compile(r"\(after ([\w, ]+)\)$")


def text_fixture(module: str) -> tuple[str, list[dict[str, str]]]:
    """(the header, the cases) of a text fixture file; a case has its name, policy, marker and plan text."""
    text = (FIXTURES / f"{module}.txt").read_text(encoding="utf-8")
    first = re.search(r"^=== ", text, re.MULTILINE)
    header = text[: first.start()] if first else text
    cases = [m.groupdict() for m in _CASE.finditer(text)]
    assert "".join(m.group(0) for m in _CASE.finditer(text)) == text[len(header):], f"{module}.txt: a malformed case"
    for case in cases:
        case["plan"] = case["plan"].rstrip("\n") + "\n" if case["plan"].strip() else ""
    return header, cases


def write_text_fixture(module: str, header: str, cases: list[dict[str, str]]) -> None:
    body = "\n".join(f"=== {c['name']}\n{c['policy']}--- {c['marker']}\n{c['plan']}" for c in cases)
    (FIXTURES / f"{module}.txt").write_text(header + body, encoding="utf-8")


def text_cases():
    for module in RULE_MODULES:
        for case in text_fixture(module)[1]:
            yield pytest.param(module, case["name"], id=f"{module}: {case['name']}")


@pytest.mark.parametrize(("module", "name"), list(text_cases()))
def test_rule_text_fixture(module, name):
    """The plan text after the module's rule alone (after the rules the case names) is the fixture's."""
    header, cases = text_fixture(module)
    case = next(c for c in cases if c["name"] == name)
    before = plan(resolve(parse(case["policy"], f"{module}.txt"), TEXT_SCHEMA))
    after = _AFTER.search(name)
    for rule_name in after.group(1).split(", ") if after else ():
        before = RULE_BY_NAME[rule_name](before)
    rule = RULE_OF_MODULE[module]
    got = rule(before)
    assert (got != before) == (case["marker"] == "changed"), f"the rule should leave the plan {case['marker']}"
    assert rule(got) == got, "a rule is idempotent"
    if UPDATE:
        case["plan"] = plan_text(got)
        write_text_fixture(module, header, cases)
        return
    assert plan_text(got) == case["plan"], f"tests/fixtures/rules/{module}.txt: `{name}` differs"


def test_every_rule_module_has_a_text_fixture_with_both_kinds_of_case():
    assert sorted(p.stem for p in FIXTURES.glob("*.txt")) == sorted(RULE_MODULES) == sorted(RULE_OF_MODULE)
    for module in RULE_MODULES:
        cases = text_fixture(module)[1]
        assert len(cases) >= 5 and len({c["name"] for c in cases}) == len(cases)
        assert {c["marker"] for c in cases} == {"changed", "unchanged"}
