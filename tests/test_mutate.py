"""AST mutations (research/mutate.py): each operator gives a policy that checks, is deterministic, and changes what it says."""

from __future__ import annotations

import random

import pytest

from cbdsl.stages import check_source
from cbdsl.dsl import ast
from cbdsl.research import mutate as M
from cbdsl.dsl.format import canonical_text, format_policy
from cbdsl.dsl.parser import parse

SCHEMA = {"id": "str", "image": "binary", "width": "int", "height": "int", "text": "str", "source": "str",
          "url": "str"}
STATS = {"source": {"value_counts": {"coco": 10, "vg": 5}}}

POLICY = """\
policy "p"
pool "demo"
let w = words(text)
filter w > 2
filter len(text) >= quantile(len(text), 0.3) per source
filter min(width, height) >= 24
mix by source { coco: 0.4, vg: 0.3, *: 0.3 }
budget 500
select random(seed=0)
"""


@pytest.fixture(scope="module")
def vocab() -> M.Vocabulary:
    return M.vocabulary(SCHEMA, STATS, max_cost="metadata")


@pytest.fixture(scope="module")
def policy() -> ast.Policy:
    return parse(POLICY)


def checks(policy: ast.Policy) -> list[str]:
    """Error codes of `cbdsl check` on the policy's formatted text against the schema."""
    parsed, diags = check_source(format_policy(policy), "<mutant>", SCHEMA)
    assert parsed is not None
    return [d.code for d in diags if d.is_error]


def draws(op, policy, vocab, n=40):
    """The operator's proposals for n seeds (None where it does not apply)."""
    return [op(policy, random.Random(i), vocab) for i in range(n)]


def test_vocabulary_of_the_demo_schema(vocab):
    texts = {M.format_expr(s) for s in vocab.scores}
    assert {"width", "height", "words(text)", "len(text)", "area(image)"} <= texts
    assert not any("id" in t.replace("width", "") for t in texts), "the id column is never a score input"
    assert vocab.groups == ("source",)
    assert {M.format_expr(d) for d in vocab.dedups} >= {"exact(image)", "exact(text)"}
    assert "clip_score" not in vocab.swaps and not vocab.embeddings, "metadata only: no model scorer"
    assert "len" in vocab.swaps["words"] and "area" in vocab.swaps["width"]
    assert "width" not in vocab.swaps["words"], "a swap keeps the input kind (text, not image)"
    full = M.vocabulary(SCHEMA, STATS, max_cost="gpu_model")
    assert any(M.format_expr(s) == "clip_score(image, text)" for s in full.scores)
    with pytest.raises(ValueError, match="max_cost"):
        M.vocabulary(SCHEMA, STATS, max_cost="cheap")


