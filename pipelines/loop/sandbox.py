"""The sandbox: a folder where an agent runs the curation loop.

``cbdsl init`` writes ``cbdsl.toml`` (pool, budget, backend and its settings,
scaffold, iteration limit, eval suite), a starter ``policy.cur``, and the
cards an agent reads: ``PROTOCOL.md`` (the task, the rules, the commands,
what the feedback means), ``POOL.md`` (the pool card) and ``METHODS.md`` (the
method catalogue). State lives in ``.cbdsl/``: compiled artifacts, runs and
the ledger.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbdsl.compiler.rule8 import looks_like_path
from cbdsl.dsl import ast
from cbdsl.dsl.diagnostics import Diagnostic
from cbdsl.pipelines.data.roots import resolve_pool
from cbdsl.pipelines.loop.cards import methods_md, pool_md, protocol_md
from cbdsl.pipelines.loop.ledger import Ledger, LedgerError
from cbdsl.pipelines.loop.witness import Witness
from cbdsl.scaffolds.modes import history_of, scaffold_warnings

CONFIG = "cbdsl.toml"
SCAFFOLDS = ("open", "guide", "cite", "adapt")
BACKENDS = ("mini", "command", "ray")


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
    cfg = Config(
        root=root,
        pool=str(s.get("pool", "demo")),
        budget=int(s.get("budget", 5000)),
        backend=str(s.get("backend", "mini")),
        scaffold=str(s.get("scaffold", "open")),
        iterations=int(s.get("iterations", 10)),
        backends={k: dict(v) for k, v in data.get("backend", {}).items()},
        audit=dict(data.get("audit", {})),
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


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def render_config(cfg: Config) -> str:
    lines = [
        "# cbdsl sandbox: the task an agent works on. Edit with care: results of different",
        "# settings are not comparable.",
        "[sandbox]",
        f"pool = {_toml_value(cfg.pool)}",
        f"budget = {cfg.budget}",
        f"backend = {_toml_value(cfg.backend)}",
        f"scaffold = {_toml_value(cfg.scaffold)}",
        f"iterations = {cfg.iterations}",
    ]
    for name, settings in sorted(cfg.backends.items()):
        lines += ["", f"[backend.{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in sorted(settings.items())]
    if cfg.audit:
        lines += ["", "[audit]"] + [f"{k} = {_toml_value(v)}" for k, v in sorted(cfg.audit.items())]
    return "\n".join(lines) + "\n"


def _no_earlier_run(root: Path) -> None:
    """A new sandbox where a benchmarked one was would look like an erased ledger: say so now, not at submit."""
    witness = Witness(root)
    if witness.path.is_file():
        raise SandboxError(f"a sandbox in {root} was submitted to before: its ledger's witness {witness.path} "
                           "records its history; to start over here on purpose, delete that file (and "
                           f"{witness.backup_path.name} beside it) first, or choose another folder")


STARTER = """\
# Your curation policy. Edit it, then:
#   cbdsl check policy.cur && cbdsl compile policy.cur && cbdsl submit -m "what you changed"
# PROTOCOL.md has the rules, POOL.md the data, METHODS.md the methods you can cite.

policy "baseline"
pool "{pool}"

budget {budget}
select random(seed=0)
"""


def default_backends(backend: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"mini": {"seed": 0}}
    if backend == "command":
        out["command"] = {"command": "", "format": "parquet", "timeout": 3600, "metrics": "metrics.json"}
    if backend == "ray":
        out["ray"] = {"address": "", "entrypoint": "", "format": "parquet", "timeout": 3600, "metrics": "metrics.json"}
    return out


def init(root: str | os.PathLike, *, pool: str = "demo", budget: int = 5000, backend: str = "mini",
         scaffold: str = "open", iterations: int = 10, pool_obj=None) -> Config:
    """Write a sandbox into ``root`` (refuses to overwrite an existing cbdsl.toml)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if (root / CONFIG).exists():
        raise SandboxError(f"{root / CONFIG} exists already; this folder is a sandbox (delete it to start over)")
    _no_earlier_run(root)
    cfg = Config(root=root, pool=pool, budget=budget, backend=backend, scaffold=scaffold, iterations=iterations,
                 backends=default_backends(backend))
    validate(cfg)
    amount = f"{budget:_}" if budget >= 10_000 else budget
    (root / "policy.cur").write_text(STARTER.format(pool=policy_pool(cfg, pool_obj), budget=amount))
    if pool_obj is not None:
        (root / "POOL.md").write_text(pool_md(pool_obj))
        (root / "METHODS.md").write_text(methods_md())
        (root / "PROTOCOL.md").write_text(protocol_md(cfg, pool_obj))
    cfg.state.mkdir(exist_ok=True)
    (root / CONFIG).write_text(render_config(cfg))  # last: a folder is a sandbox once this exists
    return cfg


def sandbox_scaffold_warnings(policy: ast.Policy, path: str) -> list[Diagnostic]:
    """:func:`~cbdsl.scaffolds.modes.scaffold_warnings` for a policy file inside a sandbox, against its ledger;
    [] outside one (what `cbdsl check` adds to a policy's diagnostics)."""
    root = find_root(Path(path).resolve().parent if path != "-" else Path.cwd())
    if root is None:
        return []
    try:
        cfg = load(root)
    except SandboxError:
        return []  # `cbdsl submit` reports a broken cbdsl.toml; check is about the policy
    if cfg.scaffold in ("open", "guide"):
        return []
    history = []
    if (cfg.state / "ledger.sqlite").is_file():
        try:
            ledger = Ledger(cfg.state / "ledger.sqlite")
            try:
                history = history_of(ledger.entries())
            finally:
                ledger.close()
        except LedgerError:
            return []  # a damaged ledger is `cbdsl verify`'s and `submit`'s to report; check is about the policy
    return scaffold_warnings(policy, cfg.scaffold, history)
