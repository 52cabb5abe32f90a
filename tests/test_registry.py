"""The scorer registry: entries, parameter models, lowering to Polars, and a light import path."""

from __future__ import annotations

from dataclasses import replace

import struct
import subprocess
import sys

import pytest
from pydantic import ValidationError

from cbdsl.compiler.aggregates import Aggregation
from cbdsl.compiler.types import BINARY, FLOAT, INT, STR, UNKNOWN, list_of
from cbdsl.scorers.metadata import image_size
from cbdsl.compiler.signatures import PENDING_OUTPUTS, format_value
from cbdsl.scorers.registry import Entry, Input, LowerContext, Params, Registry, registry


def test_builtin_ids() -> None:
    reg = registry()
    assert set(reg.ids("expr")) >= {
        "len", "words", "width", "height", "area", "aspect_ratio",
        "min", "max", "abs", "log", "sqrt", "round", "lower", "matches", "asset",
        "quantile", "mean", "std", "rank", "zscore", "minmax", "top",
    }
    # `>=`: a new strategy or dedup method is a new module, and needs no edit here
    assert set(reg.ids("select")) >= {"top", "bottom", "random", "weighted", "kcenter", "stratified"}
    assert set(reg.ids("dedup")) >= {"exact", "minhash", "semantic"}
    statistics = {e.id for e in reg.entries("expr") if e.is_statistic}
    assert statistics == {"quantile", "mean", "std", "rank", "zscore", "minmax", "top"}
    assert {e.id for e in reg.entries("expr") if e.kind == "scorer" and e.cost == "metadata"} >= {
        "len", "words", "width", "height", "area", "aspect_ratio"}
    assert all(e.cost == "metadata" for e in reg.entries("expr") if e.compute is None)


def test_registered_scorers_declare_their_own_output() -> None:
    # PENDING_OUTPUTS only types scorers that are not registered yet; a registered one declares its own
    for sid in set(PENDING_OUTPUTS) & registry().all_ids():
        assert registry().get(sid).output is not None


@pytest.mark.parametrize("entry", registry().entries(), ids=lambda e: f"{e.space}-{e.id}")
def test_entry_is_well_formed(entry: Entry) -> None:
    assert entry.summary, "every entry says what it does"
    assert entry.params.model_config.get("frozen") and entry.params.model_config.get("strict")
    assert entry.params.model_config.get("extra") == "forbid"
    if entry.space == "expr":
        assert callable(entry.lower) or callable(entry.compute), "a row expression or a batch function"
        assert entry.run is None and entry.prefers is None
    else:
        assert callable(entry.run), "a dedup method or a select strategy runs"
        assert entry.lower is None and entry.compute is None
        assert entry.prefers is None or (entry.space == "select" and entry.inputs[0].expect == "number")
    required = [n for n, f in entry.params.model_fields.items() if f.is_required()]
    if not required:
        defaults = entry.params()
        with pytest.raises(ValidationError):
            defaults.__class__.model_validate({"not_a_parameter": 1})
    assert entry.signature().count("(") <= 1


@pytest.mark.parametrize("space,package", [("select", "cbdsl.scorers.select"), ("dedup", "cbdsl.scorers.dedup")])
def test_each_strategy_and_dedup_method_is_one_module_named_by_its_id(space, package) -> None:
    import importlib
    from pathlib import Path

    files = sorted(p.stem for p in Path(importlib.import_module(package).__file__).parent.glob("*.py")
                   if not p.name.startswith("_"))
    assert files == list(registry().ids(space))
    for name in files:
        assert registry().get(name, space).run.__module__ == f"{package}.{name}"


def test_the_engine_runs_a_dedup_method_and_a_strategy_it_does_not_know(tmp_path) -> None:
    """Dispatch is through the registry: entries registered here (not in cbdsl) run like the builtins."""
    import polars as pl

    from cbdsl.pipelines.data.writing import write_pool
    from cbdsl.pipelines.engine.execute import execute
    from cbdsl.stages import compile_source, lower

    def first_word(ctx):
        """Texts with the same first word are duplicates."""
        key = ctx.arg(0).str.split(" ").list.first()
        return ctx.rows.filter(key.is_first_distinct())

    def longest(ctx):
        """The rows with the largest n first."""
        return ctx.ranked(-ctx.arg(0).cast(pl.Float64))

    reg = Registry()
    for entry in registry().entries():
        reg.add(entry)
    reg.add(Entry("first_word", "dedup", inputs=(Input("text", "str"),), output=UNKNOWN, run=first_word))
    reg.add(Entry("longest", "select", inputs=(Input("n", "number"),), output=UNKNOWN, run=longest, prefers="high"))
    texts = ["a b c", "a b", "b", "c d e f", "b c"]
    pool = write_pool(pl.DataFrame({"id": [f"r{i}" for i in range(5)], "text": texts}), tmp_path / "p", name="t")
    text = 'pool "t"\ndedup first_word(text)\nbudget 2\nselect longest(len(text))\n'
    compiled = compile_source(text, "p.cur", pool, registry=reg)
    result = execute(lower(compiled.plan, pool.schema, lambda name: [], registry=reg), pool)
    assert result.after_dedup == 3  # the best of each first word by the select score: r0, r4, r3
    assert result.selection.rows() == [("r3", None, 7.0, 1), ("r0", None, 5.0, 2)]


