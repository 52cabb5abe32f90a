"""The AST diff (`dsl/diff.py`, `cbdsl diff`): matching, edits with spans on both sides, and change classes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.dsl.diff import diff_policies, policy_families
from cbdsl.dsl.parser import parse
from cbdsl.scaffolds.catalogue import family_of

BASE = """\
policy "p"
cite datacomp_basic
pool "demo"
let clip = clip_score(image, text, model="ViT-B-32")
filter clip >= quantile(clip, 0.3)
filter words(text) > 2 and min(width, height) >= 24
mix by source { coco: 0.4, *: 0.6 }
budget 200
select random(seed=0)
"""


def diff(new: str, old: str = BASE, **kw):
    return diff_policies(parse(old, "a.cur"), parse(new, "b.cur"), **{"family_of": family_of, **kw})


def edits(d) -> list[tuple[str, str, str | None, str | None, str]]:
    return [(e.op, e.node, e.old and e.old.text, e.new and e.new.text, e.change) for e in d.edits]


def test_reordered_and_reformatted_clauses_are_no_change():
    lines = BASE.splitlines()
    shuffled = "\n".join([lines[8], lines[5], "# a comment", lines[4], lines[0], lines[7], lines[3], lines[1],
                          lines[6].replace(", ", ",   "), lines[2]]) + "\n"
    d = diff(shuffled)
    assert d.change == "none" and d.edits == ()


def test_number_changes_are_literal_with_spans_on_both_sides():
    new = BASE.replace("quantile(clip, 0.3)", "quantile(clip, 50%)").replace("coco: 0.4, *: 0.6", "coco: 0.5, *: 0.5") \
        .replace("seed=0", "seed=7").replace("budget 200", "budget 2%")
    d = diff(new)
    assert d.change == "literal"
    assert sorted(edits(d)) == sorted([
        ("update", "percent", "0.3", "50%", "literal"), ("update", "number", "0.4", "0.5", "literal"),
        ("update", "number", "0.6", "0.5", "literal"), ("update", "number", "0", "7", "literal"),
        ("update", "percent", "200", "2%", "literal")])
    seed = next(e for e in d.edits if e.new.text == "7")
    assert BASE.encode()[seed.old.span.start:seed.old.span.end] == b"0"
    assert new.encode()[seed.new.span.start:seed.new.span.end] == b"7"
    assert seed.old.span.source == "a.cur" and seed.new.span.source == "b.cur" and seed.clause == "select"


def test_operators_and_clauses_are_structural_and_swaps_are_moves():
    new = BASE.replace("words(text) > 2 and min(width, height) >= 24", "min(width, height) > 24 and words(text) > 2") \
        .replace('model="ViT-B-32"', 'model="ViT-L-14"') + "filter len(text) > 5\n"
    d = diff(new)
    assert d.change == "structural"
    got = edits(d)
    assert ("move", "compare", "words(text) > 2", "words(text) > 2", "structural") in got
    assert ("update", "compare", "min(width, height) >= 24", "min(width, height) > 24", "structural") in got
    assert ("update", "string", '"ViT-B-32"', '"ViT-L-14"', "structural") in got
    assert ("insert", "filter", None, "filter len(text) > 5", "structural") in got
    assert {c.label for c in d.changes} == {"let clip", "filter"}


def test_a_filter_pairs_with_its_most_similar_old_filter():
    d = diff(BASE.replace("words(text) > 2", "words(text) > 3"))
    [change] = d.changes
    assert change.label == "filter" and "words(text) > 2" in change.old.text and change.change == "literal"


def test_new_family_is_what_no_earlier_iteration_used():
    new = BASE.replace("select random(seed=0)", "dedup exact(dup_key(text))\nselect random(seed=0)")
    d = diff(new)
    assert d.change == "new-family" and d.new_families == {"dedup"}
    [edit] = d.edits
    assert (edit.op, edit.change, edit.families) == ("insert", "new-family", ("dedup",))
    # an earlier iteration (before `a`) that used dedup makes the same change structural
    assert diff(new, prior_families={"dedup"}).change == "structural"


def test_dropping_a_method_for_random_selection_is_no_new_family():
    """A method's selection replaced by the baseline's `select random` explores nothing new."""
    old = BASE.replace("select random(seed=0)", "select top clip")
    d = diff(BASE, old)
    assert d.change != "new-family" and not d.new_families
    assert all(e.change != "new-family" for e in d.edits)


def test_a_new_family_through_a_let_and_a_swapped_scorer():
    new = BASE.replace("clip_score(image, text, model=\"ViT-B-32\")", "el2n(proxy=\"tiny\")")
    d = diff(new)
    assert d.change == "new-family" and d.new_families == {"training dynamics"}
    assert any(e.op == "update" and e.new.text == "el2n" and e.change == "new-family" for e in d.edits)
    # a let that nothing read before is read now: the new filter brings the family
    old = BASE + "let loss = el2n()\n"
    d = diff(old + "filter loss < 3\n", old)
    assert d.change == "new-family" and d.edits[0].families == ("training dynamics",)


def test_name_citations_and_dead_lets_are_metadata():
    new = BASE.replace('policy "p"', 'policy "q"').replace("cite datacomp_basic", "cite datacomp_basic, el2n") \
        + 'adapt el2n "unused"\nlet spare = el2n()\n'
    d = diff(new)
    assert d.change == "metadata"
    assert {e.change for e in d.edits} == {"metadata"}
    assert {c.label for c in d.changes} == {"policy", "cite el2n", "adapt el2n", "let spare"}


def test_families_come_from_the_catalogue():
    policy = parse(BASE + "dedup minhash(text)\n")
    # `select random` is the `baseline` family's strategy: the reference, no family of its own (issue 12)
    assert policy_families(policy, family_of) == {"embedding geometry", "heuristic filter", "dedup"}
    # statistics, functions and shared tools are no family; `select top` is no strategy of a method
    assert policy_families(parse("filter abs(lang_score(text)) > quantile(lang_score(text), 0.5)\nselect top lang_score(text)\n"), family_of) == set()


def test_cli_diff_text_and_json(tmp_path):
    (tmp_path / "a.cur").write_text(BASE)
    (tmp_path / "b.cur").write_text(BASE.replace("seed=0", "seed=1"))
    runner = CliRunner()
    out = runner.invoke(cli, ["diff", str(tmp_path / "a.cur"), str(tmp_path / "b.cur")])
    assert out.exit_code == 0, out.output
    assert "literal" in out.output and "- select random(seed=0)" in out.output and "+ select random(seed=1)" in out.output
    assert "update number    0 -> 1" in out.output
    data = json.loads(runner.invoke(cli, ["diff", "--json", str(tmp_path / "a.cur"), str(tmp_path / "b.cur")]).output)
    assert data["class"] == "literal" and data["edits"][0]["old"]["text"] == "0"


@pytest.mark.parametrize("args, message", [
    (["@x", "@2"], "is no iteration"),
    (["@1", "@2"], "no cbdsl.toml"),
    (["missing.cur", "missing.cur"], "cannot read"),
])
def test_cli_diff_bad_input_is_a_clear_error(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(cli, ["diff", *args])
    assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output


def test_cli_diff_of_a_broken_policy_shows_its_syntax_error(tmp_path):
    (tmp_path / "a.cur").write_text(BASE)
    (tmp_path / "b.cur").write_text("filter words(text >\n")
    out = CliRunner().invoke(cli, ["diff", str(tmp_path / "a.cur"), str(tmp_path / "b.cur")])
    assert out.exit_code == 1 and "cannot diff" in out.output and "error[" in out.output
