"""``cbdsl experiment run GRID.toml``: agents x scaffolds x seeds x pools, one sandbox and one agent run per cell.

Why: the research's finding comes from comparing trajectories across agents and protocols; a grid file
makes that comparison one command, the same for every cell, and resumable. A cell
``<agent>-<scaffold>-seed<S>-<pool>`` is a sandbox ``cells/<cell>/`` (made with ``cbdsl init``'s code: the
grid's pool, budget, backend settings, scaffold and iterations; the cell's seed is the embedded backend's
training seed and the agent's ``{seed}``; its folder's name is the run's name in ``cbdsl trajectory
--compare``) with ``cells/<cell>.agent/`` beside it (``cbdsl agent run``'s record). Each cell runs as its
own ``python -m cbdsl agent run`` process (its output in ``cells/<cell>.log``), ``parallel`` at a time;
``cells/<cell>.json`` marks a cell whose run ended. Run the grid again after a kill: ended cells are skipped,
the others resume from their ledgers.

The grid file::

    [experiment]
    agents = ["scripted", "search"]         # presets, or names of [agents.NAME] tables
    scaffolds = ["open", "guide", "cite", "adapt", "research"]
    seeds = [0, 1]
    pools = ["demo"]                        # names or directories
    track = "clip"                          # clip or it: the default backend and budget
    iterations = 10                         # and optionally budget, backend, mode, timeout, agent_turns,
                                            # max_tokens, max_turns, parallel

    [agents.mine]
    command = "my-agent --task {prompt_file}"
    events = "generic"

    [backend.mini]                          # settings for every cell's [backend.mini]
    models = 1                              # one training a submission: half the time, more noise
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cbdsl.harness.presets import PRESETS, AgentError, check_installed
from cbdsl.harness.runner import MODES
from cbdsl.harness.usage import READERS
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.loop.init import TRACKS, init
from cbdsl.pipelines.data.roots import resolve_pool
from cbdsl.pipelines.loop.sandbox import BACKENDS, CONFIG, SCAFFOLDS, SandboxError

KEYS = {"agents", "scaffolds", "seeds", "pools", "track", "budget", "backend", "iterations", "mode", "timeout",
        "agent_turns", "max_tokens", "max_turns", "parallel"}
EMBEDDED = ("mini", "mini-vlm")  # backends whose recipe has a seed


class GridError(Exception):
    """The grid file is wrong; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Cell:
    agent: str
    scaffold: str
    seed: int
    pool: str

    @property
    def name(self) -> str:
        return f"{self.agent}-{self.scaffold}-seed{self.seed}-{Path(self.pool).name}"


@dataclass(frozen=True)
class Grid:
    """A grid file, checked."""

    path: Path
    agents: dict[str, dict[str, str]]  # name -> {"command": preset name or template, "events": reader}
    scaffolds: tuple[str, ...]
    seeds: tuple[int, ...]
    pools: tuple[str, ...]
    backend: str
    budget: int
    iterations: int
    mode: str = "turn"
    timeout: float = 1800.0
    agent_turns: int = 50
    max_tokens: int | None = None
    max_turns: int | None = None
    parallel: int = 1
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def cells(self) -> list[Cell]:
        return [Cell(a, s, seed, p) for p in self.pools for a in self.agents for s in self.scaffolds
                for seed in self.seeds]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "cells": [c.name for c in self.cells]}


