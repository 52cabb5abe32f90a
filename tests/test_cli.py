"""The ``cbdsl`` command line: exit codes, JSON shapes, usage errors, no tracebacks."""

from __future__ import annotations

import ast

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from cbdsl import cli as cli_module
from cbdsl.cli import cli

GOOD = 'policy "p"\npool "demo"\nfilter words(text) > 2\nbudget 10\nselect random(seed=1)\n'
BAD = 'policy "p"\nfilter words(text) > 2 and\nbudjet 10\n'


def run(args, input=None):
    return CliRunner().invoke(cli, args, input=input)


def test_check_clean_file_exits_0(tmp_path):
    f = tmp_path / "good.cur"
    f.write_text(GOOD)
    result = run(["check", str(f)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_check_errors_exit_1_with_positioned_diagnostics(tmp_path):
    f = tmp_path / "bad.cur"
    f.write_text(BAD)
    result = run(["check", str(f)])
    assert result.exit_code == 1
    assert "error[E" in result.output and f"{f}:3:1" in result.output


def test_check_json_shape(tmp_path):
    good, bad = tmp_path / "good.cur", tmp_path / "bad.cur"
    good.write_text(GOOD)
    bad.write_text(BAD)
    result = run(["check", "--json", str(good), str(bad)])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert [f["ok"] for f in report["files"]] == [True, False]
    diags = report["files"][1]["diagnostics"]
    for diag in diags:
        assert set(diag) == {"code", "severity", "message", "line", "column", "end_line", "end_column", "hints"}
    misspelled = next(d for d in diags if d["code"] == "E004")
    assert misspelled["line"] == 3 and misspelled["column"] == 1
    assert "did you mean `budget`?" in misspelled["hints"]


def test_check_missing_file_is_a_usage_error(tmp_path):
    result = run(["check", str(tmp_path / "nope.cur")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_check_bad_flag_is_a_usage_error():
    assert run(["check", "--no-such-flag", "x.cur"]).exit_code == 2


def test_check_non_utf8_file_is_a_usage_error(tmp_path):
    f = tmp_path / "bin.cur"
    f.write_bytes(b"filter \xff\xfe > 3\n")
    result = run(["check", str(f)])
    assert result.exit_code == 2
    assert "not UTF-8" in result.output


def test_check_reads_stdin():
    result = run(["check", "-"], input=GOOD)
    assert result.exit_code == 0, result.output


def test_check_with_pool_schema(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "pool.json").write_text(json.dumps({"schema": {"id": "str", "text": "str", "source": "str"}}))
    f = tmp_path / "p.cur"
    f.write_text("filter words(txt) > 2\n")
    result = run(["check", "--pool", str(pool), str(f)])
    assert result.exit_code == 1
    assert "did you mean `text`?" in result.output


def test_check_pool_without_card_is_a_usage_error(tmp_path):
    f = tmp_path / "p.cur"
    f.write_text(GOOD)
    result = run(["check", "--pool", str(tmp_path), str(f)])
    assert result.exit_code == 2 and "pool card" in result.output


def test_explain_known_and_unknown_codes():
    result = run(["check", "--explain", "e005"])
    assert result.exit_code == 0 and "==" in result.output
    result = run(["check", "--explain", "E0005"])
    assert result.exit_code == 2 and "E005" in result.output


def test_explain_json():
    result = run(["check", "--explain", "E006", "--json"])
    assert json.loads(result.output)["code"] == "E006"


def test_parse_prints_ast_json(tmp_path):
    f = tmp_path / "p.cur"
    f.write_text(GOOD)
    result = run(["parse", "--json", str(f)])
    assert result.exit_code == 0
    from cbdsl.dsl.ast import Policy

    assert Policy.model_validate_json(result.output).name == "p"


def test_internal_error_is_reported_without_traceback(tmp_path, monkeypatch, capsys):
    import cbdsl.compiler.check as check_module

    def boom(*_a, **_k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(check_module, "check_source", boom)
    f = tmp_path / "p.cur"
    f.write_text(GOOD)
    monkeypatch.setattr(sys, "argv", ["cbdsl", "check", str(f)])
    try:
        cli_module.main()
    except SystemExit as exit_:
        assert exit_.code == 3
    err = capsys.readouterr().err
    assert "internal error [E900]" in err and "kaboom" in err and "Traceback" not in err


def test_python_dash_m_and_no_heavy_imports_on_check(tmp_path, cbdsl_cmd):
    f = tmp_path / "p.cur"
    f.write_text(GOOD)
    probe = (
        "import sys, runpy; sys.argv = ['cbdsl', 'check', %r]\n"
        "try:\n    runpy.run_module('cbdsl', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "heavy = sorted(m for m in ('polars', 'numpy', 'torch', 'transformers', 'open_clip', 'numba') if m in sys.modules)\n"
        "print('HEAVY', heavy, 'CODE', code)\n" % str(f)
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "HEAVY [] CODE 0" in out.stdout, out.stdout + out.stderr
    version = subprocess.run([*cbdsl_cmd, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "cbdsl" in version.stdout


# --- the lazy group: a command's module loads when the command runs --------------------------


def test_every_command_of_the_table_is_the_click_command_of_that_name():
    ctx = cli.make_context("cbdsl", ["--help"], resilient_parsing=True)
    for name in cli_module.COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name, name
    assert cli.list_commands(ctx) == sorted(cli_module.COMMANDS)


@pytest.mark.parametrize("width", [50, 80, 200])
def test_help_lists_the_commands_as_their_modules_would(width):
    """`cbdsl --help` reads each summary from the command's source; importing every command gives the same."""
    listed = CliRunner().invoke(cli, ["--help"], terminal_width=width).output

    class Imported(cli_module.LazyGroup):
        def format_commands(self, ctx, formatter):
            click.Group.format_commands(self, ctx, formatter)

    imported = Imported(cli.name, lazy_subcommands=cli_module.COMMANDS, help=cli.help, params=cli.params,
                        context_settings=cli.context_settings)
    assert CliRunner().invoke(imported, ["--help"], terminal_width=width).output == listed
    assert all(f"\n  {name} " in listed for name in cli_module.COMMANDS)


@pytest.mark.parametrize("argv, loaded", [
    (["--help"], set()),
    (["--version"], set()),
    (["methods"], {"cbdsl.commands.catalogue", "cbdsl.commands.common", "cbdsl.commands.console"}),
    (["fmt", "--check", "p.cur"], {"cbdsl.commands.policy", "cbdsl.commands.check", "cbdsl.commands.common",
                                   "cbdsl.commands.console"}),
])
def test_a_command_loads_only_its_own_module(tmp_path, argv, loaded):
    (tmp_path / "p.cur").write_text(GOOD)
    probe = ("import sys, runpy; sys.argv = ['cbdsl', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('cbdsl', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('LOADED', sorted(m for m in sys.modules if m.startswith('cbdsl.commands.')), "
             "'polars' in sys.modules, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", probe, *argv], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    # the console script loads the check itself (cbdsl.commands.check and .console) for every command
    assert f"LOADED {sorted(loaded | {'cbdsl.commands.check', 'cbdsl.commands.console'})} False" in out.stderr, \
        out.stderr


def test_run_sets_threads_before_polars_and_numba_load(tmp_path):
    """Both read their thread counts when first imported, so `run` loads its work only after --threads."""
    (tmp_path / "p.cur").write_text(GOOD)
    probe = ("import importlib.abc, os, sys\n"
             "seen = {}\n"
             "class Finder(importlib.abc.MetaPathFinder):\n"
             "    def find_spec(self, name, path, target=None):\n"
             "        if name in ('polars', 'numba'):\n"
             "            seen.setdefault(name, (os.environ.get('POLARS_MAX_THREADS'), "
             "os.environ.get('NUMBA_NUM_THREADS')))\n"
             "sys.meta_path.insert(0, Finder())\n"
             "sys.argv = ['cbdsl', 'run', 'p.cur', '--pool', 'nowhere', '--threads', '3']\n"
             "from cbdsl.entry import main\n"
             "try:\n    main()\n"
             "except SystemExit:\n    pass\n"
             "print('SEEN', dict(seen))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    line = [x for x in out.stdout.splitlines() if x.startswith("SEEN ")]
    assert line, out.stdout + out.stderr
    seen = ast.literal_eval(line[0][5:])
    # numba loads only where a kernel needs it (ids of one length are hashed without it), after --threads
    assert seen["polars"] == ("3", "3") and seen.get("numba", ("3", "3")) == ("3", "3"), seen


def test_a_missing_dependency_is_said_with_what_to_install(monkeypatch, capsys):
    """Not an internal error (E900): the environment lacks a package (faiss on a machine without it)."""
    def lacks_faiss(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'faiss'", name="faiss")

    monkeypatch.setattr(cli_module.cli, "main", lacks_faiss)
    with pytest.raises(SystemExit) as exit_:
        cli_module.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 3 and "error [E901]" in err and "pip install faiss-cpu" in err
    assert "bug in cbdsl" not in err and "Traceback" not in err
    from cbdsl.dsl.codes import explain

    assert explain("E901").title == "a dependency is not installed"
