"""The sandbox: a folder where an agent runs the curation loop, and how its ``cbdsl.toml`` is read.

``cbdsl init`` (:mod:`cbdsl.pipelines.loop.init`) writes ``cbdsl.toml`` (pool, budget, backend and its settings,
scaffold, iteration limit, eval suite), a starter ``policy.cur``, and the
cards an agent reads: ``PROTOCOL.md`` (the task, the rules, the commands,
what the feedback means), ``POOL.md`` (the pool card) and ``METHODS.md`` (the
method catalogue). State lives in ``.cbdsl/``: compiled artifacts, runs and
the ledger.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbdsl.compiler.rule8 import looks_like_path
from cbdsl.pipelines.engine.engines import Engine
from cbdsl.pipelines.data.roots import resolve_pool

CONFIG = "cbdsl.toml"
SCAFFOLDS = ("open", "guide", "cite", "adapt", "research")
BACKENDS = ("mini", "mini-vlm", "command", "ray")


class SandboxError(Exception):
    """A sandbox problem a user fixes (no cbdsl.toml, a bad setting)."""


@dataclass(frozen=True)
class Config:
    root: Path
    pool: str = "demo"
    budget: int = 5000
    backend: str = "mini"
    scaffold: str = "open"
    iterations: int = 10
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    engine: Engine = field(default_factory=Engine)  # [engine]: which engine runs a submission's policy

    @property
    def state(self) -> Path:
        return self.root / ".cbdsl"

    @property
    def backend_settings(self) -> dict[str, Any]:
        return dict(self.backends.get(self.backend, {}))


def find_root(start: str | os.PathLike = ".") -> Path | None:
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG).is_file():
            return folder
    return None


def load(start: str | os.PathLike = ".") -> Config:
    import tomllib  # here, not at the top: `cbdsl check` imports this module for find_root outside sandboxes too

    root = find_root(start)
    if root is None:
        raise SandboxError(f"no {CONFIG} here or in a parent folder: run `cbdsl init` to make a sandbox")
    try:
        data = tomllib.loads((root / CONFIG).read_text())
    except tomllib.TOMLDecodeError as err:
        raise SandboxError(f"{root / CONFIG} is not valid TOML: {err}") from err
    s = data.get("sandbox", {})
    try:
        engine = Engine.from_settings(data.get("engine", {}))
    except ValueError as err:
        raise SandboxError(f"{CONFIG}: {err}") from None
    cfg = Config(
        root=root,
        pool=str(s.get("pool", "demo")),
        budget=int(s.get("budget", 5000)),
        backend=str(s.get("backend", "mini")),
        scaffold=str(s.get("scaffold", "open")),
        iterations=int(s.get("iterations", 10)),
        backends={k: dict(v) for k, v in data.get("backend", {}).items()},
        audit=dict(data.get("audit", {})),
        engine=engine,
    )
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    if cfg.backend not in BACKENDS:
        raise SandboxError(f"{CONFIG}: unknown backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    if cfg.scaffold not in SCAFFOLDS:
        raise SandboxError(f"{CONFIG}: unknown scaffold {cfg.scaffold!r}; choose one of {', '.join(SCAFFOLDS)}")
    if cfg.budget <= 0:
        raise SandboxError(f"{CONFIG}: the budget must be a positive number of rows, got {cfg.budget}")
    if cfg.iterations <= 0:
        raise SandboxError(f"{CONFIG}: iterations must be positive, got {cfg.iterations}")


def pool_dir(cfg: Config) -> Path:
    """The directory of the sandbox's pool: ``cbdsl.toml``'s pool (a name or a directory the researcher
    gave), looked up in the sandbox's ``pools/`` first, then the pool roots."""
    return resolve_pool(cfg.pool, search=[cfg.root / "pools"])


def policy_pool(cfg: Config, pool) -> str:
    """How a policy of this sandbox names its pool: ``cbdsl.toml``'s pool name, or the pool card's name when
    the researcher gave a directory (a policy never names a directory)."""
    return pool.name if pool is not None and looks_like_path(cfg.pool) else cfg.pool