def load_grid(path: str | os.PathLike) -> Grid:
    """The grid at ``path``, or a GridError saying what is wrong and how to fix it."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GridError(f"{path}: no such grid file") from None
    except tomllib.TOMLDecodeError as err:
        raise GridError(f"{path}: not valid TOML ({err})") from None
    exp = data.get("experiment")
    if not isinstance(exp, dict):
        raise GridError(f"{path}: no [experiment] table; it lists agents, scaffolds, seeds and pools")
    unknown = sorted(set(exp) - KEYS)
    if unknown:
        raise GridError(f"{path}: [experiment] has unknown key(s) {', '.join(unknown)}; the keys are "
                        f"{', '.join(sorted(KEYS))}")
    track = _one_of(path, exp, "track", tuple(TRACKS), "clip")
    demo, backend, budget = TRACKS[track]
    agents = _agents(path, _list(path, exp, "agents", str), data.get("agents", {}))
    scaffolds = _list(path, exp, "scaffolds", str, list(SCAFFOLDS))
    for s in scaffolds:
        if s not in SCAFFOLDS:
            raise GridError(f"{path}: scaffold {s!r} in [experiment] scaffolds; choose from {', '.join(SCAFFOLDS)}")
    backends = data.get("backend", {})
    if not isinstance(backends, dict) or not all(isinstance(v, dict) for v in backends.values()):
        raise GridError(f"{path}: [backend.NAME] must be tables of settings, e.g. [backend.mini] steps = 500")
    grid = Grid(path=path.resolve(), agents=agents, scaffolds=tuple(scaffolds),
                seeds=tuple(_list(path, exp, "seeds", int, [0])), pools=tuple(_list(path, exp, "pools", str, [demo])),
                backend=_one_of(path, exp, "backend", BACKENDS, backend), budget=_int(path, exp, "budget", budget),
                iterations=_int(path, exp, "iterations", 10), mode=_one_of(path, exp, "mode", MODES, "turn"),
                timeout=float(_int(path, exp, "timeout", 1800)), agent_turns=_int(path, exp, "agent_turns", 50),
                max_tokens=_int(path, exp, "max_tokens", None), max_turns=_int(path, exp, "max_turns", None),
                parallel=_int(path, exp, "parallel", max(1, (os.cpu_count() or 2) // 2)), backends=backends)
    names = [c.name for c in grid.cells]
    if len(set(names)) != len(names):
        raise GridError(f"{path}: two cells would share a folder (pools with the same folder name?): rename one")
    return grid


def _list(path: Path, table: dict, key: str, kind: type, default: list | None = None) -> list:
    value = table.get(key, default)
    if value is None:
        raise GridError(f"{path}: [experiment] needs `{key}`, a list, e.g. {key} = " + (
            '["scripted", "search"]' if key == "agents" else "[0]"))
    if not isinstance(value, list) or not value or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                           for v in value):
        raise GridError(f"{path}: [experiment] {key} must be a non-empty list of {kind.__name__}s, not {value!r}")
    if len(set(value)) != len(value):
        raise GridError(f"{path}: [experiment] {key} lists a value twice: {value!r}")
    return value


def _int(path: Path, table: dict, key: str, default):
    value = table.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise GridError(f"{path}: [experiment] {key} must be a positive whole number, not {value!r}")
    return value


def _one_of(path: Path, table: dict, key: str, choices, default: str) -> str:
    value = table.get(key, default)
    if value not in choices:
        raise GridError(f"{path}: [experiment] {key} = {value!r}; choose one of {', '.join(choices)}")
    return value


def _agents(path: Path, names: list[str], tables: Any) -> dict[str, dict[str, str]]:
    if not isinstance(tables, dict):
        raise GridError(f"{path}: [agents.NAME] must be tables with a `command`")
    out = {}
    for name in names:
        if name in tables:
            spec = tables[name]
            if not isinstance(spec, dict) or not isinstance(spec.get("command"), str) or not spec["command"].strip():
                raise GridError(f"{path}: [agents.{name}] needs command = \"...\" (a preset name or a template)")
            events = spec.get("events", "generic")
            if events not in READERS:
                raise GridError(f"{path}: [agents.{name}] events = {events!r}; choose one of {', '.join(READERS)}")
            out[name] = {"command": spec["command"], "events": events}
        elif name in PRESETS:
            out[name] = {"command": name, "events": ""}
        else:
            raise GridError(f"{path}: agent {name!r} is no preset ({', '.join(PRESETS)}) and has no [agents.{name}] "
                            "table with its command")
    return out


# --- running ------------------------------------------------------------------------------------------


def cell_dir(out: Path, cell: Cell) -> Path:
    """The cell's sandbox (its record, log and end mark lie beside it, named after it)."""
    return out / "cells" / cell.name


