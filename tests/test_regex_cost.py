"""The regex size bound (E221) against Polars' own engine: what the checker accepts compiles there.

``compiler.regex_cost`` estimates the compiled size of a `matches` pattern
from weights measured on Polars' engine; these tests hold the estimate to
the engine: every pattern at the edge of the bound, and random patterns
below it, compile and run on a long text, and the patterns that broke runs
before (a 100,000-fold repetition, nested counted repetition, ``\\w{1000}``)
are refused at check time with a positioned E221.
"""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbdsl.stages import check_source
from cbdsl.compiler.regex_cost import MAX_COST, MAX_NESTING, nesting_problem, regex_cost, size_problem

LONG = pl.Series(["a" * 100_001, "b" * 50_000 + " héllo wörld 42 " * 100])
ATOMS = ["a", "é", "[a-z]", "[^a]", ".", r"\d", r"\D", r"\s", r"\S", r"\w", r"\W", "[α-ω]", r"[\w\-]", "(?i)a"]


def engine_runs(pattern: str) -> bool:
    """Whether Polars compiles ``pattern`` and runs it over a long text (a size error is False)."""
    try:
        LONG.str.contains(pattern)
    except pl.exceptions.ComputeError:
        return False
    return True


def check_codes(pattern: str) -> list[str]:
    text = 'pool "demo"\nfilter matches(text, "' + pattern.replace("\\", "\\\\").replace('"', '\\"') + '")\n'
    return [d.code for d in check_source(text, "p.cur", {"id": "str", "text": "str"})[1]]


@pytest.mark.parametrize("atom", ATOMS)
def test_the_largest_accepted_repetition_of_each_atom_compiles_on_the_engine(atom: str) -> None:
    flags, body = ("(?i)", atom[4:]) if atom.startswith("(?i)") else ("", atom)
    n = max(k for k in range(1, MAX_COST + 1) if regex_cost(f"{flags}(?:{body}){{{k}}}") <= MAX_COST)
    assert engine_runs(f"{flags}(?:{body}){{{n}}}")
    assert check_codes(f"{flags}(?:{body}){{{n + 1}}}").count("E221") == 1


@pytest.mark.parametrize("pattern", [
    "a{100000}", "((a{100}){100}){100}", r"\w{1000}", r"(\w+\s){500}", "(" * (MAX_NESTING + 1) + "a" + ")" * (MAX_NESTING + 1),
    "(" * 5000 + "a" + ")" * 5000,
])
def test_patterns_that_broke_runs_are_refused_at_check_time(pattern: str) -> None:
    assert "E221" in check_codes(pattern)
    assert "E900" not in check_codes(pattern)


def test_the_weights_are_not_too_generous_for_the_engine() -> None:
    # the measured edges: \w{209} compiles and \w{300} does not; the bound stays well below the edge
    assert engine_runs(r"\w{209}") and not engine_runs(r"\w{300}")
    assert size_problem(r"\w{209}") is not None


def test_nesting_counts_groups_not_escaped_or_classed_parentheses() -> None:
    assert nesting_problem(r"\(" * 500) is None
    assert nesting_problem("[(]" * 500) is None
    assert nesting_problem("[]()]" * 500) is None
    assert nesting_problem("(" * 101 + ")" * 101) is not None


_atom = st.sampled_from(ATOMS[:-1])
_count = st.one_of(st.just(""), st.sampled_from(["*", "+", "?"]),
                   st.integers(1, 400).map(lambda n: f"{{{n}}}"),
                   st.tuples(st.integers(0, 50), st.integers(50, 400)).map(lambda t: f"{{{t[0]},{t[1]}}}"))


@st.composite
def _patterns(draw, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        if depth < 3 and draw(st.booleans()):
            inner = draw(_patterns(depth + 1))
            alt = draw(_patterns(depth + 1)) if draw(st.booleans()) else None
            part = f"(?:{inner}|{alt})" if alt else f"(?:{inner})"
        else:
            part = draw(_atom)
        parts.append(part + draw(_count))
    return "".join(parts)


@settings(max_examples=60, deadline=None)
@given(_patterns())
def test_every_pattern_the_checker_accepts_compiles_on_the_engine(pattern: str) -> None:
    if "E221" in check_codes(pattern):
        return
    assert engine_runs(pattern), f"accepted but too large for Polars: {pattern!r} (cost {regex_cost(pattern)})"
