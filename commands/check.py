"""``cbdsl check``'s work, shared by both front ends: the console script's fast path (:mod:`cbdsl.entry`,
without click) and click's ``check`` command (:mod:`cbdsl.commands.policy`), so both print the same bytes.

Agents run ``cbdsl check`` hundreds of times per run, and it must start in
under 0.3 s on a 2-core machine: this module imports neither click nor
pydantic when it loads (the console script imports it for every command),
and :func:`run_check` turns pydantic's plugin scan off before it loads the
compiler.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cbdsl.commands.console import EXIT_INTERNAL, EXIT_OK, EXIT_POLICY, UsageProblem, read_policy


def without_plugin_scan() -> None:
    """Let pydantic build validators without importing ``importlib.metadata``, when plugins are off.

    Why: the first validator pydantic builds imports ``pydantic.plugin._loader``
    to look for plugins, and that module imports ``importlib.metadata``
    (email, zipfile, csv, socket, ...: 25-50 ms, a tenth of a check)
    before it reads ``PYDANTIC_DISABLE_PLUGINS``. With plugins disabled its
    ``get_plugins()`` returns ``()``; this registers a stand-in module whose
    ``get_plugins()`` returns the same, and which loads the real module for
    any other name, so a newer pydantic that asks for more still gets it.
    ``tests/test_entry.py`` checks the stand-in against the real module.
    """
    import types

    name = "pydantic.plugin._loader"
    if sys.modules.get(name) is not None or os.environ.get("PYDANTIC_DISABLE_PLUGINS") not in ("__all__", "1", "true"):
        return

    class _Loader(types.ModuleType):
        def __getattr__(self, attr: str):
            if attr.startswith("__"):  # the import system asks for __path__ and the like: a plain module
                raise AttributeError(attr)
            import importlib

            if sys.modules.get(name) is self:
                del sys.modules[name]  # the real module replaces the stand-in, then answers

            return getattr(importlib.import_module(name), attr)

    import pydantic.plugin  # the package the stand-in belongs to, as the import system would have it

    stand_in = _Loader(name, "cbdsl's stand-in for pydantic's plugin loader while plugins are disabled")
    stand_in.get_plugins = lambda: ()
    sys.modules[name] = pydantic.plugin._loader = stand_in


def run_check(files: tuple[str, ...], as_json: bool, pool: str | None) -> int:
    """Check each policy file and print its diagnostics; the exit code (3 when cbdsl itself failed: E900).

    Every input is read before anything is printed, so a usage error (a
    missing second file) leaves no partial report behind.
    """
    # Pydantic looks for plugins in the entry points of every installed distribution when it
    # builds its first validator (~40 ms with torch's stack installed); a check spawns nothing
    # and uses no plugin, so it skips the scan unless the user set the variable.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    without_plugin_scan()
    schema = assets = None
    if pool is not None:
        # The pool card's reader imports pydantic: after the scan is off, as the imports below; and only
        # with --pool.
        from cbdsl.pipelines.data.card import PoolError, card_types

        try:
            schema, assets = card_types(pool)
        except PoolError as err:
            raise UsageProblem(str(err)) from err
    inputs = [(path, *read_policy(path)) for path in files]
    # Imported now, after the scan is off, so importlib.metadata stays off the check; and not when this module
    # loads, which the console script does for every command: pydantic and the compiler stay off the others.
    from cbdsl.stages import check_source
    from cbdsl.pipelines.loop.sandbox import find_root  # the same: after the scan is off
    from cbdsl.dsl.diagnostics import Source, render_all, to_json  # the same: after the scan is off

    reports, failed, internal = [], False, False
    for path, text, name in inputs:
        policy, diags = check_source(text, name, schema, assets)
        root = None
        if policy is not None and not any(d.is_error for d in diags):
            root = find_root(Path(path).resolve().parent if path != "-" else Path.cwd())
        if root is not None:
            # The ledger and the scaffold rules (SQLite, the AST diff): only for a policy inside a sandbox.
            from cbdsl.pipelines.loop.scaffold_check import sandbox_scaffold_warnings

            diags = diags + sandbox_scaffold_warnings(policy, root)
        source = Source(text, name)
        ok = not any(d.is_error for d in diags)
        failed |= not ok
        internal |= any(d.code == "E900" for d in diags)  # reported like any diagnostic, but a bug: exit 3
        if as_json:
            reports.append({"path": name, "ok": ok, "diagnostics": [to_json(d, source) for d in diags]})
            continue
        stream = sys.stdout if ok else sys.stderr
        if diags:
            print(render_all(diags, source), file=stream, flush=True)
        errors = sum(d.is_error for d in diags)
        warnings = sum(d.severity == "warning" for d in diags)
        status = "ok" if ok else f"{errors} error{'s' * (errors != 1)}"
        if warnings:
            status += f", {warnings} warning{'s' * (warnings != 1)}"
        print(f"{name}: {status}", file=stream, flush=True)
    if as_json:
        print(json.dumps({"files": reports}, indent=2), flush=True)
    return EXIT_INTERNAL if internal else EXIT_POLICY if failed else EXIT_OK
