"""The Ray engine: the local engine's plan, its row-local work spread over a Ray cluster's workers.

A run is the local engine's stages (:mod:`~cbdsl.pipelines.engine.execute`), each cut where the work is
row-local. The pool is cut into pieces (a shard, or a range of at most ``block_rows`` rows of one), one Ray
Data block each; a task reads its piece with Polars and runs the local lowering on it, so the expressions,
and the pushdown of the filters into the parquet reader, are the local engine's own.

- **Statistics** (``quantile``, ``mean``, ``std``, ``zscore``, ``minmax``, ``top``, with ``per`` and
  ``among``): exact distributed aggregates. Each task computes the statistic's input (derived columns, cached
  scores) for its piece and keeps it in the object store where it ran; the passes of :mod:`.exact` (radix
  counts of order keys, exact sums) run there and send the driver integers only, which add exactly in any
  order: the local engine's values bit for bit, and the driver never holds a column.
- **Model scores**: computed into the pool's score cache before the filter pass (the rows that reach each
  score: after the early filters, or every row where a statistic or a population scorer needs them): a
  row-local scorer on an actor pool (one actor per GPU, else per CPU: :func:`score_on_actors`), a
  population scorer (fit on every row at once) on the driver; every task then joins them from the cache,
  read-only, and a later run of any policy on either engine reuses them.
- **The filter stage**: per piece, the local :func:`~cbdsl.pipelines.engine.execute.query` (filters, the id
  hash, the values the tail needs); the survivors come back to the driver in pool order.
- **Dedup** by ``exact`` or ``minhash`` (methods with bands: rows equal in every value of some band are
  duplicates, transitively) on the workers, by hash partitioning: each piece's task computes its survivors'
  bands (MinHash signatures included) and sends each band to the part its values hash to (a map and a
  reduce wave of Ray tasks), so duplicates in different blocks always meet; the driver merges the groups
  and keeps each one's best row, as the local engine does. Semantic dedup (k-means over every survivor's
  embedding) runs on the driver over the gathered survivors, where all of them meet.
- **The tail** (mix, budget, select): :func:`~cbdsl.pipelines.engine.execute.select_from` on the driver, with
  the budget's id-hash tie-break over every row left.

A plan whose filter stage ranks (``rank``: one sort over the population, no aggregate) runs its filter
query on the driver over the pieces' gathered scan columns. Every path gives the local selection byte for
byte (``tests/test_ray_engine.py``).

Ray is imported only here, and only when a run asks for it (the ``ray`` extra).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cbdsl.compiler.ir import Derive, Score, Stat, columns_of
from cbdsl.compiler.lower import HASH, Lowered
from cbdsl.pipelines.engine.execute import (
    DEDUP_ARG, RunResult, ScoreProvider, filter_phase, in_preference_order, model_scores, query, run_tail,
    select_from, statistics_first, tail_inputs,
)
from cbdsl.pipelines.engine.exact import InMemory, Parts
from cbdsl.pipelines.engine.kernels.minhash import pair_groups
from cbdsl.pipelines.engine.scores import cache_path, compute_scores, ensure, join_scores, score_inputs, scorer
from cbdsl.scorers.api import DedupContext, RunError

BLOCK_ROWS = 1_000_000  # rows of one task's piece: a shard larger than this is cut into row ranges
SCORE_CHUNK = 4096  # rows a scoring actor takes at a time (score_on_actors)
PIECE = "#piece"  # a row's piece and its survivor index there; a band's number; a survivor's pool position
ROW = "#row"
BAND = "#band"
POS = "#pos"


@dataclass(frozen=True)
class Piece:
    """One task's rows: ``rows`` rows of a shard from ``offset`` (the whole shard when ``whole``)."""

    index: int
    file: str
    offset: int
    rows: int
    whole: bool

    def scan(self, columns: Sequence[str]) -> pl.LazyFrame:
        frame = pl.scan_parquet(self.file)
        if not self.whole:
            frame = frame.slice(self.offset, self.rows)
        return frame.select(list(columns))


