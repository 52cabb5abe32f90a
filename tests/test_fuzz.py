"""A fast slice of tests/benchmarks/fuzz_policies.py: its mutators at small sizes, on every test run.

Each example mutates one corpus file (examples/ and tests/bad/) and runs it as
the fuzzer does: `check` (no traceback, no E900, spans inside the text, the
same positions whatever the line ends), `fmt`, and the format-parse round
trip. The full run (10,000 mutations at full size) is the benchmark's.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbdsl.dsl import parse_errors
from cbdsl.dsl import parser as parser_module
from cbdsl.dsl.lark_tables import UnexpectedInput, UnexpectedToken

_PATH = Path(__file__).parent / "benchmarks" / "fuzz_policies.py"
_SPEC = importlib.util.spec_from_file_location("fuzz_policies", _PATH)
fuzz = importlib.util.module_from_spec(_SPEC)
sys.modules["fuzz_policies"] = fuzz  # dataclasses look their module up there
_SPEC.loader.exec_module(fuzz)

# Depths to 500, chains to 500 terms, files to 7.5 KB: a few seconds in all.
SCALE = 0.05
SETTINGS = settings(max_examples=int(os.environ.get("CBDSL_HYPOTHESIS_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

cases = st.builds(lambda seed, index, mutator: fuzz.make_case(seed, index, SCALE, mutator=mutator),
                  st.integers(0, 2**32), st.integers(0, len(fuzz.CORPUS) - 1), st.sampled_from(list(fuzz.MUTATORS)))


@SETTINGS
@given(cases)
def test_mutated_policies_check_format_and_round_trip(case):
    outcome = fuzz.run_case(case.text, frames=600, timeout=20)
    assert not outcome.failures, (case.file, case.mutator, case.detail, outcome.failures)


@SETTINGS
@given(cases)
def test_recovery_reusing_the_whole_parse_finds_what_parsing_every_chunk_finds(case):
    """What the whole-text parse read is not parsed again when recovering (:func:`_recover`); that changes nothing."""
    offsets = parser_module._Offsets(case.text)
    try:
        parser_module._lark_parse(offsets.text)
        return
    except UnexpectedInput as err:
        whole = err
    reused = parser_module._recover(offsets.text, offsets, "t.cur", whole)
    assert reused == parser_module._recover(offsets.text, offsets, "t.cur", whole, reuse=False)


@SETTINGS
@given(cases)
def test_the_terminals_an_error_accepts_are_those_lark_finds(case):
    """:func:`parse_errors._accepts` walks the stack of states instead of copying Lark's parser per terminal."""
    try:
        parser_module._lark_parse(parser_module._Offsets(case.text).text)
    except UnexpectedToken as err:
        assert parse_errors._accepts(err) == err.accepts
    except UnexpectedInput:
        pass


def test_the_fuzzer_replays_a_case_exactly():
    first, again = fuzz.make_case(7, 123), fuzz.make_case(7, 123)
    assert (first.text, first.mutator, first.detail) == (again.text, again.mutator, again.detail)
    assert "--seed 7 --replay 123" in first.replay
