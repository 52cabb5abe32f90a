"""``cbdsl init``: a new sandbox, with its config, its starter policy and the cards an agent reads
(PROTOCOL.md, POOL.md, METHODS.md, and AGENTS.md, CLAUDE.md and ``skills/`` by agents' conventions).

Apart from :mod:`cbdsl.pipelines.loop.sandbox`, which only reads a sandbox, so that ``cbdsl check`` (which
looks for one around every policy) loads neither the cards nor the witness.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cbdsl.pipelines.loop.agent_files import write_agent_files
from cbdsl.pipelines.loop.cards import methods_md, pool_md, protocol_md
from cbdsl.pipelines.loop.sandbox import CONFIG, Config, SandboxError, policy_pool, validate
from cbdsl.pipelines.loop.witness import Witness


#: Per track: its demo pool, its embedded backend, its default budget (``cbdsl init --track``, experiments).
TRACKS = {"clip": ("demo", "mini", 5000), "it": ("demo-it", "mini-vlm", 4000)}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):  # a TOML array (`benchmarks = ["MME", "POPE"]`)
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
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
                           "records its history; to start over here on purpose, pass --restart (which keeps that "
                           "record aside, retired), or choose another folder")


def retire_earlier_run(root: str | os.PathLike) -> list[Path]:
    """Starting a folder over on purpose: retire the witness of the sandbox benchmarked there before (moved
    aside, not deleted, so the run it replaces leaves a trace). Returns the files moved."""
    return Witness(Path(root).resolve()).retire()


def _merged(defaults: dict[str, dict[str, Any]], given: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {**defaults.get(name, {}), **given.get(name, {})} for name in {*defaults, *given}}


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
    """The ``[backend.*]`` tables of a new cbdsl.toml: the embedded backend's seed, and a template of the
    chosen external one."""
    out: dict[str, dict[str, Any]] = {"mini-vlm" if backend == "mini-vlm" else "mini": {"seed": 0}}
    if backend == "command":
        out["command"] = {"command": "", "format": "parquet", "timeout": 3600, "metrics": "metrics.json"}
    if backend == "ray":
        out["ray"] = {"address": "", "entrypoint": "", "format": "parquet", "timeout": 3600, "metrics": "metrics.json"}
    return out


def init(root: str | os.PathLike, *, pool: str = "demo", budget: int = 5000, backend: str = "mini",
         scaffold: str = "open", iterations: int = 10, pool_obj=None,
         backends: dict[str, dict[str, Any]] | None = None) -> Config:
    """Write a sandbox into ``root`` (refuses to overwrite an existing cbdsl.toml); ``backends``: settings of
    ``[backend.NAME]`` tables, over the defaults."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if (root / CONFIG).exists():
        raise SandboxError(f"{root / CONFIG} exists already; this folder is a sandbox (delete it to start over)")
    _no_earlier_run(root)
    cfg = Config(root=root, pool=pool, budget=budget, backend=backend, scaffold=scaffold, iterations=iterations,
                 backends=_merged(default_backends(backend), backends or {}))
    validate(cfg)
    amount = f"{budget:_}" if budget >= 10_000 else budget
    (root / "policy.cur").write_text(STARTER.format(pool=policy_pool(cfg, pool_obj), budget=amount))
    if pool_obj is not None:
        (root / "POOL.md").write_text(pool_md(pool_obj))
        (root / "METHODS.md").write_text(methods_md())
        (root / "PROTOCOL.md").write_text(protocol_md(cfg, pool_obj))
        write_agent_files(root, cfg)
    cfg.state.mkdir(exist_ok=True)
    (root / CONFIG).write_text(render_config(cfg))  # last: a folder is a sandbox once this exists
    return cfg
