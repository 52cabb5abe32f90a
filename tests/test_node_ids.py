"""Node ids (issue 14): a tree built in code or mutated without re-parsing compiles like the same text parsed.

The typed policy keys what resolution learns (types, resolved names and
calls, parameters) by node id, the node's path in the tree, never by its
span (see ``cbdsl.dsl.ast``). Keyed by span, a tree without spans resolved
wrong with no diagnostic: every node had the span ``(0, 0)``, so the last
node recorded won (1 type instead of 9 for an example, then ``KeyError:
'text'`` in ``plan``). Here, for each way of making a tree without the
parser:

- (a) every example with its spans stripped, and rebuilt with the validating
  constructors: the same annotations by id, diagnostics, plan and optimized
  plan as the parsed example (without a schema, and with its pool's schema
  and assets where the test has a pool of that kind);
- (b) one policy built entirely in code (reusing node objects at several
  places, as code does): what its formatted text compiles and selects;
- (c) every mutation operator of ``cbdsl search`` (``mutate.OPERATORS``,
  a chain of them, and the frame and citation clauses search adds), applied
  without re-parsing: the same annotations, plan, optimized plan and
  selection on the demo pool as the policy parsed from ``format_policy``.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path

import pytest

from cbdsl.compiler.ir import Plan
from cbdsl.compiler.rules import optimize
from cbdsl.dsl import ast
from cbdsl.dsl.format import format_policy
from cbdsl.dsl.parser import parse
from cbdsl.pipelines.data.writing import add_asset
from cbdsl.pipelines.engine.execute import execute
from cbdsl.pipelines.loop.submit import BASELINE
from cbdsl.research import mutate as M
from cbdsl.scorers.api import RunError
from cbdsl.stages import analyze, lower, plan
from conftest_pools import (  # noqa: F401 (fixtures)
    ARDS_IDS, ICONS_IDS, ROOT, asset_reader, demo_pool, write_datacomp_pool, write_ids, write_llava_pool,
)

EXAMPLES = sorted((ROOT / "examples").glob("*.cur"))


# --- trees made without the parser ------------------------------------------------------------


def strip_spans(policy: ast.Policy) -> ast.Policy:
    """The policy with every span the default one, as a tree built in code has."""
    return policy.transform(lambda node: node.model_copy(update={"span": ast.NO_SPAN}))


def rebuild(policy: ast.Policy) -> ast.Policy:
    """The policy made again node by node with the validating constructors (no span given)."""

    def construct(node: ast.Node) -> ast.Node:
        return type(node)(**{name: getattr(node, name) for name in type(node).model_fields
                             if name not in ("span", "node")})

    return policy.transform(construct)


# --- what each stage gives ----------------------------------------------------------------------


def clause_remap(policy: ast.Policy):
    """Ids of ``policy`` -> ids of ``parse(format_policy(policy))``: the formatter orders clauses by kind."""
    order = sorted(range(len(policy.clauses)), key=lambda i: policy.clauses[i].rank)  # format's stable sort
    position = {old: new for new, old in enumerate(order)}

    def remap(nid):
        if nid and isinstance(nid[0], tuple) and nid[0][0] == "clauses":
            return (("clauses", position[nid[0][1]]), *nid[1:])
        return nid

    return remap


def stages(policy: ast.Policy, pool_context=None, remap=lambda nid: nid) -> dict:
    """Diagnostics, annotations by id, plan and optimized plan (as JSON text) of a policy."""
    schema, assets, id_column = pool_context or (None, None, "id")
    typed, diags = analyze(policy, schema, assets=assets)

    def table(found, value=lambda v: v) -> dict:
        return {remap(k): value(v) for k, v in found.items()}

    out = {
        "diagnostics": sorted((d.code, d.severity, d.message, d.hints) for d in diags),
        "names": table(typed.names),
        "calls": table(typed.calls),
        "types": table(typed.types),
        "params": table(typed.params, lambda p: (type(p).__name__, p.model_dump(mode="json"))),
        "lets": dict(typed.lets),
        "let_order": typed.let_order,
        "columns": dict(typed.columns),
        "mix_weights": typed.mix_weights,
        "cited": typed.cited,
    }
    if not any(d.is_error for d in diags):
        logical = plan(typed, id_column=id_column)
        out["plan"] = logical.model_dump_json(indent=1)
        out["optimized"] = optimize(logical).model_dump_json(indent=1)
    return out


def assert_same(found: dict, expected: dict, what: str) -> None:
    # plan first: its difference reads best
    for key in ("plan", "optimized", *expected):
        assert found.get(key) == expected.get(key), f"{what}: {key} differs from the parsed policy's"


def selection(compiled: dict, pool) -> list[str] | str:
    """The selected ids in rank order, or the run's error message."""
    low = lower(Plan.model_validate_json(compiled["optimized"]), pool.schema, asset_reader(pool))
    try:
        result = execute(low, pool)
    except RunError as err:
        return f"RunError: {err.message}"
    return result.selection.get_column(pool.id_column).to_list()


