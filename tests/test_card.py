"""The card module: card_types (what `cbdsl check --pool` reads) and its errors, without Polars or NumPy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cbdsl.pipelines.data.card import card_types, read_card
from cbdsl.pipelines.data.errors import PoolError

ROOT = Path(__file__).resolve().parent.parent


def _card(directory: Path, data) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "pool.json").write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return directory


def test_card_types_of_a_written_pool_match_its_card(tmp_path):
    import polars as pl

    from cbdsl.pipelines.data.writing import add_asset, write_pool

    pool = write_pool(pl.DataFrame({"id": ["a", "b"], "n": [1, 2], "emb": [[0.5, 1.0], [1.5, 2.0]]}),
                      tmp_path / "p", name="p")
    (tmp_path / "eval.jsonl").write_text('{"text": "a cat"}\n')
    pool = add_asset(pool.path, "mini-eval", tmp_path / "eval.jsonl")
    schema, assets = card_types(pool.path)
    assert schema == {"id": "str", "n": "int", "emb": "embedding"} == dict(pool.card.schema)
    assert assets == {"mini-eval": "eval"}
    assert card_types(str(pool.path)) == (schema, assets)  # a str or a path


def test_card_types_reads_only_schema_and_assets(tmp_path):
    """A card without the other fields is enough for the checker (read_card would refuse it)."""
    pool = _card(tmp_path / "p", {"schema": {"id": "str", "x": 1}, "assets": {"icons": {"kind": "ids"}, "m": {}}})
    assert card_types(pool) == ({"id": "str", "x": "1"}, {"icons": "ids", "m": ""})
    assert card_types(_card(tmp_path / "q", {"schema": {}, "assets": None})) == ({}, {})
    with pytest.raises(PoolError, match="not a valid pool card"):
        read_card(pool / "pool.json")


@pytest.mark.parametrize("case, message", [
    ("missing", "no pool card at {card} (No such file or directory); give a pool directory"),
    ("invalid", "{card} is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    ("list", "{card} has no `schema` mapping of column name to type"),
    ("no-schema", "{card} has no `schema` mapping of column name to type"),
    ("schema-list", "{card} has no `schema` mapping of column name to type"),
    ("assets-list", "{card} has an `assets` entry that is not a mapping of name to asset"),
    ("asset-str", "{card} has an `assets` entry that is not a mapping of name to asset"),
])
def test_card_types_errors_are_the_checkers_messages(tmp_path, case, message):
    """The messages `cbdsl check --pool` prints; the PoolError has no file or hint, so its
    text is the message alone."""
    data = {"invalid": "not json", "list": [], "no-schema": {"assets": {}}, "schema-list": {"schema": ["id"]},
            "assets-list": {"schema": {}, "assets": ["a"]}, "asset-str": {"schema": {}, "assets": {"a": "ids"}}}
    pool = tmp_path / "p"
    if case == "missing":
        pool.mkdir()
    else:
        _card(pool, data[case])
    with pytest.raises(PoolError) as err:
        card_types(pool)
    assert str(err.value) == err.value.message == message.format(card=os.path.join(pool, "pool.json"))
    assert err.value.file is None and err.value.hint is None
    cause = OSError if case == "missing" else json.JSONDecodeError if case == "invalid" else type(None)
    assert isinstance(err.value.__cause__, cause)


def test_card_types_imports_neither_polars_nor_numpy(tmp_path):
    pool = _card(tmp_path / "p", {"schema": {"id": "str"}, "assets": {}})
    probe = ("import sys\nfrom cbdsl.pipelines.data.card import card_types\n"
             f"print(card_types({str(pool)!r}))\n"
             "print(sorted(m for m in ('polars', 'numpy') if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["({'id': 'str'}, {})", "[]"]
