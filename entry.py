"""The ``cbdsl`` console script: ``cbdsl check FILE...`` without click, every other command through it.

Why: agents run ``cbdsl check`` hundreds of times per run, and it must start
in under 0.3 s on a 2-core machine; importing click and building the command
group (:mod:`cbdsl.cli`) cost about 15 ms of that. The hot form,
``cbdsl check FILE... [--json] [--pool DIR]``, runs :func:`run_check` here;
any other argument list (``--help``, ``--explain``, stdin, an unknown flag,
another command) and any usage error go to click, whose ``check`` command
calls the same :func:`run_check`, so both paths print the same bytes.

Exit codes: 0 ok (warnings allowed), 1 the policy has errors, 2 usage error
(bad flag, missing file), 3 internal error.
"""

from __future__ import annotations

import os
import sys

EXIT_OK, EXIT_POLICY, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class UsageProblem(Exception):
    """A mistake in how cbdsl was called (a missing file, a bad pool): exit 2 with this message."""


def read_policy(path: str) -> tuple[str, str]:
    """(text, display name) of a policy path, ``-`` meaning stdin.

    The bytes are decoded as they are, without newline translation: spans are
    byte offsets into the file, and the CLI and the API (given the same text)
    report the same positions whether lines end in ``\r\n``, ``\r`` or ``\n``.
    """
    if path == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        data, name = (stdin.read() if stdin is not None else sys.stdin.read()), "<stdin>"
    else:
        name = path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise UsageProblem(f"cannot read {path}: {err.strerror}") from err
    if isinstance(data, str):  # a stdin without bytes underneath (a test's StringIO)
        return data, name
    try:
        return data.decode("utf-8"), name
    except UnicodeDecodeError as err:
        raise UsageProblem(f"{name} is not UTF-8 text ({err.reason} at byte {err.start})") from err


def pool_view(pool: str | None) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """(column name -> type, asset name -> kind) from a pool directory's card; (None, None) without a pool
    (column and asset checks deferred)."""
    import json

    if pool is None:
        return None, None
    card = os.path.join(pool, "pool.json")
    try:
        with open(card, encoding="utf-8") as f:
            data = json.loads(f.read())
    except OSError as err:
        raise UsageProblem(f"no pool card at {card} ({err.strerror}); give a pool directory") from err
    except json.JSONDecodeError as err:
        raise UsageProblem(f"{card} is not valid JSON: {err}") from err
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, dict):
        raise UsageProblem(f"{card} has no `schema` mapping of column name to type")
    assets = data.get("assets") or {}
    if not isinstance(assets, dict) or not all(isinstance(a, dict) for a in assets.values()):
        raise UsageProblem(f"{card} has an `assets` entry that is not a mapping of name to asset")
    return ({str(k): str(v) for k, v in schema.items()},
            {str(name): str(info.get("kind", "")) for name, info in assets.items()})


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
    import json

    # Pydantic looks for plugins in the entry points of every installed distribution when it
    # builds its first validator (~40 ms with torch's stack installed); a check spawns nothing
    # and uses no plugin, so it skips the scan unless the user set the variable.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    without_plugin_scan()
    schema, assets = pool_view(pool)
    inputs = [(path, *read_policy(path)) for path in files]
    from cbdsl.stages import check_source
    from cbdsl.pipelines.loop.sandbox import sandbox_scaffold_warnings
    from cbdsl.dsl.diagnostics import Source, render_all, to_json

    reports, failed, internal = [], False, False
    for path, text, name in inputs:
        policy, diags = check_source(text, name, schema, assets)
        if policy is not None and not any(d.is_error for d in diags):
            diags = diags + sandbox_scaffold_warnings(policy, path)
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


def check_arguments(argv: list[str]) -> tuple[tuple[str, ...], bool, str | None] | None:
    """(files, --json, --pool) when ``argv`` is the plain form ``check FILE... [--json] [--pool DIR]``, else None.

    None hands the call to click: help, ``--explain``, stdin (``-``, which can
    be read only once), ``--``, an unknown or repeated option, no file.
    """
    if argv[:1] != ["check"]:
        return None
    files: list[str] = []
    as_json, pool = False, None
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "--json" and not as_json:
            as_json = True
        elif arg == "--pool" and pool is None:
            pool = next(rest, None)
            if pool is None or pool.startswith("-"):
                return None
        elif arg.startswith("--pool=") and pool is None and len(arg) > len("--pool="):
            pool = arg[len("--pool="):]
        elif arg.startswith("-"):
            return None
        else:
            files.append(arg)
    return (tuple(files), as_json, pool) if files else None


def report_internal_error(err: Exception) -> None:
    """A bug in cbdsl, told in two lines without a traceback (CBDSL_DEBUG=1 shows it)."""
    print(f"internal error [E900]: {type(err).__name__}: {err}\n"
          "This is a bug in cbdsl, not in your policy. Please report it to the cbdsl issue tracker "
          "with the policy file and the command you ran (set CBDSL_DEBUG=1 for the traceback).",
          file=sys.stderr, flush=True)


def main() -> None:
    """Entry point: the plain check here, the rest (and any usage error) through click."""
    from cbdsl.process import configure

    configure()  # before torch can load: how its threads wait on a shared machine
    args = check_arguments(sys.argv[1:])
    if args is not None:
        try:
            code = run_check(*args)
        except UsageProblem:
            code = None  # click reports it, with the usage line, exactly as for any other command
        except BrokenPipeError:
            code = EXIT_OK
        except Exception as err:  # noqa: BLE001 - the one boundary where anything is caught
            if os.environ.get("CBDSL_DEBUG"):
                raise
            report_internal_error(err)
            code = EXIT_INTERNAL
        if code is not None:
            sys.exit(code)
    from cbdsl.cli import main as click_main

    click_main()