@pytest.mark.parametrize("op", M.OPERATORS, ids=lambda op: op.__name__)
def test_every_operator_is_deterministic_and_valid(op, policy, vocab):
    first = draws(op, policy, vocab)
    again = draws(op, policy, vocab)
    assert [m and canonical_text(m.policy) for m in first] == [m and canonical_text(m.policy) for m in again]
    made = [m for m in first if m is not None]
    assert made, f"{op.__name__} never applies to the test policy"
    changed = [m for m in made if canonical_text(m.policy) != canonical_text(policy)]
    assert len(changed) == len(made), "a proposal always changes the policy"
    valid = [m for m in made if not checks(m.policy)]
    # Swaps may pick a scorer whose parameters differ; everything else is valid by construction.
    assert len(valid) >= (len(made) // 2 if op is M.swap_scorer else len(made))
    assert len({canonical_text(m.policy) for m in made}) > 1, "different seeds explore different proposals"


def clause_texts(policy: ast.Policy, kind) -> list[str]:
    return [M.format_clause(c, comments=False) for c in policy.of_kind(kind)]


def test_tweak_literal_changes_one_number_and_nothing_else(policy, vocab):
    for m in filter(None, draws(M.tweak_literal, policy, vocab)):
        assert m.kind == "literal"
        before, after = canonical_text(policy).splitlines(), canonical_text(m.policy).splitlines()
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        assert len(before) == len(after) and len(changed) == 1, m.description
        a, b = changed[0]
        assert a.split()[0] == b.split()[0], "the same clause kind"
        if "seed" in m.description:
            assert a.startswith("select random(seed=") and b != a
        if "weights" in m.description:
            weights = [e.weight.value for e in m.policy.of_kind(ast.Mix)[0].entries]
            assert sum(weights) == pytest.approx(1.0), "mix weights move in pairs: the sum stays"


def test_fractions_stay_fractions_and_counts_stay_whole(vocab):
    p = parse('policy "p"\npool "demo"\nfilter top(words(text), 0.05)\nfilter words(text) > 0\nbudget 10\n')
    for m in filter(None, draws(M.tweak_literal, p, vocab, n=60)):
        top = next(n for n in m.policy.walk() if isinstance(n, ast.Call) and n.func.name == "top")
        assert 0 < top.args[1].value < 1
        words = m.policy.of_kind(ast.Filter)[1].condition.operands[1].value
        assert isinstance(words, int) and words >= 0
    pct = parse('policy "p"\npool "demo"\nfilter len(text) >= quantile(len(text), 30%)\nbudget 10\n')
    m = M.tweak_literal(pct, random.Random(0), vocab)
    q = next(n for n in m.policy.walk() if isinstance(n, ast.Percent))
    assert 0 < q.value < 100 and q.value != 30


def test_budget_pool_and_name_are_never_mutated(policy, vocab):
    for op in M.OPERATORS:
        for m in filter(None, draws(op, policy, vocab, n=20)):
            assert clause_texts(m.policy, ast.Budget) == ["budget 500"]
            assert m.policy.name == "p" and clause_texts(m.policy, ast.PoolClause) == ['pool "demo"']


def test_swap_scorer_replaces_every_occurrence_of_the_call(policy, vocab):
    for m in filter(None, draws(M.swap_scorer, policy, vocab)):
        old, new = m.description.split(":")[0].removeprefix("scorer ").split(" -> ")
        assert new in vocab.swaps[old]
        calls = [n.func.name for n in m.policy.walk() if isinstance(n, ast.Call)]
        assert new in calls
        if old == "len":  # both `len(text)` of the quantile filter go together
            assert "len" not in calls and calls.count(new) >= 2


def test_add_and_drop_filter(policy, vocab):
    n = len(policy.of_kind(ast.Filter))
    for m in filter(None, draws(M.add_filter, policy, vocab)):
        assert len(m.policy.of_kind(ast.Filter)) == n + 1
        added = m.policy.of_kind(ast.Filter)[-1].condition
        assert isinstance(added, ast.Compare) and added.operands[1].func.name == "quantile"
        assert added.operands[0] == added.operands[1].args[0], "the threshold is a quantile of the same score"
    for m in filter(None, draws(M.drop_filter, policy, vocab)):
        assert len(m.policy.of_kind(ast.Filter)) == n - 1
        if "filter w > 2" in m.description:
            assert not m.policy.of_kind(ast.Let), "the let only the dropped filter used goes with it"
        else:
            assert m.policy.of_kind(ast.Let)
    bare = parse('policy "p"\npool "demo"\nbudget 10\n')
    assert M.drop_filter(bare, random.Random(0), vocab) is None


def test_change_select_and_dedup(policy, vocab):
    for m in filter(None, draws(M.change_select, policy, vocab)):
        [new] = clause_texts(m.policy, ast.Select)
        assert new != "select random(seed=0)" and new.split("(")[0].split()[1] in {
            "top", "bottom", "random", "weighted", "stratified", "kcenter"}
    kinds = set()
    for m in filter(None, draws(M.change_dedup, policy, vocab)):
        [dedup] = clause_texts(m.policy, ast.Dedup)
        kinds.add(dedup.split("(")[0])
    # every dedup method the vocabulary offers (at metadata cost: `exact`, and any later one) is drawn
    assert "dedup exact" in kinds and kinds == {f"dedup {d.func.name}" for d in vocab.dedups}
    with_dedup = parse(POLICY + "dedup exact(text)\n")
    outcomes = {len(m.policy.of_kind(ast.Dedup)) for m in draws(M.change_dedup, with_dedup, vocab)}
    assert outcomes == {0, 1}, "a dedup is dropped or replaced"


def test_mutate_and_random_policy(policy, vocab):
    kinds = {M.mutate(policy, random.Random(i), vocab).kind for i in range(60)}
    assert kinds == {"literal", "swap", "add-filter", "drop-filter", "select", "dedup"}
    base = parse('policy "b"\npool "demo"\nbudget 500\nselect random(seed=0)\n')
    made = [M.random_policy(base, random.Random(i), vocab) for i in range(30)]
    made = [m for m in made if m is not None]
    assert len(made) >= 25 and all(m.policy != base for m in made)
    assert max(len(m.description.split("; ")) for m in made) == 3


def test_with_frame_and_citations(vocab):
    p = parse('# head\npolicy "x"\npool "other"\nfilter words(text) > 2\nbudget 7\ndedup exact(image)\n'
              'select random(seed=0)\n')
    framed = M.with_frame(p, name="s", pool="demo", budget=500)
    assert canonical_text(framed).splitlines()[:2] == ['policy "s"', 'pool "demo"']
    assert "budget 500" in canonical_text(framed) and not framed.comments
    cited = M.with_citations(framed, "search: a test", vocab)
    assert clause_texts(cited, ast.Cite) == ["cite datacomp_basic, exact_dedup, random"]
    assert [c.method.name for c in cited.of_kind(ast.Adapt)] == ["datacomp_basic", "exact_dedup", "random"]
    assert not checks(cited)
    top = M.with_citations(parse('policy "x"\npool "demo"\nbudget 5\nselect top width\n'), "r", vocab)
    assert not top.of_kind(ast.Cite), "a bare ordering instantiates no catalogue method"
