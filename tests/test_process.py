"""Process-wide settings of cbdsl's entry points: how torch's OpenMP threads wait on a shared machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cbdsl.process import IDLE_SPIN, busy_elsewhere, configure

PROBE = ("import os, sys; sys.argv = ['cbdsl', '--version']; from cbdsl.entry import main\n"
         "try:\n    main()\nexcept SystemExit:\n    pass\n"
         "print(os.environ.get('OMP_WAIT_POLICY', '-'), os.environ.get('GOMP_SPINCOUNT', '-'))")


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)


def test_free_cores_get_a_short_spin_and_busy_ones_a_passive_wait(clean):
    assert configure(threads=2, busy=0) == "short spin"
    assert os.environ["GOMP_SPINCOUNT"] == IDLE_SPIN and "OMP_WAIT_POLICY" not in os.environ
    del os.environ["GOMP_SPINCOUNT"]
    assert configure(threads=2, busy=1) == "passive"
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in os.environ


def test_a_users_choice_stands_and_an_empty_policy_is_libgomps_default(clean, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    assert configure(busy=5) == "user's" and os.environ["OMP_WAIT_POLICY"] == "active"
    monkeypatch.setenv("OMP_WAIT_POLICY", "")
    assert configure(busy=5) == "libgomp default" and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("GOMP_SPINCOUNT", "7")
    assert configure(busy=0) == "user's" and os.environ["GOMP_SPINCOUNT"] == "7"


def test_a_cpu_bound_neighbour_is_seen_as_busy():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert max(busy_elsewhere() for _ in range(20)) >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_the_console_script_configures_before_anything_else():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    policy, spin = out.stdout.strip().splitlines()[-1].split()
    assert (policy, spin) in (("PASSIVE", "-"), ("-", IDLE_SPIN))


def test_torch_is_not_loaded_before_the_entry_points_configure_it():
    code = "import sys, cbdsl.entry, cbdsl.pipelines.loop.backends.mini\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