def pieces(pool, block_rows: int = BLOCK_ROWS) -> list[Piece]:
    """The pool cut into pieces of at most ``block_rows`` rows, in pool order (a shard is never merged with
    another: each piece reads one file)."""
    out: list[Piece] = []
    for shard, path in zip(pool.card.shards, pool.shard_paths):
        if shard.rows <= block_rows:
            out.append(Piece(len(out), str(path), 0, shard.rows, True))
            continue
        for offset in range(0, shard.rows, block_rows):
            out.append(Piece(len(out), str(path), offset, min(block_rows, shard.rows - offset), False))
    return out


@contextmanager
def cluster(address: str | None = None, cpus: int | None = None) -> Iterator[None]:
    """A Ray session: the one this process has, or one connected to ``address`` (``auto``, ``HOST:PORT``,
    ``ray://HOST:PORT``), or a local cluster of ``cpus`` workers (default: every core) started for this run
    and stopped after it. Each worker's Polars and Numba get one thread: the cluster's CPUs are its tasks."""
    hint = ("start one with `ray start --head` and pass its address (HOST:6379 or auto), or leave --address out "
            "to start a local cluster",)
    if address is not None and not _listening(address):  # Ray itself would retry for minutes
        raise RunError(f"no Ray cluster at {address!r}: nothing answers there", hint)
    token_mode = address is not None and "RAY_AUTH_MODE" not in os.environ and _token_at_hand()
    if token_mode:
        # A head started by `ray start` (Ray 2.60) checks the token of ~/.ray/auth_token, but a driver that
        # joins it sends one only in token mode, read when Ray is imported: without this, InvalidAuthToken. A
        # cluster without token authentication accepts a driver in token mode too.
        os.environ["RAY_AUTH_MODE"] = "token"
    env = {"POLARS_MAX_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        try:
            import ray
        except ImportError as err:
            raise RunError("the Ray engine needs Ray, which is not installed",
                           ("install cbdsl with its `ray` extra: `pip install -e '.[ray]'`",)) from err
        joined = ray.is_initialized()
        if not joined:
            ray.init(address=address or "local", num_cpus=cpus if address is None else None,
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env={"env_vars": env})
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise RunError(f"no Ray cluster at {address!r}: {err}".rstrip(), hint) from err
    finally:
        if token_mode:  # a local cluster started later in this process must not inherit it
            os.environ.pop("RAY_AUTH_MODE", None)
    if joined:
        yield
        return
    try:
        yield
    finally:
        ray.shutdown()


def _token_at_hand() -> bool:
    """Whether this machine has a Ray authentication token (Ray's variables, or the file Ray writes)."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def _listening(address: str, timeout: float = 5.0) -> bool:
    """Whether something accepts a connection at ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``); ``auto``
    and other forms are left to Ray, which fails at once when it finds no cluster."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return True
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError:
        return False
    return True


def execute_on_ray(low: Lowered, pool, *, block_rows: int = BLOCK_ROWS) -> RunResult:
    """Run a lowered plan against ``pool`` on the Ray session :func:`cluster` opened: the selection of
    :func:`~cbdsl.pipelines.engine.execute.execute`, byte for byte."""
    if low.exprs.pool is None:
        low.exprs.pool = pool
    work = _Work(low, pool, pieces(pool, block_rows))
    low = statistics_first(low, pool, model_scores(low, pool), pieces=work.population)
    work.low = low
    if not _row_local(low):
        columns = list(low.plan.scan.columns)
        frame = work.computed(low, columns, [], columns, early=False).lazy()
        return run_tail(low, pool, query(low, frame, model_scores(low, pool)).collect())
    work.ensure_scores([s for s in low.early_compute if isinstance(s, Score)], early=False)
    work.ensure_scores([s for s in low.late_compute if isinstance(s, Score)], early=bool(low.early_filters))
    if low.dedup is not None and low.exprs.registry.get(low.dedup.method, "dedup").bands is not None:
        return select_from(low, pool, *work.banded_dedup(low))
    return run_tail(low, pool, work.map(_survivors, low, work.cached_scores()))


def _row_local(low: Lowered) -> bool:
    """Whether every computed column of the filter stage is row-local once the statistics are known."""
    return all(isinstance(s, (Derive, Score)) or (isinstance(s, Stat) and s.column in low.exprs.statistics)
               for s in [*low.early_compute, *low.late_compute])


