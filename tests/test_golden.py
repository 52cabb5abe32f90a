"""Golden (snapshot) tests over the example corpus and the bad-policy corpus.

For every ``examples/*.cur``: the AST JSON and the formatted text. For every
``tests/bad/*.cur``: the rendered diagnostics. Snapshots live in
``tests/golden/``; after an intended change, regenerate them with

    CBDSL_UPDATE_GOLDENS=1 .venv/bin/python -m pytest -q tests/test_golden.py

and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cbdsl.stages import check_source
from cbdsl.dsl.codes import CODES
from cbdsl.dsl.diagnostics import Source, render_all
from cbdsl.dsl.format import format_policy
from cbdsl.dsl.parser import parse
from bad_corpus import assets_from_header, schema_from_header

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.cur"))
BAD = sorted((ROOT / "tests" / "bad").glob("*.cur"))
GOLDEN = ROOT / "tests" / "golden"
UPDATE = os.environ.get("CBDSL_UPDATE_GOLDENS") == "1"


def snapshot(path: Path, actual: str) -> None:
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"no snapshot {path.relative_to(ROOT)}; run with CBDSL_UPDATE_GOLDENS=1 to create it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{path.relative_to(ROOT)} differs from the snapshot"


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_ast(path: Path) -> None:
    policy = parse(path.read_text(encoding="utf-8"), rel(path))
    snapshot(GOLDEN / "examples" / f"{path.stem}.ast.json", policy.model_dump_json(indent=2) + "\n")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    formatted = format_policy(parse(text, rel(path)))
    snapshot(GOLDEN / "examples" / f"{path.stem}.fmt.cur", formatted)
    assert text == formatted, f"{rel(path)} is not in canonical form: run `cbdsl fmt {rel(path)}`"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_policy_diagnostics(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    _policy, diags = check_source(text, rel(path), schema_from_header(text), assets_from_header(text))
    code = path.stem.split("_")[0]
    assert code in {d.code for d in diags}, f"{rel(path)} should produce {code}, got {[d.code for d in diags]}"
    if code.startswith("E"):
        assert any(d.is_error for d in diags)
    assert all(d.code != "E900" for d in diags), "an internal error on a user's policy is a bug"
    snapshot(GOLDEN / "bad" / f"{path.stem}.txt", render_all(diags, Source(text, rel(path))) + "\n")


def test_every_code_has_a_bad_policy() -> None:
    covered = {p.stem.split("_")[0] for p in BAD}
    # E900 is an internal error, E901 a missing dependency (tests/test_cli.py); E103 needs a catalogue scorer
    # without code (tests/test_resolve.py adds one)
    missing = sorted(c for c in CODES if c not in covered and c not in ("E900", "E901", "E103"))
    assert not missing, f"codes without a tests/bad/ policy: {missing}"


def test_bad_corpus_is_large_enough() -> None:
    assert len(BAD) >= 40
