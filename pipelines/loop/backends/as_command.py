"""An embedded backend as a program: ``python -m cbdsl.pipelines.loop.backends.<mini|mini_vlm> SELECTION --pool
POOL --metrics FILE``.

Why: the ``command`` and ``ray`` backends hand a selection to a program; this
runs an embedded backend as such a program, so a Ray job (or any scheduler)
runs the very same recipe and writes the metrics JSON the backends read back.
SELECTION is an exported ``selection.parquet``; the pool must be readable
where the command runs. Every flat setting of the backend
(``Backend.settings()``, but ``format``) is a flag. ``--test-metrics FILE``
writes the suite's test part there (the command backend's
``{test_metrics}``, outside the sandbox); without it no test part is scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.roots import resolve_pool
from cbdsl.pipelines.loop.backends.base import BackendError, Job, check_metrics, split_test
from cbdsl.process import configure


def main(backend_cls, prog: str, argv: list[str] | None = None) -> int:
    """Run ``backend_cls`` (built with ``from_settings``) on a selection; 0 and the metrics file, or 2 and
    the error on stderr."""
    configure()  # before torch loads: how its threads wait on a shared machine
    name = backend_cls.name
    ap = argparse.ArgumentParser(prog=prog, description=f"the {name} backend's train/eval as a command")
    ap.add_argument("selection", help="the exported selection.parquet (id and rank columns)")
    ap.add_argument("--pool", required=True, help="the pool directory (or a registered pool name)")
    ap.add_argument("--metrics", required=True, help="where to write the metrics JSON (the dev part)")
    ap.add_argument("--test-metrics", help="where to write the test part's scores (outside the agent's sandbox); "
                                           "without it the test part is not scored")
    settings = {k: v for k, v in backend_cls.settings().items() if k != "format"}
    for key, default in settings.items():
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)
        ap.add_argument(f"--{key.replace('_', '-')}", type=kind, default=default)
    args = ap.parse_args(argv)

    chosen = {key: getattr(args, key) for key in settings}
    if not args.test_metrics and "test_rows" in chosen:
        chosen["test_rows"] = 0
    try:
        pool = Pool.open(resolve_pool(args.pool))
        selection = pl.read_parquet(args.selection)
        if "rank" not in selection.columns:
            raise BackendError(f"{args.selection} has no `rank` column: give a selection cbdsl exported")
        out = Path(args.metrics)
        out.parent.mkdir(parents=True, exist_ok=True)
        job = Job(pool=pool, selection=selection, export_dir=Path(args.selection).parent, workdir=out.parent,
                  log=lambda m: print(m, flush=True))
        metrics, test = split_test(check_metrics(backend_cls.from_settings(**chosen).run(job), name))
        if test is not None:
            Path(args.test_metrics).write_text(json.dumps(test, indent=2) + "\n")
    except (BackendError, PoolError, OSError, pl.exceptions.PolarsError) as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 2
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{name}: aggregate {metrics['aggregate']:.4f}; metrics in {out}", flush=True)
    return 0
