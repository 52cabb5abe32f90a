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
