"""The method catalogue: every entry loads, cites, parses, and checks clean except for pending scorers."""

from __future__ import annotations

import json

import pytest

from cbdsl.compiler.check import check_source
from cbdsl.dsl.parser import parse
from cbdsl.scaffolds import catalogue as cat
from cbdsl.scaffolds.catalogue import (
    BUCKETS, FAMILIES, CatalogueError, Method, catalogue, catalogue_hash, get_method, method_ids, methods_using,
    pending_scorers, scorer_ids,
)
from cbdsl.scorers.registry import PENDING_OUTPUTS, registry

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
