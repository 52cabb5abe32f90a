"""``cbdsl run``: its own module, because --threads must be set before Polars and Numba load.

Both read their thread counts when first imported, and
:mod:`cbdsl.commands.selection`, which does the work, imports them at its top.
"""

from __future__ import annotations

import os

import click

from cbdsl.pipelines.engine.engines import Engine  # light: Polars and Ray load only when a plan runs


def _threads(threads: int | None) -> None:
    """Pin the worker threads of Polars and Numba (set before either is imported)."""
    if threads:
        os.environ["POLARS_MAX_THREADS"] = str(threads)
        os.environ["NUMBA_NUM_THREADS"] = str(threads)


@click.command("run")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--pool", "pool_opt", help="Pool directory or name (default: the policy's `pool` clause).")
@click.option("--out", "out_dir", default="selection", show_default=True, type=click.Path(file_okay=False),
              help="Where to write the selection manifest and export.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "datacomp", "llava", "hf", "curation-bench"]),
              default="parquet", show_default=True, help="Export format besides the parquet manifest.")
@click.option("--threads", type=click.IntRange(min=1), help="Worker threads (default: all cores).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the plan runs: this process, or a Ray cluster (the same selection, byte for byte).")
@click.option("--address", help="--engine ray: a running Ray cluster (HOST:PORT, ray://HOST:PORT or auto; "
              "default: $RAY_ADDRESS, else a local cluster started for this run).")
@click.option("--block-rows", type=click.IntRange(min=1), help="--engine ray: rows of one task's piece of the pool "
              "(default 1,000,000).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def run_cmd(file: str, pool_opt: str | None, out_dir: str, fmt: str, threads: int | None, engine: str,
            address: str | None, block_rows: int | None, as_json: bool) -> None:
    """Execute FILE against its pool and write the selection under --out.

    Always the manifest selection.parquet (the selected ids in rank order);
    with --format also subset.npy (datacomp: DataComp's uid array), llava.json
    (llava: the original records), hf_dataset (hf: a Hugging Face dataset) or
    curation_bench (curation-bench: Curation-Bench's images + texts dataset).
    With a budget, exactly that many rows (fewer if fewer survive); without
    one, every survivor. The same policy and pool give the same bytes, on
    either engine.
    """
    if engine != "ray" and (address is not None or block_rows is not None):
        raise click.UsageError("--address and --block-rows are settings of the Ray engine: add --engine ray")
    _threads(threads)
    # Polars and Numba read their thread counts when first imported: they load with this, after --threads.
    from cbdsl.commands.selection import run_selection

    run_selection(file, pool_opt, out_dir, fmt, as_json, Engine(engine, address, block_rows))
