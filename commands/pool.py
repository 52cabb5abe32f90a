"""``cbdsl pool``: make, import and inspect pools, and register their assets (whoever runs the benchmark does).

A pool is a directory (parquet shards and a ``pool.json`` card) or a name
looked up in the pool roots (``$CBDSL_POOLS``, else ``$CBDSL_HOME/pools``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from cbdsl.pipelines.data.demo import DEFAULT_ROWS, DEFECT_RATES, DEMO_VERSION, make_demo
from cbdsl.pipelines.data.demo_it import DEFAULT_ROWS as DEFAULT_IT_ROWS, DEFECT_RATES as IT_DEFECT_RATES
from cbdsl.pipelines.data.demo_it import DEMO_IT_VERSION, make_demo_it
from cbdsl.pipelines.data.errors import PoolError
from cbdsl.pipelines.data.importers import import_pool
from cbdsl.pipelines.data.pool import Pool
from cbdsl.pipelines.data.roots import CARD_FILE, resolve_pool, search_path
from cbdsl.pipelines.data.writing import add_asset


@click.group("pool")
def pool_group() -> None:
    """Make, import, inspect pools and register their assets."""


def pool_call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a PoolError (no such pool, a bad source) is a usage error."""
    try:
        return fn(*args, **kwargs)
    except PoolError as err:
        raise click.UsageError(str(err)) from err


@pool_group.command("info")
@click.argument("pool")
@click.option("--json", "as_json", is_flag=True, help="The whole card as JSON.")
def pool_info(pool: str, as_json: bool) -> None:
    """Print a pool's card: schema, rows, per-column statistics, hash, assets."""
    p = pool_call(lambda: Pool.open(pool_call(resolve_pool, pool)))
    card = p.card
    if as_json:
        click.echo(card.model_dump_json(indent=2))
        return
    click.echo(f"pool {card.name}: {card.rows} rows in {len(card.shards)} shard(s), id column `{card.id_column}`")
    click.echo(f"path {p.path}\ncontent hash {card.content_hash}")
    if card.image_folder:
        click.echo(f"image folder {p.image_folder}" + ("" if Path(card.image_folder).is_absolute() else " (inside the pool)"))
    elif card.schema.get("image") == "str":
        click.echo("image folder: none: `image` holds paths as plain strings, so no scorer or backend can read the "
                   "images; import again with --image-folder DIR")
    click.echo("columns:")
    for col, typ in card.schema.items():
        stats = card.stats.get(col, {})
        shown = {k: v for k, v in stats.items() if k in ("null_count", "min", "max", "mean", "distinct", "value_counts")}
        click.echo(f"  {col:<24} {typ:<10} {json.dumps(shown, default=str)[:150]}")
    if card.assets:
        click.echo("assets:")
        for a, info in card.assets.items():
            click.echo(f"  {a:<24} {info.kind:<10} {info.description}")


@pool_group.command("add-asset")
@click.argument("pool")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True))
@click.option("--kind", type=click.Choice(["ids", "corpus", "centroids", "eval", "truth", "labels", "table", "model"]),
              help="What the asset is (default: from NAME and the file's extension); `eval` (an evaluation "
                   "set) and `truth` (ground truth) are the benchmark's: no policy can read them.")
@click.option("--description", default="", help="A line shown by `cbdsl pool info`.")
def pool_add_asset(pool: str, name: str, file: str, kind: str | None, description: str) -> None:
    """Register FILE (a directory for a model) into POOL as asset NAME; policies name it, never the path."""
    p = pool_call(add_asset, pool_call(resolve_pool, pool), name, file, kind=kind, description=description)
    info = p.card.assets[name]
    usage = (f'checkpoint="{name}" (clip_score, perplexity) or tokenizer="{name}" (token_count)'
             if info.kind == "model" else f'asset("{name}")')
    click.echo(f"asset `{name}` ({info.kind}) added to pool `{p.name}`; policies refer to it as {usage}")


@dataclass(frozen=True)
class Demo:
    """A track's demo pool: its name, its maker, default rows, what it holds, and what makes a made one current
    (the generator's version under ``version_key`` in the card's lineage, and the defect rates)."""

    name: str
    maker: Callable[..., Path]
    rows: int
    what: str
    version_key: str
    version: int
    rates: dict

    def is_current(self, lineage: dict, rows: int | None = None, seed: int | None = None) -> bool:
        """Whether a pool of this lineage is what this version makes (for these rows and seed, when given):
        a demo made by an older cbdsl, or with other rates, is not."""
        return (lineage.get(self.version_key) == self.version and lineage.get("defect_rates") == self.rates
                and rows in (None, lineage.get("rows")) and seed in (None, lineage.get("seed")))