def context(pool) -> tuple:
    return pool.schema, {a: info.kind for a, info in pool.card.assets.items()}, pool.id_column


@pytest.fixture(scope="module")
def example_pools(demo_pool, tmp_path_factory) -> dict:  # noqa: F811 (fixture)
    """A pool of each kind the examples name and the tests can make: the demo pool, tiny DataComp and LLaVA ones."""
    tmp = tmp_path_factory.mktemp("node-ids")
    llava = write_llava_pool(tmp / "llava-665k", 40, tmp / "src")
    add_asset(llava.path, "icons-133k", write_ids(tmp / "src" / "icons.txt", ICONS_IDS[:20]), kind="ids")
    llava = add_asset(llava.path, "ards-selected", write_ids(tmp / "src" / "ards.txt", ARDS_IDS[:20]), kind="ids")
    return {"demo": demo_pool, "datacomp-small": write_datacomp_pool(tmp / "datacomp-small", 40, tmp / "src"),
            "llava-665k": llava}


# --- the id itself --------------------------------------------------------------------------------


def test_ids_are_paths_distinct_per_place_and_change_nothing_of_the_node():
    text = 'pool "demo"\nfilter len(text) > 2 and words(text) > 2\nselect top words(text)\n'
    policy = parse(text)
    dump, digest = policy.model_dump_json(), hash(policy)
    ids = ast.NodeIds(policy)
    assert ids.root is policy, "a parsed tree is never copied"
    places = list(policy.walk())
    assert len(ids) == len(places) == len({ids[n] for n in places})
    assert all(ids.node(ids[n]) is n for n in places)
    assert ids[policy] == () and ids[policy.clauses[1].condition] == (("clauses", 1), ("condition", None))
    texts = [n for n in places if isinstance(n, ast.Name)]
    assert len(texts) == 3 and len({ids[n] for n in texts}) == 3, "equal subtrees at two places: two ids"
    typed, _ = analyze(policy, {"text": "str", "id": "str"})
    assert [typed.id_of(n) in typed.types for n in texts] == [True] * 3
    assert typed.id_of(parse(text).clauses[1]) is None, "an equal node of another tree has no id here"
    assert policy.model_dump_json() == dump and hash(policy) == digest and policy == parse(text)
    again = pickle.loads(pickle.dumps(ids))  # a copy indexes its own node objects
    assert again.root == policy and again[again.node(ids[texts[1]])] == ids[texts[1]]


def test_a_node_object_at_two_places_gets_a_copy_and_an_id_for_each_place():
    text = ast.Name(name="text")
    words = ast.Call(func=ast.Ident(name="words"), args=(text,))
    policy = ast.Policy(clauses=(
        ast.Filter(condition=ast.Compare(operands=(words, ast.Number(value=2)), ops=(">",))),
        ast.Select(strategy=ast.Ident(name="top"), args=(words,)),
    ))
    ids = ast.NodeIds(policy)
    assert ids.root == policy and ids.root is not policy
    places = list(ids.root.walk())
    assert len(ids) == len(places) == len({id(n) for n in places})
    assert ids.root.model_dump_json() == policy.model_dump_json()
    typed, diags = analyze(policy, {"text": "str", "id": "str"})
    assert not [d for d in diags if d.is_error] and typed.policy == policy
    assert typed.lookup(typed.policy.clauses[1].args[0]).id == "words"
    assert typed.lookup(typed.policy.clauses[1]).id == "top"


# --- (a) the examples without spans -----------------------------------------------------------------


def _pool_name(text: str) -> str:
    return re.search(r'^pool\s+"([^"]+)"', text, re.MULTILINE).group(1)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_an_example_without_spans_compiles_like_the_parsed_one(path: Path, example_pools):
    text = path.read_text(encoding="utf-8")
    parsed = parse(text, f"examples/{path.name}")
    pool = example_pools.get(_pool_name(text))
    for pool_context in (None, *([context(pool)] if pool is not None else [])):
        expected = stages(parsed, pool_context)
        if any(isinstance(n, ast.Filter) for n in parsed.clauses):
            assert expected["types"], "the parsed example has typed expressions"
        for how, built in (("spans stripped", strip_spans(parsed)), ("rebuilt", rebuild(parsed))):
            assert built == parsed and all(n.span == ast.NO_SPAN for n in built.walk())
            assert_same(stages(built, pool_context), expected,
                        f"{path.stem} {how} ({'pool schema' if pool_context else 'no schema'})")


# --- (b) a policy built in code ---------------------------------------------------------------------

BUILT_TEXT = """\
policy "built-in-code"

pool "demo"

let long = words(text) > 2

filter long and min(width, height) >= 24
filter len(text) <= quantile(len(text), 0.9) per source

dedup exact(text)

mix by source { coco: 0.3, laion: 0.4, *: 0.3 }

budget 300
select top words(text)
"""


