"""The method catalogue: every entry loads, cites, parses, and checks clean except for pending scorers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cbdsl.stages import check_source
from cbdsl.dsl.parser import parse
from cbdsl.scaffolds import catalogue as cat
from cbdsl.scaffolds.catalogue import (
    BUCKETS, FAMILIES, CatalogueError, Method, catalogue, catalogue_hash, get_method, method_ids, methods_using,
    pending_scorers, scorer_ids,
)
from cbdsl.compiler.signatures import PENDING_OUTPUTS
from cbdsl.scorers.registry import registry

REQUIRED_IDS = {
    "random", "datacomp_no_filter", "datacomp_basic", "datacomp_clip_score", "datacomp_image_based",
    "laion_clip_threshold", "clip_score", "el2n", "grand", "forgetting", "loss", "ccnet_perplexity", "dsir",
    "semdedup", "d4", "density_pruning", "kcenter", "confident_learning", "less", "icons", "minhash_dedup",
    "exact_dedup",
}
PENDING = {
    "clip_score", "image_embedding", "text_embedding", "el2n", "grand", "loss", "forgetting", "perplexity",
    "ccnet_bucket", "dsir", "kmeans", "centroid_distance", "prototypicality", "density_weight", "label_quality",
    "influence", "lang", "lang_score", "token_count", "dup_key",
}
METHODS = list(catalogue().values())


def test_required_methods_present() -> None:
    assert REQUIRED_IDS <= set(method_ids())
    assert list(method_ids()) == sorted(method_ids())


def test_pending_scorers_come_from_the_catalogue() -> None:
    reg = registry()
    # pending = named by the catalogue, not (yet) registered; it shrinks as scorers land
    assert pending_scorers() == scorer_ids() - reg.all_ids()
    assert pending_scorers() <= PENDING, "a new catalogue scorer must come with its implementation"
    assert pending_scorers() <= set(PENDING_OUTPUTS)  # every pending scorer has its output type declared


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.id)
def test_entry_fields(method: Method) -> None:
    assert method.family in FAMILIES and method.bucket in BUCKETS
    assert method.name and method.canonical.strip()
    if method.family != "baseline" and method.authors:
        assert method.venue and method.year and method.url.startswith("https://")
    assert get_method(method.id) is method
    assert method.citation.endswith(".")


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.id)
def test_canonical_parses_and_cites_itself(method: Method) -> None:
    policy = parse(method.canonical, f"{method.id}.canonical")
    cited = [i.name for c in policy.clauses if c.kind == "cite" for i in c.methods]
    assert cited == [method.id]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.id)
def test_canonical_checks_clean_but_for_pending_scorers(method: Method) -> None:
    _policy, diags = check_source(method.canonical, f"{method.id}.canonical")
    errors = [d for d in diags if d.is_error]
    assert all(d.code == "E103" for d in errors), [(d.code, d.message) for d in errors]
    assert not [d for d in diags if d.severity == "warning"], [d.message for d in diags]
    named = {d.message.split("`")[1] for d in errors}
    assert named <= set(method.scorers), "the canonical form uses a pending scorer it does not list"


def test_citations() -> None:
    assert get_method("datacomp_basic").citation.startswith("Gadre et al. (2023). DataComp")
    assert get_method("kcenter").citation.startswith("Sener and Savarese (2018).")
    assert get_method("semdedup").authors[0] == "Amro Abbas"
    assert get_method("random").citation.startswith("(no single paper)")
    assert "datacomp_clip_score" in methods_using("clip_score")


def test_hash_is_stable() -> None:
    assert catalogue_hash() == catalogue_hash() and len(catalogue_hash()) == 64


@pytest.mark.parametrize(("text", "problem"), [
    ('id = "x"', "missing field"),
    ("not toml = = =", "x.toml"),
])
def test_malformed_entries_are_caught(text: str, problem: str) -> None:
    with pytest.raises(CatalogueError, match=problem):
        cat._load_one("x.toml", text)


def test_entry_rules() -> None:
    good = dict(
        id="x", name="X", authors=[], venue="", year=0, family="baseline", bucket="select", scorers=[],
        canonical="cite x", url="",
    )

    def toml(**over):
        data = {**good, **over}
        return "\n".join(f"{k} = {_toml(v)}" for k, v in data.items())

    assert cat._load_one("x.toml", toml()).year is None
    with pytest.raises(CatalogueError, match="file name"):
        cat._load_one("y.toml", toml())
    with pytest.raises(CatalogueError, match="family"):
        cat._load_one("x.toml", toml(family="magic"))
    with pytest.raises(CatalogueError, match="unknown field"):
        cat._load_one("x.toml", toml(colour="blue"))


def _toml(value) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def test_the_parsed_catalogue_is_cached_as_json_and_a_bad_cache_is_ignored(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CBDSL_HOME", str(tmp_path))
    cat._parsed.cache_clear()
    try:
        fresh = cat._parsed()
        (path,) = (tmp_path / "cache").glob("catalogue-*.json")
        cat._parsed.cache_clear()
        assert cat._parsed() == fresh  # read back from the JSON copy
        path.write_text("{not json")
        cat._parsed.cache_clear()
        assert cat._parsed() == fresh  # a corrupt copy costs a parse, never an error
        assert json.loads(path.read_text()) == fresh  # and is rewritten
        entries = {m.id: m for m in (cat._method(n, d) for n, d in fresh.items())}
        assert entries == catalogue()
    finally:
        cat._parsed.cache_clear()


# --- the stated rule is the example's rule ---------------------------------------------------------

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
WITH_EXAMPLE = [m for m in METHODS if m.example]


def _literals(node, reg) -> list:
    """The constants of an expression (thresholds, strings, parameter values) that state its rule.

    A model scorer's positional inputs are where its data comes from (a CLIP embedding computed from
    the image, or the one a DataComp download ships), not its rule: they are left out; its keyword
    parameters are kept. `30%` and `0.3` are one constant.
    """
    from cbdsl.dsl import ast

    match node:
        case ast.Number(value=v) | ast.String(value=v) | ast.Bool(value=v):
            return [v]
        case ast.Percent():
            return [node.fraction]
        case ast.Call(func=f, args=args, kwargs=kwargs):
            entry = reg.get(f.name, "expr")
            model = entry is not None and entry.cost != "metadata"
            out = [] if model else [x for a in args for x in _literals(a, reg)]
            return out + [x for k in kwargs for x in _literals(k.value, reg)]
    return [x for child in node.children() for x in _literals(child, reg)]


def _rule(text: str, name: str) -> list[tuple[str, tuple]]:
    """Each filter atom (lets inlined, `and` split) as its operator and its constants, sorted."""
    from cbdsl.dsl import ast

    policy = parse(text, name)
    lets = {c.name.name: c.value for c in policy.clauses if isinstance(c, ast.Let)}
    atoms: list = []

    def split(node):
        if isinstance(node, ast.Binary) and node.op == "and":
            split(node.left)
            split(node.right)
        else:
            atoms.append(node)

    for clause in policy.clauses:
        if isinstance(clause, ast.Filter):
            split(clause.condition)
    reg = registry()
    out = []
    for atom in atoms:
        op = "+".join(atom.ops) if isinstance(atom, ast.Compare) else (
            atom.func.name if isinstance(atom, ast.Call) else type(atom).__name__)
        values = _literals(_inlined(atom, lets), reg)
        out.append((op, tuple(sorted(map(repr, values)))))
    return sorted(out)


def _inlined(node, lets):
    """``node`` with every `let` name replaced by its value (recursively)."""
    from cbdsl.dsl import ast

    if isinstance(node, ast.Name) and node.name in lets:
        return _inlined(lets[node.name], lets)
    updates = {}
    for name, value in node:
        if isinstance(value, ast.Node):
            updates[name] = _inlined(value, lets)
        elif isinstance(value, tuple) and value and all(isinstance(v, ast.Node) for v in value):
            updates[name] = tuple(_inlined(v, lets) for v in value)
    return node.model_copy(update=updates) if updates else node


@pytest.mark.parametrize("method", WITH_EXAMPLE, ids=lambda m: m.id)
def test_the_stated_rule_is_the_examples_rule(method: Method) -> None:
    """`cbdsl methods ID` shows the canonical form: its thresholds, operators and parameters are the
    example's (which reproduces the reference code), so the catalogue cannot drift from the code."""
    path = EXAMPLES_DIR / method.example
    text = path.read_text(encoding="utf-8")
    cited = [i.name for c in parse(text, path.name).clauses if c.kind == "cite" for i in c.methods]
    assert method.id in cited
    assert _rule(method.canonical, f"{method.id}.canonical") == _rule(text, path.name)


def test_the_rule_comparison_sees_a_drift() -> None:
    """`aspect_ratio(image) < 3` against the example's `<= 3` (the drift issue 12 found) differs."""
    basic = get_method("datacomp_basic")
    drifted = basic.canonical.replace("aspect_ratio(image) <= 3", "aspect_ratio(image) < 3")
    example = (EXAMPLES_DIR / basic.example).read_text(encoding="utf-8")
    assert _rule(drifted, "drifted") != _rule(example, "example")
    fasttext = get_method("datacomp_image_based").canonical.replace(', split="fasttext"', "")
    assert _rule(fasttext, "a") != _rule((EXAMPLES_DIR / "datacomp_image_based.cur").read_text(encoding="utf-8"), "b")


def test_every_named_example_exists() -> None:
    assert {m.example for m in WITH_EXAMPLE} <= {p.name for p in EXAMPLES_DIR.glob("*.cur")}
    assert len(WITH_EXAMPLE) >= 5
