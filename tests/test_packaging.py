"""The wheel holds ``cbdsl/...`` only (plus the grammar and the method catalogue as package data), and installs
one console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = out.glob("cbdsl-*.whl")
    return wheel


def test_wheel_contains_only_the_cbdsl_package(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"cbdsl", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "cbdsl/grammar/curation.lark" in names
    catalogue = {p.name for p in (ROOT / "scaffolds" / "catalogue").glob("*.toml")}
    assert len(catalogue) > 10
    assert {n.removeprefix("cbdsl/scaffolds/catalogue/") for n in names
            if n.startswith("cbdsl/scaffolds/catalogue/")} == catalogue
    assert "cbdsl/scaffolds/catalogue.py" in names
    assert "cbdsl/cli.py" in names and "cbdsl/dsl/parser.py" in names and "cbdsl/commands/policy.py" in names
    assert not any(n.startswith("cbdsl/tests/") for n in names), "tests are not shipped"
    stale = [n for n in names if n.startswith("cbdsl/") and not (ROOT / n.removeprefix("cbdsl/")).is_file()]
    assert not stale, f"the wheel ships files the tree no longer has (left in build/lib: rm -r build): {stale}"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "cbdsl = cbdsl.entry:main" in entry_points
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()


def test_wheel_installs_into_a_fresh_venv(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    installed = {p.name for p in site.iterdir() if not p.name.startswith(("_", "."))}
    installed = {n for n in installed if not n.endswith(".dist-info") and n != "bin"}
    assert installed == {"cbdsl"}, installed
    assert (site / "cbdsl" / "grammar" / "curation.lark").is_file()
    # the catalogue folder (no __init__.py) sits beside the module of the same name, which it must not shadow
    assert (site / "cbdsl" / "scaffolds" / "catalogue" / "datacomp_basic.toml").is_file()
    # found, not executed: the module imports the scorer registry (pydantic), which this bare venv lacks
    probe = "import importlib.util as u; print(u.find_spec('cbdsl.scaffolds.catalogue').origin)"
    out = subprocess.run([sys.executable, "-S", "-c", probe], env={"PYTHONPATH": str(site)}, cwd=tmp_path,
                         check=True, capture_output=True, text=True, timeout=60).stdout
    assert Path(out.strip()) == site / "cbdsl" / "scaffolds" / "catalogue.py"
