"""The console script's fast ``check``: same bytes and exit codes as click's, without importing click."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cbdsl import entry

GOOD = 'policy "p"\npool "demo"\nfilter words(text) > 2\nbudget 10\nselect random(seed=1)\n'
BAD = 'policy "p"\nfilter words(text) > 2 and\nbudjet 10\n'
WARN = 'policy "p"\nmix by source { a: 2, b: 2 }\nbudget 10\nselect random(seed=1)\n'

# The same argv, once through the console script's entry (fast path) and once straight into click.
FAST = "import sys; sys.argv = ['cbdsl', *sys.argv[1:]]; from cbdsl.entry import main; main()"
CLICK = "import sys; sys.argv = ['cbdsl', *sys.argv[1:]]; from cbdsl.cli import main; main()"


@pytest.mark.parametrize("argv, expected", [
    (["check", "a.cur"], (("a.cur",), False, None)),
    (["check", "a.cur", "b.cur", "--json"], (("a.cur", "b.cur"), True, None)),
    (["check", "--pool", "p", "a.cur"], (("a.cur",), False, "p")),
    (["check", "--pool=p", "--json", "a.cur"], (("a.cur",), True, "p")),
])
def test_plain_check_forms_take_the_fast_path(argv, expected):
    assert entry.check_arguments(argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["fmt", "a.cur"], ["check"], ["check", "--help"], ["check", "-h", "a.cur"], ["check", "--explain", "E101"],
    ["check", "-"], ["check", "--", "a.cur"], ["check", "--jsn", "a.cur"], ["check", "--json", "--json", "a.cur"],
    ["check", "a.cur", "--pool"], ["check", "--pool", "--json", "a.cur"], ["check", "--pool=", "a.cur"],
    ["check", "--pool", "p", "--pool", "q", "a.cur"], ["--version"],
])
def test_everything_else_goes_to_click(argv):
    assert entry.check_arguments(argv) is None


def _pool(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "pool.json").write_text(json.dumps({"schema": {"id": "str", "text": "str", "source": "str"}}))
    return pool


@pytest.mark.parametrize("case", ["good", "bad", "warn", "json", "two", "pool", "pool-error", "missing", "dir"])
def test_fast_path_prints_what_click_prints(tmp_path, case):
    for name, text in (("good.cur", GOOD), ("bad.cur", BAD), ("warn.cur", WARN)):
        (tmp_path / name).write_text(text)
    args = {
        "good": ["check", "good.cur"],
        "bad": ["check", "bad.cur"],
        "warn": ["check", "warn.cur"],
        "json": ["check", "--json", "good.cur", "bad.cur"],
        "two": ["check", "good.cur", "bad.cur", "warn.cur"],
        "pool": ["check", "--pool", str(_pool(tmp_path)), "good.cur"],
        "pool-error": ["check", "--pool", str(tmp_path), "good.cur"],
        "missing": ["check", "good.cur", "nowhere.cur"],
        "dir": ["check", str(tmp_path)],
    }[case]
    assert entry.check_arguments(args) is not None
    fast, slow = (subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
                                 timeout=60) for code in (FAST, CLICK))
    assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr)
    assert "Traceback" not in fast.stderr
    assert fast.returncode == {"good": 0, "warn": 0, "pool": 0, "bad": 1, "json": 1, "two": 1}.get(case, 2)
    if case == "missing":
        assert fast.stdout == "" and "cannot read nowhere.cur" in fast.stderr  # no half report before the error


def test_fast_path_does_not_import_click(tmp_path):
    (tmp_path / "good.cur").write_text(GOOD)
    probe = ("import atexit, sys; atexit.register(lambda: print('CLICK', 'click' in sys.modules, file=sys.stderr)); "
             + FAST)
    out = subprocess.run([sys.executable, "-c", probe, "check", "good.cur"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "CLICK False" in out.stderr, out.stderr


def test_fast_path_reports_an_internal_error_without_traceback(tmp_path, monkeypatch, capsys):
    def boom(*_a, **_k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(entry, "run_check", boom)
    monkeypatch.setattr(sys, "argv", ["cbdsl", "check", str(tmp_path / "p.cur")])
    with pytest.raises(SystemExit) as exit_:
        entry.main()
    assert exit_.value.code == entry.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error [E900]" in err and "kaboom" in err and "Traceback" not in err


def _probe(code: str, env_value: str | None = "__all__") -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if env_value is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = env_value
    out = subprocess.run([sys.executable, "-c", "import sys\nfrom cbdsl.commands import check\n" + code],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_plugin_loader_stand_in_answers_as_the_real_loader_does():
    out = _probe(
        "check.without_plugin_scan()\n"
        "from pydantic.plugin._loader import get_plugins\n"
        "stand_in = tuple(get_plugins())\n"
        "from pydantic import BaseModel\n"
        "class M(BaseModel):\n    x: int\n"
        "assert M.model_validate({'x': '3'}).x == 3\n"  # a validator built through the stand-in
        "print('METADATA', 'importlib.metadata' in sys.modules)\n"
        "del sys.modules['pydantic.plugin._loader']\n"
        "import pydantic.plugin._loader as real\n"
        "print('SAME', stand_in == tuple(real.get_plugins()) == ())\n")
    assert "METADATA False" in out and "SAME True" in out


def test_the_stand_in_loads_the_real_loader_for_anything_else():
    out = _probe("check.without_plugin_scan()\n"
                 "import pydantic.plugin._loader as loader\n"
                 "print('GROUP', loader.PYDANTIC_ENTRY_POINT_GROUP)\n"
                 "print('REAL', hasattr(sys.modules['pydantic.plugin._loader'], 'entry_points'))\n")
    assert "GROUP pydantic" in out and "REAL True" in out


@pytest.mark.parametrize("value", [None, "some_plugin"])
def test_no_stand_in_unless_every_plugin_is_disabled(value):
    out = _probe("check.without_plugin_scan()\n"
                 "print('STAND_IN', 'pydantic.plugin._loader' in sys.modules)\n", env_value=value)
    assert "STAND_IN False" in out


def test_a_check_never_imports_importlib_metadata(tmp_path):
    (tmp_path / "good.cur").write_text(GOOD)
    probe = ("import atexit, sys; atexit.register(lambda: print('METADATA', 'importlib.metadata' in sys.modules, "
             "file=sys.stderr)); " + FAST)
    out = subprocess.run([sys.executable, "-c", probe, "check", "good.cur"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "METADATA False" in out.stderr, out.stderr
