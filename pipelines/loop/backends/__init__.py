"""Train/eval backends: one protocol, chosen in ``cbdsl.toml``.

A backend takes a selection (exported in the format it reads) and returns
metrics: ``{"benchmarks": {name: score, ...}, "aggregate": float}``, higher
is better. ``suite`` names the versioned recipe and evaluation suite:
results of different suites are never compared.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from cbdsl.pipelines.loop.backends.base import Backend, BackendError
from cbdsl.pipelines.loop.backends.command import CommandBackend
from cbdsl.pipelines.loop.backends.mini import MiniBackend
from cbdsl.pipelines.loop.backends.mini_vlm import MiniVLMBackend
from cbdsl.pipelines.loop.backends.ray_job import RayBackend

#: The backends by the name ``cbdsl.toml`` gives them.
BACKENDS: dict[str, type] = {"mini": MiniBackend, "mini-vlm": MiniVLMBackend, "command": CommandBackend,
                             "ray": RayBackend}


def make_backend(name: str, settings: dict[str, Any]) -> Backend:
    """The backend ``name`` with its ``[backend.NAME]`` settings; an unknown setting is a clear error."""
    cls = BACKENDS.get(name)
    if cls is None:
        raise BackendError(f"unknown backend {name!r}: choose mini, mini-vlm, command or ray in cbdsl.toml")
    flat = getattr(cls, "settings", None)  # settings that are not the backend's fields (mini: its recipe's, flat)
    known = list(flat()) if flat is not None else [f.name for f in fields(cls) if f.name != "name"]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise BackendError(f"[backend.{name}] in cbdsl.toml has unknown setting(s) {', '.join(unknown)}; "
                           f"its settings are {', '.join(known)}")
    return cls.from_settings(**settings) if flat is not None else cls(**settings)
