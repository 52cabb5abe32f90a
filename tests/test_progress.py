"""`cbdsl run` shows a progress bar (rows/s, ETA) for a scorer that takes more than a second, and none for a
metadata-only policy. The CLI runs in a subprocess with a forced terminal (rich's TTY_COMPATIBLE and TTY_INTERACTIVE),
as a person would see it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from conftest_pools import make_pool

CBDSL = Path(sys.executable).parent / "cbdsl"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    texts = [f"row {i} tells a story of {'many ' * (i % 7)}words and ends here" for i in range(120)]
    return make_pool(tmp_path_factory.mktemp("progress") / "t", {"id": [f"r{i:04d}" for i in range(120)], "text": texts})


def _run(pool, tmp_path, body: str) -> str:
    policy = tmp_path / "p.cur"
    policy.write_text(f'pool "t"\n{body}\n', encoding="utf-8")
    env = {**os.environ, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "160", "CBDSL_PROGRESS": "1"}
    done = subprocess.run([str(CBDSL), "run", str(policy), "--pool", str(pool.path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rows/s" not in done.stdout  # the bar draws on stderr: stdout (and --json) stays clean
    return done.stdout + done.stderr


def test_a_slow_scorer_shows_rows_per_second_and_eta(pool, tmp_path):
    out = _run(pool, tmp_path, "let s = loss(text, epochs=1, batch_size=16)\nselect top s")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "scoring loss(text" in plain
    assert re.search(r"\d+ rows/s \d:\d\d", plain), plain[-400:]  # the rate, then the time remaining
    assert "selected 120 of 120 rows" in out


def test_a_metadata_only_run_shows_no_bar(pool, tmp_path):
    out = _run(pool, tmp_path, "filter words(text) > 8\nselect random(seed=0)")
    assert "rows/s" not in out and "scoring" not in out
    assert "selected" in out