def built_in_code() -> ast.Policy:
    """BUILT_TEXT with the constructors, node objects reused where the text repeats itself."""
    text, source = ast.Name(name="text"), ast.Ident(name="source")
    words = ast.Call(func=ast.Ident(name="words"), args=(text,))
    length = ast.Call(func=ast.Ident(name="len"), args=(text,))
    size = ast.Call(func=ast.Ident(name="min"), args=(ast.Name(name="width"), ast.Name(name="height")))

    def entry(group: ast.Node, weight: float) -> ast.MixEntry:
        return ast.MixEntry(group=group, weight=ast.Number(value=weight))

    return ast.Policy(clauses=(
        ast.PolicyClause(name=ast.String(value="built-in-code")),
        ast.PoolClause(name=ast.String(value="demo")),
        ast.Let(name=ast.Ident(name="long"), value=ast.Compare(operands=(words, ast.Number(value=2)), ops=(">",))),
        ast.Filter(condition=ast.Binary(op="and", left=ast.Name(name="long"),
                                        right=ast.Compare(operands=(size, ast.Number(value=24)), ops=(">=",)))),
        ast.Filter(condition=ast.Compare(operands=(length, ast.Call(
            func=ast.Ident(name="quantile"), args=(length, ast.Number(value=0.9)), per=source)), ops=("<=",))),
        ast.Dedup(method=ast.Call(func=ast.Ident(name="exact"), args=(text,))),
        ast.Mix(by=source, entries=(entry(ast.Ident(name="coco"), 0.3), entry(ast.Ident(name="laion"), 0.4),
                                    entry(ast.Star(), 0.3))),
        ast.Budget(unit="rows", amount=ast.Number(value=300)),
        ast.Select(strategy=ast.Ident(name="top"), args=(words,)),
    ))


def test_a_policy_built_in_code_compiles_and_selects_like_its_text(demo_pool):  # noqa: F811 (fixture)
    built, parsed = built_in_code(), parse(BUILT_TEXT, "built.cur")
    assert built == parsed and format_policy(built) == BUILT_TEXT
    expected = stages(parsed, context(demo_pool))
    assert "plan" in expected and len(expected["types"]) > 20
    found = stages(built, context(demo_pool))
    assert_same(found, expected, "built in code")
    selected = selection(expected, demo_pool)
    assert len(selected) == 300 and selection(found, demo_pool) == selected


# --- (c) mutations without re-parsing --------------------------------------------------------------

MUTATION_BASES = {
    "baseline": BASELINE.format(pool="demo", budget=300),
    "demo_basic_quality": (ROOT / "examples" / "demo_basic_quality.cur").read_text(encoding="utf-8"),
    "built": BUILT_TEXT,
    "weighted": """\
pool "demo"
let size = min(width, height)
filter size >= 24 and words(text) > 1
filter len(text) <= quantile(len(text), 90%) per source
dedup exact(url)
select weighted(size, seed=3)
""",
}
PER_OPERATOR = 2  # applicable draws kept per operator and base (seeded, so the same every run)


def _chain(policy: ast.Policy, rng: random.Random, vocab: M.Vocabulary) -> M.Mutation | None:
    """Three operators in a row, none of their results re-parsed (``cbdsl search --strategy random``)."""
    return M.random_policy(policy, rng, vocab, max_steps=3)


def _proposals(vocab: M.Vocabulary):
    """(label, policy) for each operator on each base, framed (and cited) as ``cbdsl search`` frames them."""
    for base_name, text in MUTATION_BASES.items():
        base = M.with_frame(parse(text, f"{base_name}.cur"), name="search", pool="demo", budget=300)
        for op in (*M.OPERATORS, _chain):
            kept = 0
            for draw in range(40):
                found = op(base, random.Random(f"{base_name}/{op.__name__}/{draw}"), vocab)
                if found is None or found.policy == base:
                    continue
                policy = M.with_frame(found.policy, name="search", pool="demo", budget=300)
                if draw % 2:
                    policy = M.with_citations(policy, "node ids test", vocab)
                yield op.__name__, f"{base_name}/{op.__name__}/{draw}: {found.description}", policy
                kept += 1
                if kept == PER_OPERATOR:
                    break


def test_every_mutation_without_reparsing_compiles_and_selects_like_its_formatted_text(demo_pool):  # noqa: F811
    vocab = M.vocabulary(demo_pool.schema, demo_pool.card.stats, id_column=demo_pool.id_column, max_cost="metadata")
    pool_context = context(demo_pool)
    ran: dict[str, int] = {}
    for operator, label, mutated in _proposals(vocab):
        parsed = parse(format_policy(mutated), "formatted.cur")
        assert parsed == mutated, label
        expected = stages(parsed, pool_context)
        found = stages(mutated, pool_context, remap=clause_remap(mutated))
        assert_same(found, expected, label)
        if "plan" in expected:
            assert selection(found, demo_pool) == selection(expected, demo_pool), f"{label}: the selections differ"
            ran[operator] = ran.get(operator, 0) + 1
    every = [op.__name__ for op in (*M.OPERATORS, _chain)]
    assert sorted(ran) == sorted(every), f"operators never compared on a selection: {set(every) - set(ran)}"