def test_signatures() -> None:
    reg = registry()
    assert reg.get("quantile").signature() == 'quantile(x, q, method="linear")'
    assert reg.get("min").signature() == "min(*x)"
    assert reg.get("top", "select").signature() == "select top x"
    assert reg.get("minhash", "dedup").signature() == (
        "dedup minhash(text, threshold=0.8, num_perm=128, ngram=5, bands=auto)")
    assert reg.get("semantic", "dedup").choices("keep") == ("hard", "easy", "random")
    assert reg.get("exact", "dedup").display == "`dedup exact`"


def test_output_types() -> None:
    reg = registry()
    assert reg.get("min").output_type([INT, INT]) == INT
    assert reg.get("min").output_type([INT, FLOAT]) == FLOAT
    assert reg.get("abs").output_type([INT]) == INT
    assert reg.get("len").output_type([list_of(STR)]) == INT
    assert reg.get("words").output_type([STR]) == INT
    assert reg.get("top").output_type([FLOAT]).name == "bool"
    assert reg.get("width").output_type([BINARY]) == INT
    assert reg.get("max").output_type([UNKNOWN, INT]) == UNKNOWN


def test_parameter_models_validate() -> None:
    reg = registry()
    quantile = reg.get("quantile").params
    assert quantile(q=1).q == 1.0
    for bad in ({"q": 1.5}, {"q": "0.3"}, {"q": True}, {}, {"q": 0.3, "method": "mean"}):
        with pytest.raises(ValidationError):
            quantile.model_validate(bad)
    minhash = reg.get("minhash", "dedup").params
    assert minhash(num_perm=9000, bands=450).bands == 450
    with pytest.raises(ValidationError):
        minhash(num_perm=100, bands=7)
    matches = reg.get("matches").params
    with pytest.raises(ValidationError):
        matches(pattern="(")
    with pytest.raises(ValidationError):
        matches(pattern=r"(a)\1")
    with pytest.raises(ValidationError):
        quantile(q=0.3).q = 0.4  # frozen


def test_registry_rejects_duplicates() -> None:
    reg = Registry()
    reg.add(Entry("f", "function"))
    reg.add(Entry("f", "select"))  # another name space
    with pytest.raises(ValueError, match="registered twice"):
        reg.add(Entry("f", "function"))
    with pytest.raises(ValueError, match="expectation"):
        Input("x", "numbr")


def test_format_value() -> None:
    assert [format_value(v) for v in (None, True, "a\"b", 0.5, [1, "x"])] == ["auto", "true", '"a\\"b"', "0.5", '[1, "x"]']


# --- image headers ------------------------------------------------------------------