#: The demo pool of each track.
DEMOS: dict[str, Demo] = {
    "clip": Demo("demo", make_demo, DEFAULT_ROWS, "synthetic image-caption pairs", "demo_version", DEMO_VERSION,
                 DEFECT_RATES),
    "it": Demo("demo-it", make_demo_it, DEFAULT_IT_ROWS, "LLaVA-shaped instruction conversations about synthetic "
               "images", "demo_it_version", DEMO_IT_VERSION, IT_DEFECT_RATES),
}


@pool_group.command("make-demo")
@click.argument("dest", required=False)
@click.option("--track", type=click.Choice(list(DEMOS)), default="clip", show_default=True,
              help="clip: the CLIP pretraining pool `demo`; it: the instruction-tuning pool `demo-it`.")
@click.option("--rows", type=click.IntRange(min=100), help="Pool rows (default: 50,000 clip, 20,000 it).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Same seed, same pool.")
@click.option("--overwrite", is_flag=True, help="Replace an existing pool there (unless it is this very demo).")
def pool_make_demo(dest: str | None, track: str, rows: int | None, seed: int, overwrite: bool) -> None:
    """Generate a demo pool with known defects, deterministic: `demo` (image-caption pairs) or, with
    --track it, `demo-it` (LLaVA-665K-shaped conversations and their image folder).

    DEST defaults to the pool's name in the first folder of $CBDSL_POOLS, else $CBDSL_HOME/pools (~/.cbdsl/pools).
    A demo already there as this version makes it (same rows, seed and defect rates) is kept: nothing to do.
    """
    demo = DEMOS[track]
    target = Path(dest) if dest else Path(search_path()[0]) / demo.name
    rows = rows or demo.rows
    if (target / CARD_FILE).is_file():
        try:
            lineage = Pool.open(target).card.lineage
        except PoolError:
            lineage = {}
        if demo.is_current(lineage, rows, seed):
            click.echo(f"{demo.name} pool: {rows} rows at {target}, up to date")
            return
    path = pool_call(demo.maker, target, rows=rows, seed=seed, overwrite=overwrite)
    click.echo(f"{demo.name} pool: {rows} rows ({demo.what}) at {path}")


@pool_group.command("import")
@click.argument("kind", type=click.Choice(["auto", "datacomp", "llava", "curation-bench", "hf", "parquet", "jsonl"]))
@click.argument("src", type=click.Path(exists=True))
@click.argument("dest", type=click.Path())
@click.option("--name", help="Pool name (default: the folder name of DEST).")
@click.option("--id-column", help="Id column for hf, parquet and jsonl sources.")
@click.option("--image-folder", type=click.Path(file_okay=False),
              help="llava: the folder the records' image paths are relative to (LLaVA's --image_folder); the "
                   "images are checked and read there, never copied. Without it no scorer or backend can read them.")
@click.option("--duplicate-ids", type=click.Choice(["error", "suffix"]),
              help="llava: refuse repeated ids (error, the default) or rename repeats to ID#2, ID#3 (suffix).")
@click.option("--overwrite", is_flag=True, help="Replace an existing pool at DEST.")
def pool_import(kind: str, src: str, dest: str, name: str | None, id_column: str | None, image_folder: str | None,
                duplicate_ids: str | None, overwrite: bool) -> None:
    """Import SRC (DataComp parquet, LLaVA JSON, a Curation-Bench dataset, HF dataset, parquet, JSONL) as a pool
    at DEST.

    KIND `auto` tells the source kind from SRC. `curation-bench` reads Curation-Bench's subset layout (a
    save_to_disk folder of `images` and `texts`) and copies its images into the pool.
    """
    opts = {"id_column": id_column, "image_folder": image_folder, "duplicate_ids": duplicate_ids}
    p = pool_call(import_pool, kind, src, dest, name=name, overwrite=overwrite,
                  **{k: v for k, v in opts.items() if v is not None})
    click.echo(f"pool `{p.name}`: {p.card.rows} rows at {p.path}")
    if p.card.image_folder:
        columns = "`, `".join(c for c, t in p.schema.items() if t == "image")
        click.echo(f"images: `{columns}` read from {p.image_folder}")
    elif p.schema.get("image") == "str":
        click.echo("images: `image` holds paths only (no --image-folder), so no scorer or backend can read them")
