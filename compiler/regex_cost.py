"""How big a regular expression is once Polars' engine compiles it: a bound checked before any run.

Why: ``matches(text, PATTERN)`` runs on Polars' regex engine (Rust's ``regex``
crate), which matches in time linear in the text but proportional to the
size of the compiled automaton, and refuses a pattern whose compiled form
exceeds 10 MB. Counted repetition multiplies that size: ``a{100000}`` took
183 s on one 100,001-character string, ``((a{100}){100}){100}`` fails to
compile, and ``\\w{1000}`` too (each Unicode ``\\w`` is some 50 KB of
automaton). So :func:`regex_cost` estimates the compiled size from Python's
parse of the pattern and the checker refuses a pattern above
:data:`MAX_COST` (E221), before a run is spent on it.

The units are about a kilobyte of compiled automaton; the weights were
measured on Polars' engine (the largest ``X{n}`` that compiles: ``\\w`` 209,
``\\W`` 225, ``\\pL`` 244, ``\\d`` 2,046, ``.`` 10,485, ``\\s`` 15,419, a
literal more than 20,000). :data:`MAX_COST` is about 4 MB, under half the
engine's limit, and tests/test_regex_cost.py checks on the engine itself
that every pattern under it compiles and runs fast on a long text.
"""

from __future__ import annotations

from re import _constants as C  # noqa: N812 - the opcodes of Python's own regex parser
from re import _parser

#: The largest estimated size accepted (units of about 1 KB of compiled automaton).
MAX_COST = 4000
#: The deepest group nesting accepted (Python's parser recurses per group; Rust's engine stops at 250).
MAX_NESTING = 100

#: Cost of one class item by category: Unicode word and digit classes compile to large automata.
_CATEGORY_COST = {
    C.CATEGORY_WORD: 50, C.CATEGORY_NOT_WORD: 50, C.CATEGORY_DIGIT: 5, C.CATEGORY_NOT_DIGIT: 5,
    C.CATEGORY_SPACE: 1, C.CATEGORY_NOT_SPACE: 1,
}
_REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT)


def nesting_problem(pattern: str) -> str | None:
    """Why ``pattern`` nests its groups too deeply to parse safely; None when it does not (checked first,
    on the text, because Python's own parser recurses once per group)."""
    depth = _nesting(pattern)
    return f"its groups are nested {depth} deep (at most {MAX_NESTING})" if depth > MAX_NESTING else None


def regex_cost(pattern: str) -> int:
    """The estimated compiled size of ``pattern``, which must compile with Python's ``re`` and pass
    :func:`nesting_problem`."""
    return _cost(_parser.parse(pattern))


def _nesting(pattern: str) -> int:
    """The deepest nesting of ``(`` groups, skipping escapes and character classes."""
    depth = deepest = 0
    in_class = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "^":
                i += 1
            if pattern[i + 1:i + 2] == "]":  # a `]` right after `[` or `[^` is a literal
                i += 1
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
        i += 1
    return deepest


def _cost(items) -> int:
    total = 0
    for op, av in items:
        if op in _REPEATS:
            low, high, sub = av
            copies = max(low, 1) if high == C.MAXREPEAT else max(high, 1)
            total += copies * _cost(sub)
        elif op is C.SUBPATTERN:
            total += _cost(av[-1])
        elif op is C.ATOMIC_GROUP:
            total += _cost(av)
        elif op is C.BRANCH:
            total += sum(_cost(branch) for branch in av[1])
        elif op is C.IN:
            total += _class_cost(av)
        elif op is C.LITERAL:
            total += 1 if av < 128 else len(chr(av).encode("utf-8"))
        elif op in (C.NOT_LITERAL, C.ANY):
            total += 1
        # AT (anchors, \b) compile to no automaton states worth counting
    return total


def _class_cost(items) -> int:
    """A character class: its Unicode categories dominate; each range outside ASCII adds a little."""
    cost = 1
    for op, av in items:
        if op is C.CATEGORY:
            cost = max(cost, _CATEGORY_COST.get(av, 1))
        elif op is C.RANGE and av[1] >= 128:
            cost += 1
    return cost


def size_problem(pattern: str) -> str | None:
    """Why ``pattern`` would compile too large to run, in the user's words; None when it is fine."""
    cost = regex_cost(pattern)
    if cost <= MAX_COST:
        return None
    return (f"it would compile to about {cost:,} KB of automaton, above the {MAX_COST:,} KB a pattern may use "
            "(counted repetition multiplies the size of what it repeats)")
