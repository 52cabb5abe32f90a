"""Which engine runs a plan: ``local`` (one process, :mod:`~cbdsl.pipelines.engine.execute`) or ``ray`` (a Ray
cluster, :mod:`~cbdsl.pipelines.engine.on_ray`), as ``cbdsl run --engine`` and ``cbdsl.toml``'s ``[engine]``
table name them. Both give the same selection byte for byte; only where the work runs differs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENGINES = ("local", "ray")
SETTINGS = ("name", "address", "block_rows")


@dataclass(frozen=True)
class Engine:
    name: str = "local"
    address: str | None = None  # ray: a cluster (HOST:PORT, ray://HOST:PORT, auto); None: $RAY_ADDRESS, else local
    block_rows: int | None = None  # ray: rows of one task's piece of the pool (default on_ray.BLOCK_ROWS)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Engine:
        """An engine from ``[engine]`` settings; ValueError saying which setting is wrong and what it takes."""
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ValueError(f"unknown [engine] setting {unknown[0]!r}; the settings are {', '.join(SETTINGS)}")
        name = settings.get("name", "local")
        if name not in ENGINES:
            raise ValueError(f"[engine] name is {name!r}; choose one of {', '.join(ENGINES)}")
        address = settings.get("address")
        if address is not None and (not isinstance(address, str) or name != "ray"):
            raise ValueError("[engine] address is a Ray cluster's address (a string), for name = \"ray\"")
        rows = settings.get("block_rows")
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ValueError(f"[engine] block_rows must be a positive whole number of rows, got {rows!r}")
        return cls(name=name, address=address, block_rows=rows)


def run_plan(low, pool, engine: Engine | None = None):
    """Execute a lowered plan on ``engine`` (default: local): a :class:`~cbdsl.pipelines.engine.execute.RunResult`."""
    if engine is None or engine.name == "local":
        # Polars loads here: the sandbox reads [engine] through this module on `cbdsl check`'s path too
        from cbdsl.pipelines.engine.execute import execute

        return execute(low, pool)
    # Ray (and Polars) only for a run that asks for it: the `ray` extra may not be installed
    from cbdsl.pipelines.engine.on_ray import BLOCK_ROWS, cluster, default_address, execute_on_ray

    with cluster(engine.address or default_address()):
        return execute_on_ray(low, pool, block_rows=engine.block_rows or BLOCK_ROWS)
