"""Where cbdsl keeps what it makes for the user across runs: ``$CBDSL_HOME``, default ``~/.cbdsl``.

Trained models (``models/``) and caches (``cache/``) live there. Light on
purpose: ``cbdsl check`` reaches it through the catalogue's cache.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    value = os.environ.get("CBDSL_HOME")
    return Path(value) if value else Path.home() / ".cbdsl"
