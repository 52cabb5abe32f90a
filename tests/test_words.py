"""`words(text)` is Python's ``len(text.split())`` and `words(text, split="fasttext")` is
``len(fasttext.tokenize(text))``, checked over every code point against the real functions.

DataComp's basic filter counts ``len(text.split())`` and its image-based caption filter
``len(fasttext.tokenize(text))`` (mlfoundations/datacomp, baselines/apply_filter.py). Both the
count (``let n = words(text)``) and the fast comparison path of the lowering
(``words(text) > 2`` as one regex search) are checked, since they are separate code.
"""

from __future__ import annotations

import sys

import fasttext
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbdsl.compiler.lower import ExprLowering
from cbdsl.scorers.registry import registry
from cbdsl.compiler.ir import Apply, Col, Lit, Op

CODE_POINTS = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]  # str cannot hold surrogates
SEPARATORS = [chr(c) for c in CODE_POINTS if chr(c).isspace()] + ["\x00", "\u200b", "\u180e", "\ufeff"]


def words(texts: list[str], split: str | None = None) -> list[int]:
    params = {} if split is None else {"split": split}
    expr = ExprLowering(schema={"t": "str"}, registry=registry())(Apply(fn="words", args=(Col(name="t"),), params=params))
    return pl.DataFrame({"t": texts}).select(expr).to_series().to_list()


def at_least(texts: list[str], op: str, value: int) -> list[bool]:
    """`words(t) OP value` through the lowering's comparison (the regex fast path)."""
    pred = Op(name=op, args=(Apply(fn="words", args=(Col(name="t"),)), Lit(value=value)))
    return pl.DataFrame({"t": texts}).select(ExprLowering(schema={"t": "str"}, registry=registry())(pred)).to_series().to_list()


@pytest.fixture(scope="module")
def every_code_point() -> list[str]:
    """`a<c>b  <c>c<c>` for every code point c: one, two or three words depending on whether c splits."""
    return [f"a{chr(c)}b  {chr(c)}c{chr(c)}" for c in CODE_POINTS]


def test_words_is_python_split_over_every_code_point(every_code_point):
    expected = [len(t.split()) for t in every_code_point]
    assert words(every_code_point) == expected
    assert words(every_code_point, "whitespace") == expected
    assert sorted({n for n in expected}) == [2, 3]  # the probe tells the two kinds apart


@pytest.mark.parametrize("op,value", [(">", 2), (">=", 3), ("<", 3), ("<=", 2), (">", 1)])
def test_the_comparison_fast_path_agrees_with_python_split(every_code_point, op, value):
    counts = [len(t.split()) for t in every_code_point]
    compare = {">": int.__gt__, ">=": int.__ge__, "<": int.__lt__, "<=": int.__le__}[op]
    assert at_least(every_code_point, op, value) == [compare(n, value) for n in counts]


def test_the_whitespace_set_is_pythons():
    """The class is exactly str.isspace: U+001C-U+001F split, U+200B, U+180E and U+FEFF do not."""
    assert words(["a\x1cb", "a\x1fb", "a\u3000b", "a\u200bb", "a\u180eb", "a\ufeffb", "a\x85b"]) == [2, 2, 2, 1, 1, 1, 2]


def test_words_of_a_missing_text_is_missing():
    assert words([None, "", " \t "]) == [None, 0, 0]
    assert at_least([None, "a b c"], ">", 2) == [None, True]


def test_fasttext_split_is_fasttext_tokenize_over_every_code_point(every_code_point):
    expected = [len(fasttext.tokenize(t)) for t in every_code_point]
    assert words(every_code_point, "fasttext") == expected
    assert len(set(expected)) >= 2  # some code points separate, most do not


@pytest.mark.parametrize("text,n", [
    ("a b", 2), ("a\nb", 3), ("a\n", 2), ("\n", 1), ("\n\n", 2), ("a\r\nb", 3), ("a\x00b", 2),
    ("a\xa0b", 1), ("a\u3000b", 1), ("a\u2003b", 1), ("a\x1cb", 1), ("", 0), ("  ", 0), ("a\tb\x0bc\x0cd", 4),
])
def test_fasttext_cases_the_issue_names(text, n):
    """A newline is an end-of-sentence token; NUL separates; NBSP, U+3000, U+2000 spaces do not."""
    assert len(fasttext.tokenize(text)) == n
    assert words([text], "fasttext") == [n]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(["a", "é", "字", *SEPARATORS]), max_size=12), min_size=1, max_size=20))
def test_both_splits_on_mixed_separators(texts):
    assert words(texts) == [len(t.split()) for t in texts]
    assert words(texts, "fasttext") == [len(fasttext.tokenize(t)) for t in texts]
    assert at_least(texts, ">", 1) == [len(t.split()) > 1 for t in texts]
