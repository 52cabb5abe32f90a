"""Compile: text -> the compiled artifact (check, plan, optimize), as PRQL's ``compile`` chains its stages.

The artifact is JSON: the canonical text, the AST, the plan, the scorers and
columns the run needs, and the hashes of policy, pool and catalogue. It is
written under the sandbox's ``.cbdsl/compiled/`` and remembered as the last
compiled policy; a changed policy or pool makes it stale (:func:`is_stale`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbdsl.dsl.diagnostics import PolicyError, Source

ARTIFACT_VERSION = 1
SANDBOX_DIR = ".cbdsl"


@dataclass(frozen=True)
class Compiled:
    policy: Any  # ast.Policy
    typed: Any  # resolve.TypedPolicy
    plan: Any  # plan.Plan (optimized)
    artifact: dict[str, Any]
    warnings: tuple  # Diagnostic warnings and notes


def compile_source(text: str, name: str, pool=None, *, registry=None) -> Compiled:
    """Parse, resolve (against the pool's schema when a pool is given), plan and optimize.

    ``registry``: the callables the policy may name (default: the process registry)."""
    from cbdsl import __version__
    from cbdsl.compiler.check import check_source
    from cbdsl.compiler.plan import plan as make_plan
    from cbdsl.compiler.resolve import resolve
    from cbdsl.compiler.rules import optimize
    from cbdsl.dsl.format import canonical_text
    from cbdsl.scaffolds.catalogue import catalogue_hash

    schema = pool.schema if pool is not None else None
    assets = {a: info.kind for a, info in pool.card.assets.items()} if pool is not None else None
    policy, diags = check_source(text, name, schema, assets, registry=registry)
    if policy is None or any(d.is_error for d in diags):
        raise PolicyError(diags, Source(text, name))
    typed = resolve(policy, schema, source=Source(text, name), assets=assets, registry=registry)
    id_column = pool.id_column if pool is not None else "id"
    optimized = optimize(make_plan(typed, id_column=id_column, registry=registry))
    artifact = {
        "artifact_version": ARTIFACT_VERSION,
        "cbdsl_version": __version__,
        "source": name,
        "canonical_text": canonical_text(policy),
        "policy_hash": policy.canonical_hash(),
        "source_sha256": _sha(text),
        "ast": json.loads(policy.model_dump_json()),
        "plan": optimized.model_dump(mode="json"),
        "required": {
            "scorers": optimized.required_scorers,
            "columns": list(optimized.scan.columns),
        },
        "pool": None if pool is None else {
            "name": pool.name, "path": str(Path(pool.path).resolve()), "content_hash": pool.content_hash,
            "assets": {a: pool.card.assets[a].sha256 for a in _assets(optimized) if a in pool.card.assets},
        },
        "catalogue_hash": catalogue_hash(),
    }
    return Compiled(policy, typed, optimized, artifact, tuple(d for d in diags if not d.is_error))


def _assets(plan) -> list[str]:
    """Names the plan may read as pool assets: ``asset("...")`` and every string parameter of a scorer or
    function (``checkpoint="my-clip"``, ``tokenizer="gpt2-tok"``); the caller keeps those the pool has."""
    names: list[str] = []

    def strings(params: dict) -> None:
        for v in params.values():
            names.extend(x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str))

    def visit(e) -> None:
        if getattr(e, "op", None) == "asset":
            names.append(e.name)
        strings(getattr(e, "params", None) or {})
        for a in getattr(e, "args", ()) or ():
            visit(a)

    for s in plan.steps:
        strings(getattr(s, "params", None) or {})
        for field in ("expr", "arg", "predicate", "among", "of"):
            value = getattr(s, field, None)
            if value is not None:
                visit(value)
        for a in getattr(s, "args", ()) or ():
            visit(a)
    return sorted(set(names))


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sandbox_dir(start: str | os.PathLike = ".") -> Path:
    """The sandbox's state folder: ``.cbdsl/`` in the nearest folder holding ``cbdsl.toml`` or ``.cbdsl``, else here."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "cbdsl.toml").is_file() or (folder / SANDBOX_DIR).is_dir():
            return folder / SANDBOX_DIR
    return here / SANDBOX_DIR


def write_artifact(artifact: Mapping[str, Any], state: Path) -> Path:
    """Write ``compiled/<policy_hash>.json`` and point ``last.json`` at it (both atomically)."""
    compiled = state / "compiled"
    compiled.mkdir(parents=True, exist_ok=True)
    path = compiled / f"{artifact['policy_hash'][:16]}.json"
    _atomic_write(path, json.dumps(artifact, indent=2, sort_keys=True) + "\n")
    _atomic_write(state / "last.json", json.dumps({"artifact": str(path.relative_to(state)),
                                                  "source": artifact["source"]}, indent=2) + "\n")
    return path


def read_last(state: Path) -> dict[str, Any] | None:
    pointer = state / "last.json"
    if not pointer.is_file():
        return None
    target = state / json.loads(pointer.read_text())["artifact"]
    return json.loads(target.read_text()) if target.is_file() else None


def is_stale(artifact: Mapping[str, Any], text: str, pool=None) -> str | None:
    """Why a compiled artifact no longer matches its source or pool (None when it still does)."""
    if artifact.get("source_sha256") != _sha(text):
        return f"{artifact.get('source')} changed since it was compiled"
    recorded = artifact.get("pool")
    if pool is not None and recorded is not None:
        if recorded["content_hash"] != pool.content_hash:
            return f"pool `{pool.name}` changed since the policy was compiled"
        for name, sha in recorded.get("assets", {}).items():
            current = pool.card.assets.get(name)
            if current is None or current.sha256 != sha:
                return f"asset `{name}` of pool `{pool.name}` changed since the policy was compiled"
    return None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