def run_grid(grid: Grid, out: str | os.PathLike, *, parallel: int | None = None,
             log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every cell not yet ended (``parallel`` at a time); each cell's ``cell.json``, in grid order."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(grid.to_json(), indent=2, default=str) + "\n")
    for name, spec in grid.agents.items():  # a preset whose CLI is missing would crash every turn of its cells
        if spec["command"] in PRESETS:
            try:
                check_installed(PRESETS[spec["command"]])
            except AgentError as err:
                raise GridError(f"{grid.path}: agent {name!r}: {err}") from None
    for pool in grid.pools:  # a missing pool is the grid's mistake: say so before any cell starts
        try:
            Pool.open(resolve_pool(pool))
        except PoolError as err:
            raise GridError(f"{grid.path}: pool {pool!r}: {err}") from None
    todo = []
    for cell in grid.cells:
        ended = _ended(cell_dir(out, cell))
        if ended:
            log(f"{cell.name}: ended before ({ended['stopped']}); skipped")
        else:
            todo.append(cell)
    workers = max(1, min(parallel or grid.parallel, len(todo) or 1))
    log(f"{len(todo)} of {len(grid.cells)} cells to run, {workers} at a time")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda c: _run_cell(grid, out, c, log), todo))
    return [_ended(cell_dir(out, c)) or {"cell": c.name, "stopped": "not ended"} for c in grid.cells]


def _mark(sandbox: Path) -> Path:
    """``cells/<cell>.json``: written when the cell's run ended."""
    return sandbox.with_name(f"{sandbox.name}.json")


def _ended(sandbox: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_mark(sandbox).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _run_cell(grid: Grid, out: Path, cell: Cell, log: Callable[[str], None]) -> None:
    sandbox = cell_dir(out, cell)
    if not (sandbox / CONFIG).is_file():
        settings = {name: dict(values) for name, values in grid.backends.items()}
        if grid.backend in EMBEDDED:
            settings.setdefault(grid.backend, {})["seed"] = cell.seed
        try:
            init(sandbox, pool=cell.pool, budget=grid.budget, backend=grid.backend, scaffold=cell.scaffold,
                 iterations=grid.iterations, pool_obj=Pool.open(resolve_pool(cell.pool)), backends=settings)
        except (SandboxError, PoolError) as err:  # not marked ended: a rerun tries again once it is fixed
            log(f"{cell.name}: not started: {err}")
            return
    spec = grid.agents[cell.agent]
    cmd = [sys.executable, "-m", "cbdsl", "agent", "run", str(sandbox), "--agent", spec["command"], "--mode",
           grid.mode, "--timeout", str(grid.timeout), "--agent-turns", str(grid.agent_turns), "--seed",
           str(cell.seed), "--json"]
    cmd += ["--events", spec["events"]] if spec["events"] else []
    cmd += ["--max-tokens", str(grid.max_tokens)] if grid.max_tokens else []
    cmd += ["--max-turns", str(grid.max_turns)] if grid.max_turns else []
    log(f"{cell.name}: running")
    cell_log = sandbox.with_name(f"{cell.name}.log")
    with open(cell_log, "ab") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, cwd=sandbox.parent)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        result = {"stopped": f"the agent run exited with code {proc.returncode} without a result; see {cell_log}"}
    if proc.returncode in (0, 1) and "turns" in result:
        _write_ended(sandbox, cell, {"stopped": result["stopped"], "iterations_left": result["iterations_left"],
                                    "exit_code": proc.returncode})
    log(f"{cell.name}: {result.get('stopped')}")


def _write_ended(sandbox: Path, cell: Cell, data: dict[str, Any]) -> None:
    sandbox.parent.mkdir(parents=True, exist_ok=True)
    mark = _mark(sandbox)
    tmp = mark.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"cell": cell.name, **asdict(cell), **data}, indent=2) + "\n")
    os.replace(tmp, mark)