class _Work:
    """One run's pieces and the tasks over them."""

    def __init__(self, low: Lowered, pool, parts: list[Piece]):
        self.low, self.pool, self.parts = low, pool, parts
        self.ensured: set[str] = set()
        self.definitions = {s.writes: s for s in low.plan.steps if s.writes}  # a score cache key's

    @staticmethod
    def _quiet() -> None:
        """Ray Data as a run uses it: blocks in order, no progress bars, no log line per pass."""
        import ray.data

        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # a run is a few quick passes; Ray would also warn that they are off
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)

    def map(self, fn, *args) -> pl.DataFrame:
        """``fn(piece, *args)`` (a Polars frame) for every piece, as Ray Data tasks; the frames concatenated
        in pool order."""
        import pyarrow as pa
        import ray.data

        self._quiet()
        parts = self.parts

        def task(batch: pa.Table) -> pa.Table:
            frames = [fn(parts[i], *args).with_columns(pl.lit(i, pl.UInt32).alias(PIECE))
                      for i in batch.column(PIECE).to_pylist()]
            return pl.concat(frames).to_arrow(compat_level=pl.CompatLevel.oldest())

        items = ray.data.from_items([{PIECE: p.index} for p in parts], override_num_blocks=len(parts))
        tables = ray.get(items.map_batches(task, batch_size=1, batch_format="pyarrow").to_arrow_refs())
        frames = [pl.from_arrow(t) for t in tables if t.num_rows]
        if not frames:  # every piece came back empty: the schema of one, computed here
            return fn(parts[0], *args).head(0) if parts else pl.DataFrame()
        out = pl.concat(frames)
        if not out.get_column(PIECE).is_sorted():  # Ray Data keeps the order (preserve_order); if not, we do
            out = out.sort(PIECE, maintain_order=True)
        return out.drop(PIECE)

    def banded_dedup(self, low: Lowered) -> tuple[pl.DataFrame, int]:
        """The filter pass and a banded dedup method (:attr:`~cbdsl.compiler.signatures.Entry.bands`: `exact`,
        `minhash`) on the workers, by hash partitioning; the survivors in :func:`dedup`'s order, and their
        count.

        Each piece's task computes its survivors' bands (MinHash signatures too: the costly part) and sends
        each band row to the part its values hash to, so equal bands meet whatever block their rows are in;
        one task per part joins the rows of each equal band. The driver gets the joins and the survivors
        without the dedup inputs, merges the groups (union-find, :func:`pair_groups`) and keeps each group's
        best row: the method's own rule, the rows the local engine keeps. A map and a reduce wave of Ray
        tasks, not Ray Data's ``groupby``: its hash shuffle starts a pool of aggregator actors on each call,
        seconds of fixed cost for a step this simple."""
        import numpy as np
        import ray

        parts, scores, pool = self.parts, self.cached_scores(), self.pool
        split = max(1, min(len(parts), int(ray.cluster_resources().get("CPU", 1))))
        method = low.exprs.registry.get(low.dedup.method, "dedup")
        args = tuple(DEDUP_ARG.format(i) for i in range(len(low.dedup.args)))
        params = method.params.model_validate(low.dedup.params)
        id_col = low.plan.scan.id_column

        @ray.remote(num_returns=split + 1)
        def bands(i: int):
            rows = _survivors(parts[i], low, scores).with_columns(
                pl.lit(i, pl.UInt32).alias(PIECE), pl.int_range(pl.len(), dtype=pl.UInt32).alias(ROW))
            ctx = DedupContext(rows=rows, args=args, params=params, id=id_col, hash=HASH, pool=pool)
            banded = pl.concat([band.with_columns(pl.lit(b, pl.UInt32).alias(BAND), rows[PIECE], rows[ROW])
                                for b, band in enumerate(method.bands(ctx))])
            part = pl.struct(pl.exclude(PIECE, ROW)).hash(seed=0) % split
            return (*(banded.filter(part == k) for k in range(split)), rows.drop(args))

        @ray.remote
        def joins(*banded: pl.DataFrame) -> pl.DataFrame:  # each equal band: its first row with each of them
            rows = pl.concat(banded)
            values = [c for c in rows.columns if c not in (PIECE, ROW)]
            return rows.group_by(values).agg(pl.col(PIECE).first().alias("#p0"), pl.col(ROW).first().alias("#r0"),
                                             PIECE, ROW).select("#p0", "#r0", PIECE, ROW).explode(PIECE, ROW)

        mapped = [bands.remote(i) for i in range(len(parts))]
        pairs = pl.concat(ray.get([joins.remote(*(m[k] for m in mapped)) for k in range(split)]))
        survivors = pl.concat(ray.get([m[split] for m in mapped]))  # pool order
        starts = survivors.group_by(PIECE, maintain_order=True).len().with_columns(
            (pl.col("len").cum_sum() - pl.col("len")).alias("#start"))
        where = dict(zip(starts[PIECE].to_list(), starts["#start"].to_list()))
        ordered = in_preference_order(survivors.with_row_index(POS), low)
        rank = np.empty(survivors.height, dtype=np.int64)
        rank[ordered[POS].to_numpy()] = np.arange(survivors.height)

        def ranks(piece: str, row: str) -> np.ndarray:
            start = pairs[piece].replace_strict(where, return_dtype=pl.Int64).to_numpy()
            return rank[start + pairs[row].cast(pl.Int64).to_numpy()]

        groups = pair_groups(survivors.height, ranks("#p0", "#r0"), ranks(PIECE, ROW))
        keep = pl.Series(groups == np.arange(survivors.height))
        return ordered.filter(keep).drop(PIECE, ROW, POS), survivors.height

    def population(self, low: Lowered, columns: list[str], steps: list) -> Parts:
        """:func:`statistics_first`'s ``pieces``: the pool's ``columns`` with the ``steps``' columns added, a piece
        a block, each kept in the object store where its task ran (a statistic over a ``rank``: computed
        here, one piece); the statistic's passes then run there (:mod:`.exact`)."""
        self.low = low
        self.ensure_scores([s for s in steps if isinstance(s, Score)], early=False)
        keep = sorted({*columns, *(s.writes for s in steps)})
        if any(isinstance(s, Stat) and s.column not in low.exprs.statistics for s in steps):
            return InMemory([self.computed(low, columns, steps, keep, early=False)])
        return _InObjectStore.made(_computed, self.parts, low, columns, steps, keep, False, self.cached_scores())

    def computed(self, low: Lowered, columns: list[str], steps: list, keep: list[str], *, early: bool) -> pl.DataFrame:
        """Every row of the pool (those that pass the early filters when ``early``) with the ``steps``' columns,
        its ``keep`` columns, in pool order: one task a piece when the steps are row-local; else (a statistic
        over a ``rank``) the scanned columns gathered and the steps computed here, on the whole population."""
        scores = self.cached_scores()
        if all(not isinstance(s, Stat) or s.column in low.exprs.statistics for s in steps):
            return self.map(_computed, low, columns, steps, keep, early, scores)
        frame, local_scores = self.map(_scanned, columns).lazy(), model_scores(low, self.pool)
        if early:
            frame = filter_phase(low, frame, low.early_compute, low.early_filters, local_scores)
        return low.compute(frame, steps, local_scores).select(keep).collect()

    def ensure_scores(self, steps: list[Score], *, early: bool) -> None:
        """Compute into the score cache each step's values for the rows that reach it (after the early
        filters when ``early``, else every row), on the driver, as a local run would; in plan order, so a
        score that reads another finds it cached."""
        low, pool = self.low, self.pool
        id_col = low.plan.scan.id_column
        for step in steps:
            if step.column in self.ensured:
                continue
            reach = early and not scorer(low.exprs.registry, step).population
            reads = set().union(*(columns_of(a) for a in step.args))
            deps = [d for d in low.plan.producers(reads) if not (reach and d in low.early_compute)]
            columns = list(low.plan.scan.columns) if reach else sorted(
                ({*reads, *(c for d in deps for c in d.reads)} - {d.writes for d in deps}) | {id_col})
            rows = self.computed(low, columns, deps, sorted(reads | {id_col}), early=reach)
            population = scorer(low.exprs.registry, step).population  # fit on every row at once: one process
            ensure(step, pool, score_inputs(rows.lazy(), step, id_col, low.exprs), low.exprs.registry,
                   definitions=self.definitions, compute=None if population else score_on_actors)
            self.ensured.add(step.column)

    def cached_scores(self) -> ScoreProvider:
        """The score provider of a task: the ensured scores, joined from the cache (never computed there)."""
        low, pool = self.low, self.pool
        paths = {s.column: str(cache_path(pool, s, scorer(low.exprs.registry, s), self.definitions))
                 for s in low.plan.of(Score) if s.column in self.ensured}
        return _CachedScores(paths, pool.id_column)


