"""Shared test fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cbdsl_cmd() -> list[str]:
    """The CLI as a subprocess command, in this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "cbdsl"]


@pytest.fixture(autouse=True, scope="session")
def _private_witness_dir(tmp_path_factory):
    """Test sandboxes' ledger witnesses go to this session's tmp folder, never ~/.cbdsl/witness."""
    patch = pytest.MonkeyPatch()
    patch.setenv("CBDSL_WITNESS_DIR", str(tmp_path_factory.mktemp("witness")))
    yield
    patch.undo()