def png(w: int, h: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + struct.pack(">II", w, h) + b"\x08\x02\x00\x00\x00"


def jpeg(w: int, h: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHH", 17, 8, h, w) + b"\x03" + b"\x00" * 9
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def test_image_size_headers() -> None:
    assert image_size(png(640, 480)) == (640, 480)
    assert image_size(jpeg(300, 200)) == (300, 200)
    assert image_size(b"GIF89a" + struct.pack("<HH", 31, 17) + b"\x00" * 10) == (31, 17)
    assert image_size(b"BM" + b"\x00" * 16 + struct.pack("<ii", 50, -40) + b"\x00" * 8) == (50, 40)
    vp8x = b"RIFF" + b"\x00" * 4 + b"WEBP" + b"VP8X" + b"\x00" * 8 + (99).to_bytes(3, "little") + (49).to_bytes(3, "little")
    assert image_size(vp8x) == (100, 50)
    assert image_size(b"not an image") is None
    assert image_size(b"\xff\xd8\xff") is None


# --- lowering -------------------------------------------------------------------------


def lowered(df, entry_id: str, *cols: str, space: str = "expr", schema=None, per=None, among=None, **params):
    import polars as pl

    entry = registry().get(entry_id, space)
    ctx = LowerContext(
        params=entry.params.model_validate(params),
        arg_types=tuple(_polars_type(df.schema[c]) for c in cols),
        arg_columns=cols,
        schema=schema or {},
        per=pl.col(per) if per else None,
        among=among,
    )
    inputs = [pl.col(c) for c in cols]
    if entry.aggregate is not None:  # a statistic's values, per group as the lowering groups them
        exprs = Aggregation(x=inputs[0], among=among, per=None, aggregates=entry.aggregate(ctx.params)).exprs()
        values = {k: v if per is None else v.over(per) for k, v in exprs.items()}
        ctx = replace(ctx, values=values)
    return df.with_columns(entry.lower(ctx, *inputs).alias("out"))["out"].to_list()


def _polars_type(dtype):
    import polars as pl

    if dtype == pl.String:
        return STR
    if isinstance(dtype, pl.List):
        return list_of(STR)
    if dtype == pl.Binary:
        return BINARY
    return FLOAT if dtype.is_float() else INT


@pytest.fixture(scope="module")
def frame():
    import polars as pl
    return pl.DataFrame({
        "text": ["a cat  sat", "dogs", "", "one two three four"],
        "tags": [["a"], [], ["x", "y"], ["z"]],
        "x": [1.0, 2.0, 3.0, 4.0],
        "source": ["a", "a", "b", "b"],
        "image": [png(640, 480), jpeg(100, 300), b"junk", None],
    })


def test_lower_text_scorers(frame) -> None:
    assert lowered(frame, "words", "text") == [3, 1, 0, 4]
    assert lowered(frame, "len", "text") == [10, 4, 0, 18]
    assert lowered(frame, "len", "tags") == [1, 0, 2, 1]
    assert lowered(frame, "lower", "source") == ["a", "a", "b", "b"]
    assert lowered(frame, "matches", "text", pattern="^d") == [False, True, False, False]


def test_lower_image_scorers(frame) -> None:
    assert lowered(frame, "width", "image") == [640, 100, None, None]
    assert lowered(frame, "height", "image") == [480, 300, None, None]
    assert lowered(frame, "area", "image") == [640 * 480, 30000, None, None]
    assert lowered(frame, "aspect_ratio", "image")[:2] == [pytest.approx(640 / 480), pytest.approx(3.0)]


def test_lower_image_scorers_read_dimension_columns() -> None:
    import polars as pl
    df = pl.DataFrame({"image": [b"x"], "width": [10], "height": [20]})
    assert lowered(df, "width", "image", schema={"width": "int", "height": "int"}) == [10]
    assert lowered(df, "aspect_ratio", "image", schema={"width": "int", "height": "int"}) == [2.0]


def test_lower_functions(frame) -> None:
    assert lowered(frame, "min", "x", "x") == [1.0, 2.0, 3.0, 4.0]
    assert lowered(frame, "sqrt", "x")[3] == 2.0
    assert lowered(frame, "round", "x", digits=0) == [1.0, 2.0, 3.0, 4.0]


def test_lower_statistics(frame) -> None:
    import polars as pl

    assert lowered(frame, "quantile", "x", q=0.5, method="lower") == [2.0] * 4
    assert lowered(frame, "quantile", "x", q=1.0, per="source") == [2.0, 2.0, 4.0, 4.0]
    assert lowered(frame, "mean", "x", among=pl.col("x") > 1) == [3.0] * 4
    assert lowered(frame, "rank", "x", descending=True) == [4.0, 3.0, 2.0, 1.0]
    assert lowered(frame, "minmax", "x", per="source") == [0.0, 1.0, 0.0, 1.0]
    assert lowered(frame, "zscore", "x")[0] == pytest.approx(-1.161895, rel=1e-5)
    # DataComp's get_threshold: sorted descending [4, 3, 2, 1], index floor(4 * 0.5) = 2 -> keep x >= 2
    assert lowered(frame, "top", "x", frac=0.5) == [False, True, True, True]
    # per group of two: sorted descending [b, a], index floor(2 * 0.5) = 1 -> the smaller one, ties kept: all
    assert lowered(frame, "top", "x", frac=0.5, per="source") == [True, True, True, True]
    # among x < 4: [3, 2, 1], index floor(1.5) = 1 -> keep 2 <= x, and only rows among the population
    assert lowered(frame, "top", "x", frac=0.5, among=pl.col("x") < 4) == [False, True, True, False]


# --- import cost -------------------------------------------------------------------------


def test_check_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from cbdsl.stages import check_source\n"
        "check_source('filter words(text) > 2 and width(image) > 3\\nselect top quantile(x, 0.3)')\n"
        "heavy = [m for m in ('polars', 'numpy', 'torch', 'transformers', 'open_clip', 'numba') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_check_loads_the_strategy_and_dedup_method_it_names_without_a_heavy_library() -> None:
    code = (
        "import sys\n"
        "from cbdsl.stages import check_source\n"
        "check_source('dedup semantic(emb, eps=0.1)\\nselect kcenter(emb, seed=1)')\n"
        "print(*(f'cbdsl.scorers.{m}' in sys.modules for m in ('select.kcenter', 'dedup.semantic', 'dedup.minhash')))\n"
        "print(','.join(m for m in ('polars', 'numpy', 'numba', 'faiss') if m in sys.modules) or '-')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False", "-"]  # only the modules the policy names


def test_registry_fills_lazily() -> None:
    code = (
        "import sys\n"
        "import cbdsl.scorers.registry as r\n"
        "print('cbdsl.scorers.metadata' in sys.modules, len(r._REGISTRY))\n"
        "r.registry()\n"
        "print('cbdsl.scorers.metadata' in sys.modules, len(r._REGISTRY) > 20)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "0", "True", "True"]


def test_params_base_is_strict() -> None:
    class P(Params):
        n: int = 1

    with pytest.raises(ValidationError):
        P(n="1")
    with pytest.raises(ValidationError):
        P(n=True)
