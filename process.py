"""Process-wide settings a cbdsl command makes before any heavy library loads: how torch's threads wait.

Why: torch runs its CPU work on OpenMP threads (GNU libgomp). A thread that
finishes its share of an operation waits for the others, spinning up to
300,000 rounds before it sleeps. On a machine whose cores are taken by other
jobs, the thread it waits for may not be running at all, and the spinning
one holds a core that thread could have had: on this project's 2-core VM a
mini training (two threads) beside one CPU-bound process ran past 20 minutes
instead of one, one core busy the whole time (tests/benchmarks/bench_load.py).
Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) fixes that, but costs a
futex wake-up per operation when the cores are free: 106 s instead of 58 s
for the same training on the idle machine. So the policy follows the
machine at the start of the process:

- other work is running now (fewer free cores than the threads torch will
  use, counting the runnable tasks of ``/proc/loadavg``): ``PASSIVE``;
- the cores are free: a short spin (``GOMP_SPINCOUNT=10000``, about as fast
  as libgomp's default when idle), which bounds the loss if a neighbour
  starts later (4x instead of 20x).

The thread count and how work is split do not change, so neither do the
numbers: the benchmark checks the metrics' bytes in every case. libgomp reads
the variables once, when torch loads it, so this runs first thing in every
entry point (the ``cbdsl`` console script, ``python -m
cbdsl.pipelines.loop.backends.mini``). A value the user set for either variable
stands; an empty ``OMP_WAIT_POLICY`` asks for libgomp's own default, which is
how the benchmark runs cbdsl as it was before.
"""

from __future__ import annotations

import os

#: Spin rounds before a waiting thread sleeps when the cores are free (libgomp's default is 300,000).
IDLE_SPIN = "10000"
#: The threads a training uses on the CPU (``MiniBackend.threads``): the cores it needs free to spin.
TRAINING_THREADS = 2


def configure(threads: int = TRAINING_THREADS, busy: int | None = None) -> str:
    """Choose how OpenMP threads wait, unless the user chose; returns what was decided. ``busy`` is the
    number of cores other work holds (default: :func:`busy_elsewhere`, measured now). Also gives cuBLAS the
    fixed workspace its deterministic mode needs (``CUBLAS_WORKSPACE_CONFIG``, read at its first call; on a
    GPU, the trainings' same bytes run to run depend on it; nothing reads it on a CPU)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if os.environ.get("OMP_WAIT_POLICY") == "":
        del os.environ["OMP_WAIT_POLICY"]  # libgomp's default (it would warn about an empty value)
        return "libgomp default"
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return "user's"
    cores = os.cpu_count() or 1
    if (busy_elsewhere() if busy is None else busy) > cores - min(threads, cores):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "passive"
    os.environ["GOMP_SPINCOUNT"] = IDLE_SPIN
    return "short spin"


def busy_elsewhere() -> int:
    """How many tasks besides this process are runnable right now (``/proc/loadavg``'s instant count, not
    the load average, which stays high for minutes after a heavy step such as a teacher's training); 0
    where it cannot be read."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return max(0, int(f.read().split()[3].split("/")[0]) - 1)  # this process is one of them
    except (OSError, IndexError, ValueError):
        return 0