def score_on_actors(entry, step: Score, pool, inputs: pl.DataFrame, id_col: str, workdir) -> pl.DataFrame:
    """A row-local model score (:func:`~cbdsl.pipelines.engine.scores.compute_scores`) on a pool of Ray actors:
    one per GPU of the cluster, or one per CPU without GPUs, each loading the model once and scoring chunks of
    ``SCORE_CHUNK`` rows. The driver writes the values to the score cache, as a local run does.

    The chunks are cut at multiples of ``SCORE_CHUNK`` in the rows' order, so a scorer's own batches (a power
    of two up to ``SCORE_CHUNK`` rows: CLIP's 256 on a CPU, 1024 on a GPU) hold the rows they hold in one
    local call, and a deterministic kernel gives the local values bit for bit."""
    import pyarrow as pa
    import ray
    from ray.util import ActorPool

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    actors = max(1, min(gpus or int(resources.get("CPU", 1)), -(-inputs.height // SCORE_CHUNK)))

    class Scorer:
        def score(self, part: pa.Table) -> pa.Table:
            out = compute_scores(entry, step, pool, pl.from_arrow(part), id_col, workdir)
            return out.to_arrow(compat_level=pl.CompatLevel.oldest())

    remote = ray.remote(num_gpus=1, num_cpus=0)(Scorer) if gpus else ray.remote(num_cpus=1)(Scorer)
    parts = [inputs.slice(o, SCORE_CHUNK).to_arrow(compat_level=pl.CompatLevel.oldest())
             for o in range(0, inputs.height, SCORE_CHUNK)]
    pool_of_actors = ActorPool([remote.remote() for _ in range(actors)])
    return pl.concat([pl.from_arrow(t) for t in pool_of_actors.map(lambda a, part: a.score.remote(part), parts)])


@dataclass(frozen=True)
class _InObjectStore:
    """:class:`~cbdsl.pipelines.engine.exact.Parts` on the cluster: each piece an object in Ray's store, on the
    node whose task made it; a pass is a task a piece, and only what ``each`` returns comes to the driver."""

    refs: list

    @staticmethod
    def made(fn, inputs: Sequence, *args) -> _InObjectStore:
        """The pieces ``fn(input, *args)``, one task an input."""
        import ray

        shared = [ray.put(a) for a in args]
        return _InObjectStore([_task().remote(fn, i, *shared) for i in inputs])

    def keep(self, fn, *args) -> _InObjectStore:
        return self.made(fn, self.refs, *args)

    def each(self, fn, *args) -> list:
        import ray

        return ray.get(self.keep(fn, *args).refs)


@functools.cache
def _task():
    import ray

    return ray.remote(_applied)


def _applied(fn, piece, *args):
    return fn(piece, *args)


@dataclass(frozen=True)
class _CachedScores:
    """A task's score provider: each score's column from its cache file."""

    paths: dict[str, str]
    id_column: str

    def __call__(self, frame: pl.LazyFrame, steps: list[Score]) -> pl.LazyFrame:
        for step in steps:
            if step.column not in self.paths:  # the driver ensures each score before a task reads it
                raise RuntimeError(f"score {step.column} was not computed before the tasks that read it")
            frame = join_scores(frame, step, pl.scan_parquet(self.paths[step.column]), self.id_column)
        return frame


# --- the tasks (run on the workers) ---------------------------------------------------------


def _computed(piece: Piece, low: Lowered, columns: list[str], steps: list, keep: list[str], early: bool,
              scores: ScoreProvider) -> pl.DataFrame:
    frame = piece.scan(columns)
    if early:
        frame = filter_phase(low, frame, low.early_compute, low.early_filters, scores)
    return low.compute(frame, steps, scores).select(keep).collect()


def _scanned(piece: Piece, columns: list[str]) -> pl.DataFrame:
    return piece.scan(columns).collect()


def _survivors(piece: Piece, low: Lowered, scores: ScoreProvider) -> pl.DataFrame:
    return query(low, piece.scan(list(low.plan.scan.columns)), scores).select(tail_inputs(low)).collect()


def default_address() -> str | None:
    """The cluster a run joins when none is named: ``$RAY_ADDRESS``, as Ray's own tools read it."""
    return os.environ.get("RAY_ADDRESS") or None
