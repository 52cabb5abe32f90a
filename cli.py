"""The ``cbdsl`` command line: one subcommand per stage, ``--json`` everywhere.

Agents call this hundreds of times per run, so it must start fast: heavy
packages (polars, torch, ...) are imported inside the commands that need
them, never at module top. Exit codes: 0 ok (warnings allowed); 1 a policy
has errors, a submission was refused or failed, or the ledger is damaged or
does not verify; 2 usage error (bad flag, missing file, unknown iteration);
3 internal error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from cbdsl.entry import (EXIT_INTERNAL, EXIT_OK, EXIT_POLICY, EXIT_USAGE, UsageProblem, read_policy,
                         report_internal_error, run_check)


def _read(path: str) -> tuple[str, str]:
    """(text, display name) of a policy path, ``-`` meaning stdin; a usage error if it cannot be read."""
    try:
        return read_policy(path)
    except UsageProblem as err:
        raise click.UsageError(str(err)) from err


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cbdsl", prog_name="cbdsl")
def cli() -> None:
    """cbdsl: declarative data-curation policies.

    Write a policy (policy.cur), check and format it, compile it against a
    pool, run it to write the selection, and ask why rows were kept. In a
    sandbox (`cbdsl init`), submit trains and evaluates each iteration with
    the sandbox's backend and records it in a hash-chained ledger, which the
    research commands read. `cbdsl COMMAND --help` explains each command.

    \b
    policies:  check, fmt, parse, compile, run, explain, why
    pools:     pool import, pool make-demo, pool info, pool add-asset
    the loop:  init, submit, search, log, show, leaderboard, verify, reproduce
    research:  diff, trajectory, methods
    """


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--pool", type=click.Path(file_okay=False), help="Pool directory whose schema names the columns.")
@click.option("--explain", "explain_code", metavar="CODE", help="Explain a diagnostic code, e.g. E101.")
def check(files: tuple[str, ...], as_json: bool, pool: str | None, explain_code: str | None) -> None:
    """Parse, resolve and type-check policies; no rows are read.

    With --pool the columns are checked against the pool card's schema; in a
    sandbox, what its scaffold would refuse is a warning. Exits 0 when every
    file is clean (warnings allowed), 1 when a file has errors, 3 when cbdsl
    itself failed (E900). `-` reads stdin.
    """
    if explain_code:
        _explain(explain_code, as_json)
        return
    if not files:
        raise click.UsageError("give at least one policy file (or `-` for stdin), or --explain CODE")
    try:
        code = run_check(files, as_json, pool)
    except UsageProblem as err:
        raise click.UsageError(str(err)) from err
    sys.exit(code)


def _explain(code: str, as_json: bool) -> None:
    from cbdsl.dsl.codes import CODES, explain
    from cbdsl.scaffolds.modes import RULES

    found = explain(code) or RULES.get(code.strip().upper())
    if found is None:
        import difflib

        known = sorted({*CODES, *RULES})
        close = difflib.get_close_matches(code.upper(), known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise click.UsageError(f"no diagnostic code {code!r}.{hint} Known codes: {', '.join(known)}")
    if as_json:
        click.echo(json.dumps({"code": found.code, "title": found.title, "explanation": found.explanation}))
    else:
        click.echo(f"{found.code}: {found.title}\n\n{found.explanation}")


@cli.command("fmt")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--check", "check_only", is_flag=True, help="Change nothing; exit 1 if a file is not formatted.")
def fmt_cmd(files: tuple[str, ...], check_only: bool) -> None:
    """Rewrite policies in canonical form (idempotent; comments kept; lines end in \\n).

    `cbdsl fmt -` reads stdin and writes the result to stdout.
    """
    from cbdsl.dsl.diagnostics import render_all
    from cbdsl.dsl.format import format_policy
    from cbdsl.dsl.parser import parse_diagnostics
    from cbdsl.dsl.diagnostics import Source

    status = EXIT_OK
    for path in files:
        text, name = _read(path)
        policy, diags = parse_diagnostics(text, name)
        if policy is None:
            click.echo(render_all(diags, Source(text, name)), err=True)
            click.echo(f"{name}: not formatted: fix the syntax errors first", err=True)
            status = EXIT_POLICY
            continue
        formatted = format_policy(policy)  # lines end in `\n`, whatever the file used
        if check_only:
            if formatted != text:
                only = "\r" in text and formatted == text.replace("\r\n", "\n").replace("\r", "\n")
                why = ": only its line ends, which cbdsl fmt writes as \\n" if only else ""
                click.echo(f"{name}: would reformat{why} (run `cbdsl fmt {path}`)")
                status = EXIT_POLICY
        elif path == "-":
            click.echo(formatted, nl=False)
        elif formatted != text:
            tmp = Path(path).with_name(Path(path).name + ".cbdsl-tmp")
            tmp.write_bytes(formatted.encode("utf-8"))  # bytes: no newline translation
            os.replace(tmp, path)  # atomic: never a half-written policy
            click.echo(f"{name}: formatted", err=True)
    sys.exit(status)


@cli.command("parse")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Compact JSON on one line (default: indented).")
def parse_cmd(file: str, as_json: bool) -> None:
    """Print the AST of a policy as JSON (spans are byte offsets)."""
    from cbdsl.dsl.diagnostics import Source, render_all
    from cbdsl.dsl.parser import parse_diagnostics

    text, name = _read(file)
    policy, diags = parse_diagnostics(text, name)
    if policy is None:
        click.echo(render_all(diags, Source(text, name)), err=True)
        sys.exit(EXIT_POLICY)
    click.echo(policy.model_dump_json(indent=None if as_json else 2))


# --- compile, run, explain, why -------------------------------------------------------------


def _threads(threads: int | None) -> None:
    """Pin the worker threads of Polars and Numba (set before either is imported)."""
    if threads:
        os.environ["POLARS_MAX_THREADS"] = str(threads)
        os.environ["NUMBA_NUM_THREADS"] = str(threads)


def _open_pool(pool_opt: str | None, text: str, name: str):
    """The pool: --pool (a path or a name, given by whoever runs), else the policy's own `pool "NAME"` clause,
    which names a pool of the pool roots (or, in a sandbox, the sandbox's pool) and never a directory."""
    from cbdsl.compiler.rule8 import looks_like_path
    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.data.errors import PoolError
    from cbdsl.pipelines.data.roots import resolve_pool

    target = pool_opt
    try:
        if target is None:
            target = _pool_clause(text, name)
            if looks_like_path(target):
                _refuse_policy(text, name)  # E114, with the policy's other errors
            return Pool.open(_policy_pool(target))
        return Pool.open(resolve_pool(target))
    except PoolError as err:
        hint = "" if Path(target).exists() else (
            f"\nMake the demo pool with `cbdsl pool make-demo`, or import one with `cbdsl pool import`."
            if target == "demo" else "")
        raise click.UsageError(f"{err}{hint}") from err


def _pool_clause(text: str, name: str) -> str:
    """The pool a policy's text names; its syntax errors (exit 1) or a usage error when it names none."""
    from cbdsl.dsl import ast
    from cbdsl.dsl.parser import parse_diagnostics

    policy, diags = parse_diagnostics(text, name)
    if policy is None:
        _refuse_policy(text, name, diags)
    pools = policy.of_kind(ast.PoolClause)
    if not pools:
        raise click.UsageError(f"{name} names no pool: add `pool \"demo\"` to it or pass --pool DIR")
    return pools[0].name.value


def _policy_pool(name: str) -> Path:
    """The directory of the pool a policy names: in a sandbox, its own pool when the name is the sandbox's
    (as cbdsl.toml gives it, or the pool card's name), else a pool of the pool roots."""
    from cbdsl.pipelines.data.roots import resolve_pool
    from cbdsl.pipelines.loop.sandbox import SandboxError, find_root, load, pool_dir

    root = find_root(".")
    if root is None:
        return resolve_pool(name)
    try:
        cfg = load(root)
    except SandboxError:
        return resolve_pool(name)
    own = pool_dir(cfg)
    if name == cfg.pool or name == _card_name(own):
        return own
    return resolve_pool(name, search=[cfg.root / "pools"])


def _card_name(pool_path: Path) -> str | None:
    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.data.errors import PoolError

    try:
        return Pool.open(pool_path).name
    except PoolError:
        return None


def _refuse_policy(text: str, name: str, diags=None) -> None:
    """Print a policy's errors (checked without a pool when ``diags`` is None) and exit 1."""
    from cbdsl.stages import check_source
    from cbdsl.dsl.diagnostics import Source, render_all

    if diags is None:
        diags = check_source(text, name)[1]
    click.echo(render_all(diags, Source(text, name)), err=True)
    click.echo(f"{name}: not compiled: fix the errors above (`cbdsl check {name}` shows them)", err=True)
    sys.exit(EXIT_POLICY)


def _compiled(file: str, pool_opt: str | None):
    """Compile FILE against its pool; policy errors print as diagnostics and exit 1."""
    from cbdsl.stages import compile_source
    from cbdsl.dsl.diagnostics import PolicyError

    text, name = _read(file)
    pool = _open_pool(pool_opt, text, name)
    try:
        return compile_source(text, name, pool), pool, text, name
    except PolicyError as err:
        _refuse_policy(err.source.text if err.source else text, name, err.diagnostics)


def _execute(compiled, pool, explain: bool = False, examples: int = 3):
    from cbdsl.stages import lower
    from cbdsl.scorers.api import RunError
    from cbdsl.pipelines.engine.execute import execute
    from cbdsl.scorers.api import asset_ids

    low = lower(compiled.plan, pool.schema, lambda asset: asset_ids(pool, asset))
    try:
        return execute(low, pool, explain=explain, examples=examples)
    except RunError as err:
        click.echo(f"error: {err.message}", err=True)
        for hint in err.hints:
            click.echo(f"  = hint: {hint}", err=True)
        sys.exit(EXIT_POLICY)


@cli.command("compile")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--pool", "pool_opt", help="Pool directory or name (default: the policy's `pool` clause).")
@click.option("--json", "as_json", is_flag=True, help="Print the compiled artifact as JSON.")
def compile_cmd(file: str, pool_opt: str | None, as_json: bool) -> None:
    """Check, plan and optimize FILE against its pool; write the compiled artifact and print the plan.

    The artifact goes under the sandbox's .cbdsl/ (or ./.cbdsl/ outside a
    sandbox); `cbdsl submit` submits the last one compiled.
    """
    from cbdsl.pipelines.loop.artifacts import sandbox_dir, write_artifact
    from cbdsl.pipelines.engine.execute import describe_step

    compiled, pool, _text, name = _compiled(file, pool_opt)
    artifact = {**compiled.artifact, "source_path": str(Path(file).resolve()) if file != "-" else None}
    path = write_artifact(artifact, sandbox_dir())
    if as_json:
        click.echo(json.dumps({**artifact, "artifact_path": str(path)}, indent=2))
        return
    click.echo(f"compiled {name} against pool `{pool.name}` ({pool.card.rows} rows)  policy {compiled.artifact['policy_hash'][:12]}")
    for step in compiled.plan.steps:
        click.echo(f"  {step.cost:<10} {describe_step(step)}")
    click.echo(f"rules: {', '.join(compiled.plan.rules)}")
    click.echo(f"artifact: {path}")
    click.echo("next: `cbdsl run " + (file if file != "-" else "POLICY") + "` (or `cbdsl submit` in a sandbox)")


@cli.command("run")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--pool", "pool_opt", help="Pool directory or name (default: the policy's `pool` clause).")
@click.option("--out", "out_dir", default="selection", show_default=True, type=click.Path(file_okay=False),
              help="Where to write the selection manifest and export.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "datacomp", "llava", "hf"]), default="parquet",
              show_default=True, help="Export format besides the parquet manifest.")
@click.option("--threads", type=click.IntRange(min=1), help="Worker threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def run_cmd(file: str, pool_opt: str | None, out_dir: str, fmt: str, threads: int | None, as_json: bool) -> None:
    """Execute FILE against its pool and write the selection under --out.

    Always the manifest selection.parquet (the selected ids in rank order);
    with --format also subset.npy (datacomp: DataComp's uid array), llava.json
    (llava: the original records) or hf_dataset (hf: a Hugging Face dataset).
    With a budget, exactly that many rows (fewer if fewer survive); without
    one, every survivor. The same policy and pool give the same bytes.
    """
    _threads(threads)
    from cbdsl.pipelines.data.exports import export
    from cbdsl.pipelines.data.errors import PoolError

    compiled, pool, _text, name = _compiled(file, pool_opt)
    result = _execute(compiled, pool)
    try:
        manifest = export(pool, result.selection, out_dir, "parquet")
        exported = export(pool, result.selection, out_dir, fmt, check=False) if fmt != "parquet" else manifest
    except PoolError as err:
        raise click.UsageError(str(err)) from err
    summary = {
        "policy": name, "policy_hash": compiled.artifact["policy_hash"], "pool": pool.name,
        "pool_rows": result.pool_rows, "survivors": result.survivors, "after_dedup": result.after_dedup,
        "selected": result.selection.height, "selection_hash": result.selection_hash(),
        "groups": result.quotas, "warnings": result.warnings,
        "manifest": str(manifest), "export": str(exported),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"{name}: selected {result.selection.height} of {result.pool_rows} rows "
               f"({result.survivors} passed the filters, {result.after_dedup} after dedup)")
    if len(result.quotas) > 1:
        for g, q in result.quotas.items():
            click.echo(f"  {g:<16} {q['quota']:>8} of {q['available']:>8} available")
    click.echo(f"selection {summary['selection_hash'][:16]}  manifest {manifest}" +
               (f"  export {exported}" if fmt != "parquet" else ""))


@cli.command("explain")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--pool", "pool_opt", help="Pool directory or name (default: the policy's `pool` clause).")
@click.option("--run", "do_run", is_flag=True, help="Also run it: the row funnel, quotas, thresholds, dropped rows.")
@click.option("--examples", default=3, show_default=True, help="Dropped rows to show per clause.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def explain_cmd(file: str, pool_opt: str | None, do_run: bool, examples: int, as_json: bool) -> None:
    """The plan with each step's cost class; with --run, why rows were kept or dropped.

    --run executes the policy and adds the row funnel of each filter, a few
    dropped rows per clause, the rows without a value per score, the values
    the statistics resolved to, and the mix quotas.
    """
    from cbdsl.pipelines.engine.execute import describe_step

    compiled, pool, _text, name = _compiled(file, pool_opt)
    steps = [{"cost": s.cost, "step": describe_step(s)} for s in compiled.plan.steps]
    report: dict = {"policy": name, "pool": pool.name, "plan": steps, "rules": list(compiled.plan.rules)}
    if do_run:
        result = _execute(compiled, pool, explain=True, examples=examples)
        report["funnel"] = [vars(f) for f in result.funnel or []]
        report["thresholds"] = result.thresholds
        report["missing"] = result.missing
        report["dropped_examples"] = result.examples
        report["after_dedup"] = {"rows_in": result.survivors, "rows_out": result.after_dedup}
        report["groups"] = result.quotas
        report["selected"] = result.selection.height
        report["warnings"] = result.warnings
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    click.echo(f"plan of {name} on pool `{pool.name}` ({pool.card.rows} rows):")
    for s in steps:
        click.echo(f"  {s['cost']:<10} {s['step']}")
    if not do_run:
        click.echo("(`cbdsl explain --run` adds the row funnel)")
        return
    click.echo("\nfilter funnel (rows in -> out; rows of the whole population passing the clause alone):")
    for f in report["funnel"]:
        click.echo(f"  {f['rows_in']:>9} -> {f['rows_out']:>9}  alone {f['passed_alone']:>9}  {f['clause']}")
        for row in result.examples.get(f["clause"], []):
            click.echo(f"      dropped: {json.dumps(row, default=str)}")
    if any(s.step == "dedup" for s in compiled.plan.steps):
        click.echo(f"  {result.survivors:>9} -> {result.after_dedup:>9}  dedup")
    if result.missing:
        click.echo("\nrows without a value (null or NaN: they fail every filter and sort last):")
        for column, count in result.missing.items():
            click.echo(f"  {count:>9} of {result.frame.height:>9}  {column}")
    if result.thresholds:
        click.echo("\nstatistics resolved to:")
        for k, v in result.thresholds.items():
            click.echo(f"  {k} = {json.dumps(v, default=str)}")
    click.echo("\nmix groups (quota vs rows available):")
    for g, q in result.quotas.items():
        click.echo(f"  {g:<16} quota {q['quota']:>8}  available {q['available']:>8}")
    for w in result.warnings:
        click.echo(f"warning: {w}")
    click.echo(f"selected {result.selection.height} rows")


@cli.command("why")
@click.argument("row_id")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--pool", "pool_opt", help="Pool directory or name (default: the policy's `pool` clause).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def why_cmd(row_id: str, file: str, pool_opt: str | None, as_json: bool) -> None:
    """Which clause kept or dropped the row ROW_ID, and with what values (FILE runs on its pool)."""
    import polars as pl

    from cbdsl.pipelines.engine.execute import FilterStep

    compiled, pool, _text, name = _compiled(file, pool_opt)
    result = _execute(compiled, pool, explain=True)
    id_col = pool.id_column
    frame = result.frame
    row = frame.filter(pl.col(id_col).cast(pl.String) == row_id)
    if row.height == 0:
        raise click.UsageError(f"no row with {id_col} {row_id!r} in pool `{pool.name}`")
    filters = [*compiled.plan.of(FilterStep)]
    lowered_order = [f for f in filters if f.early] + [f for f in filters if not f.early]
    verdicts = []
    for i, f in enumerate(lowered_order):
        values = {c: row.get_column(c)[0] for c in sorted(f.reads) if c in row.columns}
        verdicts.append({"clause": f.clause, "passed": bool(row.get_column(f"#f{i}")[0]), "values": values})
    survived = all(v["passed"] for v in verdicts)
    deduped = survived and row_id in set(result.deduped_ids.cast(pl.String).to_list())
    chosen = result.selection.filter(pl.col(id_col) == row_id)
    outcome = {
        "id": row_id, "filters": verdicts, "passed_filters": survived,
        "dedup": None if not survived else ("kept" if deduped else "removed as a duplicate"),
        "selected": chosen.height == 1,
        "rank": int(chosen["rank"][0]) if chosen.height else None,
        "group": chosen["group"][0] if chosen.height else None,
    }
    if as_json:
        click.echo(json.dumps(outcome, indent=2, default=str))
        return
    for v in verdicts:
        mark = "kept   " if v["passed"] else "DROPPED"
        click.echo(f"  {mark} by `{v['clause']}`  with {json.dumps(v['values'], default=str)}")
    if survived:
        click.echo(f"  dedup: {outcome['dedup']}")
    if outcome["selected"]:
        click.echo(f"{row_id}: selected, rank {outcome['rank']}" + (f", group {outcome['group']}" if outcome["group"] else ""))
    elif survived and deduped:
        select = [s for s in compiled.plan.steps if s.step == "select"][0]
        click.echo(f"{row_id}: passed the filters and dedup, but `{select.clause}` did not pick it within its quota")
    else:
        click.echo(f"{row_id}: not selected")


# --- pools ------------------------------------------------------------------------------------


@cli.group("pool")
def pool_group() -> None:
    """Make, import, inspect pools and register their assets."""


def _pool_call(fn, *args, **kwargs):
    from cbdsl.pipelines.data.errors import PoolError

    try:
        return fn(*args, **kwargs)
    except PoolError as err:
        raise click.UsageError(str(err)) from err


@pool_group.command("info")
@click.argument("pool")
@click.option("--json", "as_json", is_flag=True, help="The whole card as JSON.")
def pool_info(pool: str, as_json: bool) -> None:
    """Print a pool's card: schema, rows, per-column statistics, hash, assets."""
    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.data.roots import resolve_pool

    p = _pool_call(lambda: Pool.open(_pool_call(resolve_pool, pool)))
    card = p.card
    if as_json:
        click.echo(card.model_dump_json(indent=2))
        return
    click.echo(f"pool {card.name}: {card.rows} rows in {len(card.shards)} shard(s), id column `{card.id_column}`")
    click.echo(f"path {p.path}\ncontent hash {card.content_hash}")
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
    from cbdsl.pipelines.data.writing import add_asset
    from cbdsl.pipelines.data.roots import resolve_pool

    p = _pool_call(add_asset, _pool_call(resolve_pool, pool), name, file, kind=kind, description=description)
    info = p.card.assets[name]
    usage = (f'checkpoint="{name}" (clip_score, perplexity) or tokenizer="{name}" (token_count)'
             if info.kind == "model" else f'asset("{name}")')
    click.echo(f"asset `{name}` ({info.kind}) added to pool `{p.name}`; policies refer to it as {usage}")


@pool_group.command("make-demo")
@click.argument("dest", required=False)
@click.option("--rows", default=50_000, show_default=True, type=click.IntRange(min=100), help="Pool rows.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Same seed, same pool.")
@click.option("--overwrite", is_flag=True, help="Replace an existing pool there.")
def pool_make_demo(dest: str | None, rows: int, seed: int, overwrite: bool) -> None:
    """Generate the demo pool: synthetic image-text pairs with known defects, deterministic.

    DEST defaults to demo/ in the first folder of $CBDSL_POOLS, else ~/.cbdsl/pools/demo.
    """
    from cbdsl.pipelines.data.demo import make_demo
    from cbdsl.pipelines.data.roots import search_path

    target = Path(dest) if dest else Path(search_path()[0]) / "demo"
    path = _pool_call(make_demo, target, rows=rows, seed=seed, overwrite=overwrite)
    click.echo(f"demo pool: {rows} rows at {path}")


@pool_group.command("import")
@click.argument("kind", type=click.Choice(["auto", "datacomp", "llava", "hf", "parquet", "jsonl"]))
@click.argument("src", type=click.Path(exists=True))
@click.argument("dest", type=click.Path())
@click.option("--name", help="Pool name (default: the folder name of DEST).")
@click.option("--id-column", help="Id column for hf, parquet and jsonl sources.")
@click.option("--overwrite", is_flag=True, help="Replace an existing pool at DEST.")
def pool_import(kind: str, src: str, dest: str, name: str | None, id_column: str | None, overwrite: bool) -> None:
    """Import SRC (DataComp parquet, LLaVA JSON, HF dataset, parquet, JSONL) as a pool at DEST.

    KIND `auto` tells the source kind from SRC.
    """
    from cbdsl.pipelines.data.importers import import_pool

    opts = {"id_column": id_column} if id_column else {}
    p = _pool_call(import_pool, kind, src, dest, name=name, overwrite=overwrite, **opts)
    click.echo(f"pool `{p.name}`: {p.card.rows} rows at {p.path}")


# --- the loop: init, submit, ledger -------------------------------------------------------------


def _sandbox():
    from cbdsl.pipelines.loop.sandbox import SandboxError, load

    try:
        return load()
    except SandboxError as err:
        raise click.UsageError(str(err)) from err


@cli.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--pool", "pool_name", default="demo", show_default=True, help="Pool name or directory.")
@click.option("--budget", default=5000, show_default=True, type=click.IntRange(min=1), help="Rows to select.")
@click.option("--backend", default="mini", show_default=True, type=click.Choice(["mini", "command", "ray"]),
              help="What trains and evaluates a submission: mini (a small CLIP, here), command (your own "
                   "command), ray (a Ray job); settings go in cbdsl.toml.")
@click.option("--scaffold", default="open", show_default=True, type=click.Choice(["open", "guide", "cite", "adapt"]),
              help="Rules submit enforces: open (none), guide (none, plus a strategy guide), cite (cite a "
                   "catalogue method), adapt (cite, instantiate and adapt one).")
@click.option("--iterations", default=10, show_default=True, type=click.IntRange(min=1),
              help="Scored submissions allowed (the baseline not counted).")
def init_cmd(directory: str, pool_name: str, budget: int, backend: str, scaffold: str, iterations: int) -> None:
    """Make a sandbox in DIRECTORY: cbdsl.toml, policy.cur, PROTOCOL.md, POOL.md, METHODS.md.

    The demo pool is made first if it is missing and --pool is demo.
    """
    from cbdsl.pipelines.data.pool import Pool
    from cbdsl.pipelines.data.errors import PoolError
    from cbdsl.pipelines.data.roots import resolve_pool, search_path
    from cbdsl.pipelines.loop.sandbox import SandboxError, init

    try:
        pool = Pool.open(resolve_pool(pool_name))
    except PoolError:
        if pool_name != "demo":
            raise click.UsageError(f"no pool `{pool_name}`: import one with `cbdsl pool import` or give a directory")
        from cbdsl.pipelines.data.demo import make_demo

        target = Path(search_path()[0]) / "demo"
        click.echo(f"making the demo pool at {target} (once; a few seconds)")
        pool = Pool.open(_pool_call(make_demo, target))
    try:
        cfg = init(directory, pool=pool_name, budget=budget, backend=backend, scaffold=scaffold,
                   iterations=iterations, pool_obj=pool)
    except SandboxError as err:
        raise click.UsageError(str(err)) from err
    click.echo(f"sandbox ready in {cfg.root}: pool `{pool_name}` ({pool.card.rows} rows), budget {budget}, "
               f"backend {backend}, scaffold {scaffold}, {iterations} iterations")
    click.echo("next: read PROTOCOL.md, edit policy.cur, then `cbdsl compile policy.cur && cbdsl submit`")


@cli.command("submit")
@click.option("-m", "--message", default="", help="What this iteration changes, and why.")
@click.option("--wait", is_flag=True, help="Wait for a submission in progress instead of refusing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable feedback.")
def submit_cmd(message: str, wait: bool, as_json: bool) -> None:
    """Submit the last compiled policy: run it, check budget and scaffold, audit, train and evaluate, record.

    The sandbox's backend trains and evaluates the selection; the iteration
    goes into the ledger as scored, refused (nothing trained, no iteration
    used) or failed, and the feedback is printed. The first submission scores
    the random baseline (iteration 0) first. Exits 0 when scored.
    """
    from cbdsl.pipelines.loop.backends.base import BackendError
    from cbdsl.pipelines.loop.ledger import LedgerError
    from cbdsl.pipelines.data.errors import PoolError
    from cbdsl.pipelines.loop.submit import SubmitError, render_feedback, submit

    cfg = _sandbox()
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    try:
        fb = submit(cfg, message=message, wait=wait, log=log)
    except (SubmitError, LedgerError, PoolError, BackendError) as err:
        if as_json:
            click.echo(json.dumps({"status": "not submitted", "error": str(err)}))
        else:
            click.echo(f"not submitted: {err}", err=True)
        sys.exit(EXIT_POLICY)
    if as_json:
        click.echo(json.dumps(fb.to_json(), indent=2, default=str))
    else:
        click.echo(render_feedback(fb))
    sys.exit(EXIT_OK if fb.entry.status == "scored" else EXIT_POLICY)


@cli.command("search")
@click.option("--iterations", default=10, show_default=True, type=click.IntRange(min=1),
              help="Proposals to submit (at most the iterations the sandbox has left).")
@click.option("--strategy", type=click.Choice(["mutate", "random"]), default="mutate", show_default=True,
              help="mutate: hill climbing from the best policy so far; random: independent random policies.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Same seed, same search.")
@click.option("--max-cost", type=click.Choice(["metadata", "cpu_model", "gpu_model"]), default="gpu_model",
              show_default=True, help="The most expensive scorers a proposal may use.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def search_cmd(iterations: int, strategy: str, seed: int, max_cost: str, as_json: bool) -> None:
    """Propose policies and submit each through the loop, keeping the best: a baseline with no LLM.

    mutate edits the AST of the best policy so far; random draws independent
    policies. Each proposal uses one of this sandbox's iterations.
    """
    from cbdsl.pipelines.loop.backends.base import BackendError
    from cbdsl.pipelines.loop.ledger import LedgerError
    from cbdsl.pipelines.data.errors import PoolError
    from cbdsl.research.search import SearchError, render, search
    from cbdsl.pipelines.loop.submit import SubmitError

    cfg = _sandbox()
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    try:
        result = search(cfg, iterations=iterations, strategy=strategy, seed=seed, max_cost=max_cost, log=log)
    except (SearchError, SubmitError, LedgerError, PoolError, BackendError) as err:
        click.echo(f"search not run: {err}", err=True)
        sys.exit(EXIT_POLICY)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else render(result))
    sys.exit(EXIT_OK if result.steps else EXIT_POLICY)


def _read_ledger(read):
    """``read(ledger)`` on the sandbox's ledger, then verify it: (what was read, the verdict). A ledger
    that cannot be read exits 1 with what is wrong and how to restore it; ``read``'s own LedgerError
    (an unknown iteration) is the caller's, unless the ledger does not verify."""
    from cbdsl.pipelines.loop.ledger import LedgerBroken, LedgerError
    from cbdsl.pipelines.loop.submit import ledger_for

    cfg = _sandbox()
    try:
        ledger = ledger_for(cfg)
    except LedgerError as err:
        _ledger_failed(err)
    try:
        try:
            value = read(ledger)
        except LedgerBroken as err:
            _ledger_failed(err)
        except LedgerError:
            _unverified(_verdict(ledger))
            raise
        return value, _verdict(ledger)
    finally:
        ledger.close()


def _verdict(ledger):
    from cbdsl.pipelines.loop.ledger import LedgerError

    try:
        return ledger.verify()
    except LedgerError as err:
        _ledger_failed(err)


def _ledger_failed(err: Exception) -> None:
    """A ledger that cannot be read or verified: what is wrong and how to restore it, exit 1."""
    click.echo(str(err), err=True)
    sys.exit(EXIT_POLICY)


def _unverified(verdict) -> None:
    """After what a command printed: say on stderr that the ledger does not verify, and exit 1."""
    if not verdict.ok:
        click.echo(f"warning: what is shown above comes from a ledger that does not verify\n{verdict.report()}",
                   err=True)
        sys.exit(EXIT_POLICY)


def _score(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


@cli.command("log")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def log_cmd(as_json: bool) -> None:
    """Every iteration of the sandbox: status, score, message (exit 1 when the ledger does not verify)."""
    entries, verdict = _read_ledger(lambda ledger: ledger.entries())
    if as_json:
        click.echo(json.dumps([{"iteration": e.n, "status": e.status, "aggregate": e.aggregate, "message": e.message,
                                "policy_hash": e.policy_hash, "selection_hash": e.selection_hash, "error": e.error}
                               for e in entries], indent=2))
    else:
        if not entries:
            click.echo("no submissions yet: `cbdsl compile policy.cur && cbdsl submit`")
        for e in entries:
            note = e.message if e.status == "scored" else (e.error or "")
            click.echo(f"{e.n:>4}  {e.status:<8} {_score(e.aggregate):>8}  {e.policy_hash[:10]}  {note}")
    _unverified(verdict)


@cli.command("show")
@click.argument("n", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_cmd(n: int, as_json: bool) -> None:
    """One iteration in full: its policy, audit, metrics and timings (exit 1 when the ledger does not verify)."""
    from cbdsl.pipelines.loop.ledger import LedgerError

    try:
        e, verdict = _read_ledger(lambda ledger: ledger.get(n))
    except LedgerError as err:
        raise click.UsageError(str(err)) from err
    data = {k: getattr(e, k) for k in e.__dataclass_fields__ if k != "policy_ast"}
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        _unverified(verdict)
        return
    click.echo(f"iteration {e.n}: {e.status}" + (f" - {e.message}" if e.message else ""))
    if e.error:
        click.echo(f"error: {e.error}")
    click.echo(f"policy {e.policy_hash[:16]}  selection {(e.selection_hash or '-')[:16]}  rows {e.selected}")
    if e.metrics:
        benchmarks = e.metrics.get("benchmarks")
        for name, v in sorted((benchmarks if isinstance(benchmarks, dict) else {}).items()):
            click.echo(f"  {name:<28} {_score(v)}")
        click.echo(f"  {'aggregate':<28} {_score(e.aggregate)}")
    if e.audit:
        click.echo(f"audit: {e.audit.get('verdict')} ({e.audit.get('flagged')} flagged)")
    click.echo("\n" + e.policy_text)
    _unverified(verdict)


@cli.command("leaderboard")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def leaderboard_cmd(as_json: bool) -> None:
    """Scored iterations, best first (exit 1, with a warning, when the ledger does not verify)."""
    entries, verdict = _read_ledger(lambda ledger: ledger.scored())
    scored = sorted(entries, key=lambda e: (e.aggregate is None, -(e.aggregate or 0.0), e.n))
    if as_json:
        click.echo(json.dumps([{"rank": i + 1, "iteration": e.n, "aggregate": e.aggregate, "message": e.message,
                                "benchmarks": (e.metrics or {}).get("benchmarks")} for i, e in enumerate(scored)],
                              indent=2))
    else:
        if not scored:
            click.echo("nothing scored yet")
        for i, e in enumerate(scored):
            label = "baseline" if e.is_baseline else (e.message or "")
            click.echo(f"{i + 1:>3}. iteration {e.n:<4} {_score(e.aggregate)}  {label}")
    _unverified(verdict)


@cli.command("verify")
@click.option("--accept-settings", is_flag=True,
              help="For whoever runs the benchmark: record cbdsl.toml's settings as they are now in the witness "
                   "(after changing them on purpose), then verify.")
def verify_cmd(accept_settings: bool) -> None:
    """Check the ledger: its hash chain, then its witness outside the sandbox (head, number of entries,
    format, benchmark settings). An edited, deleted, rewound, replaced or damaged ledger, or changed
    settings, are reported with the file and how to restore it (exit 1)."""
    if accept_settings:
        from cbdsl.pipelines.loop.ledger import LedgerError
        from cbdsl.pipelines.loop.witness import Witness

        try:
            accepted = Witness.of(_sandbox()).accept_settings()
        except LedgerError as err:
            _ledger_failed(err)
        click.echo("the witness records cbdsl.toml's settings as they are now" if accepted else
                   "no settings recorded yet: the next submit records them")
    _, verdict = _read_ledger(lambda ledger: None)
    if not verdict.ok:
        click.echo(verdict.report(), err=True)
        sys.exit(EXIT_POLICY)
    click.echo(f"ledger intact: {verdict.rows} entries, hash chain verified"
               + (f", matching its witness {verdict.witnessed}" if verdict.witnessed else ""))
    for note in verdict.notes:
        click.echo(f"note: {note}")


@cli.command("reproduce")
@click.argument("n", type=int)
def reproduce_cmd(n: int) -> None:
    """Re-run iteration N from the ledger alone and compare the selection hash."""
    from cbdsl.pipelines.loop.ledger import LedgerBroken, LedgerError
    from cbdsl.pipelines.loop.submit import reproduce

    _, verdict = _read_ledger(lambda ledger: None)
    try:
        same, recorded, new = reproduce(_sandbox(), n)
    except LedgerBroken as err:
        _ledger_failed(err)
    except LedgerError as err:
        raise click.UsageError(str(err)) from err
    if same:
        click.echo(f"iteration {n} reproduced: selection {new[:16]} is identical")
    else:
        click.echo(f"iteration {n} NOT reproduced: recorded {recorded[:16]}, now {new[:16]}", err=True)
    _unverified(verdict)
    sys.exit(EXIT_OK if same else EXIT_POLICY)


# --- research tools: diff, trajectory ----------------------------------------------------------


def _diff_side(ref: str) -> tuple[str, str, frozenset[str]]:
    """(text, name, families of earlier iterations) of a policy file or a ledger iteration `@N`."""
    from cbdsl.research.trajectory import TrajectoryError, iteration_policy

    if ref.startswith("@") and not Path(ref).exists():
        try:
            return iteration_policy(ref)
        except TrajectoryError as err:
            raise click.UsageError(str(err)) from err
    return (*_read(ref), frozenset())


@cli.command("diff")
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="The edits and classes as JSON.")
def diff_cmd(old: str, new: str, as_json: bool) -> None:
    """AST diff of two policies: files, or ledger iterations (`cbdsl diff @3 @4`, `cbdsl diff @4 policy.cur`).

    Each edit (insert, remove, update, move) and the whole diff is classed: metadata, literal (only
    numbers), structural, or new-family (a catalogue family no earlier iteration used).
    """
    from cbdsl.dsl.diagnostics import Source, render_all
    from cbdsl.dsl.diff import diff_policies
    from cbdsl.scaffolds.catalogue import family_of
    from cbdsl.dsl.parser import parse_diagnostics

    sides = []
    for ref in (old, new):
        text, name, prior = _diff_side(ref)
        policy, diags = parse_diagnostics(text, name)
        if policy is None:
            click.echo(render_all(diags, Source(text, name)), err=True)
            click.echo(f"{name}: cannot diff: fix the syntax errors first", err=True)
            sys.exit(EXIT_POLICY)
        sides.append((policy, Source(text, name), prior))
    (a, source_a, _), (b, source_b, prior) = sides
    result = diff_policies(a, b, prior_families=prior, family_of=family_of)
    if as_json:
        click.echo(json.dumps({"old": source_a.name, "new": source_b.name, **result.to_json()}, indent=2))
        return
    from rich.console import Console

    from cbdsl.dsl.diff_view import render_diff

    console = Console(highlight=False, soft_wrap=True)
    for line in render_diff(result, source_a, source_b):
        console.print(line)


@cli.command("trajectory")
@click.argument("runs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--compare", is_flag=True, help="Put the RUNS (sandbox folders) side by side.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write score vs iteration to this PNG.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def trajectory_cmd(runs: tuple[str, ...], compare: bool, plot_path: str | None, as_json: bool) -> None:
    """A run's iterations: change class, families used and introduced, citations, score, delta, best so far.

    The summary gives the share of iterations that introduce a new method family, that are literal-only,
    that improve the best, and the iteration of the best. RUNS default to the current sandbox;
    `--compare A B ...` shows several runs (agents, scaffolds) side by side.
    """
    from cbdsl.research import trajectory as tj
    from cbdsl.pipelines.loop.ledger import LedgerError

    if len(runs) > 1 and not compare:
        raise click.UsageError("several runs given: add --compare to put them side by side")
    if compare and len(runs) < 2:
        raise click.UsageError("--compare needs at least two run folders (sandboxes)")
    try:
        loaded = [tj.load_run(r) for r in runs or (".",)]
    except tj.TrajectoryError as err:
        raise click.UsageError(str(err)) from err
    except LedgerError as err:
        _ledger_failed(err)
    if plot_path:
        tj.plot(loaded, plot_path)
    if as_json:
        click.echo(tj.to_json(loaded))
    else:
        click.echo(tj.render_compare(loaded) if compare else tj.render(loaded[0]))
        if plot_path:
            click.echo(f"plot: {plot_path}")
    unverified = [r.problems for r in loaded if r.problems]
    if unverified:
        click.echo("warning: what is shown above comes from a ledger that does not verify\n"
                   + "\n".join(unverified), err=True)
        sys.exit(EXIT_POLICY)


@cli.command("methods")
@click.argument("method_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def methods_cmd(method_id: str | None, as_json: bool) -> None:
    """The method catalogue: citations, families, canonical forms."""
    from dataclasses import asdict

    from cbdsl.scaffolds.catalogue import catalogue, get_method

    if method_id:
        m = get_method(method_id)
        if m is None:
            import difflib

            close = difflib.get_close_matches(method_id, list(catalogue()), n=3)
            raise click.UsageError(f"no method {method_id!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        if as_json:
            click.echo(json.dumps(asdict(m), indent=2, default=str))
            return
        click.echo(f"{m.id}: {m.name}\n{m.citation}\nfamily {m.family}, bucket {m.bucket}, scorers "
                   f"{', '.join(m.scorers) or '-'}\n{m.url}\n\n{m.canonical.strip()}")
        for d in m.departures:
            click.echo(f"- departs: {d}")
        return
    methods = list(catalogue().values())
    if as_json:
        click.echo(json.dumps([asdict(m) for m in methods], indent=2, default=str))
        return
    for m in methods:
        click.echo(f"{m.id:<24} {m.family:<22} {m.bucket:<7} {m.citation}")


def main() -> None:
    """Entry point: a bug in cbdsl is an internal error with a short message, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as err:
        err.show()
        sys.exit(EXIT_USAGE)
    except SystemExit:
        raise
    except BrokenPipeError:
        sys.exit(EXIT_OK)
    except Exception as err:  # noqa: BLE001 - the one boundary where anything is caught
        if os.environ.get("CBDSL_DEBUG"):
            raise
        report_internal_error(err)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
