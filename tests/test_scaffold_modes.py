"""Scaffold modes (`scaffolds/modes.py`): every rule with a policy it accepts and one it refuses,
then the rules at work in a sandbox: warnings in `cbdsl check`, refusals in `cbdsl submit`, the guide."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.dsl.parser import parse
from cbdsl.pipelines.data.demo import make_demo
from cbdsl.scaffolds.catalogue import FAMILIES
from cbdsl.scaffolds.modes import RULES, check_policy, check_submission, research_message, research_note

HEAD = 'policy "p"\npool "demo"\nbudget 200\n'
BASELINE = parse(HEAD + "select random(seed=0)\n")
#: accepted by `adapt` after the baseline: cites, instantiates and adapts datacomp_basic
GOOD = HEAD + 'cite datacomp_basic\nadapt datacomp_basic "demo-sized: only the word rule"\nfilter words(text) > 3\n'


def codes(text: str, history=((0, BASELINE),), scaffold: str = "adapt") -> list[str]:
    return [v.code for v in check_policy(scaffold, parse(text), list(history))]


def test_open_and_guide_have_no_rule():
    assert codes(HEAD, scaffold="open") == [] and codes(HEAD, scaffold="guide") == []


def test_s101_every_iteration_cites_a_method():
    assert codes(HEAD + "filter words(text) > 3\n", scaffold="cite") == ["S101"]
    assert codes(HEAD + "cite datacomp_basic\nfilter words(text) > 3\n", scaffold="cite") == []
    assert codes(HEAD + "filter words(text) > 3\n") == ["S101"]


def test_s102_the_cited_method_shapes_the_selection():
    named_only = HEAD + 'cite el2n\nadapt el2n "a 1-epoch proxy"\nlet loss = el2n(proxy="tiny")\nfilter words(text) > 3\n'
    assert codes(named_only) == ["S102"]
    used = named_only + "select top loss\n"
    assert codes(used) == []


def test_s103_the_adaptation_is_explained():
    assert codes(HEAD + "cite datacomp_basic\nfilter words(text) > 3\n") == ["S103"]
    assert codes(HEAD + 'cite datacomp_basic\nadapt datacomp_basic ""\nfilter words(text) > 3\n') == ["S103"]
    assert codes(GOOD) == []


def test_s104_the_canonical_form_is_no_adaptation():
    # clip_score's canonical form, its `let` renamed: renaming changes nothing
    copied = HEAD + ('cite clip_score\nadapt clip_score "none really"\n'
                     'let s = clip_score(image, text, model="ViT-B-32", pretrained="openai", scale="clipscore", '
                     'prefix="A photo depicts")\nfilter s >= quantile(s, 50%)\n')
    assert codes(copied) == ["S104"]
    assert codes(copied.replace("quantile(s, 50%)", "quantile(s, 50%) per source")) == []


def test_s105_a_literal_only_change_is_a_shallow_move():
    history = [(0, BASELINE), (1, parse(GOOD))]
    assert codes(GOOD.replace("> 3", "> 4"), history) == ["S105"]
    assert codes(GOOD.replace('"demo-sized', '"other words for it'), history) == ["S105"]  # only metadata
    assert codes(GOOD, history) == ["S105"]  # a resubmission
    assert codes(GOOD + "filter min(width, height) >= 20\n", history) == []
    assert codes(GOOD, [(0, BASELINE)]) == []  # the first iteration is compared with the baseline


def test_s106_one_family_three_times_in_a_row_must_not_be_the_only_family_next():
    steps = [GOOD, GOOD + "filter min(width, height) >= 20\n", GOOD + "filter len(text) > 8\n"]
    history = [(0, BASELINE)] + [(k, parse(t)) for k, t in enumerate(steps, start=1)]
    again = GOOD + "filter max(width, height) <= 60\n"
    assert codes(again, history) == ["S106"]
    other = again.replace("cite datacomp_basic", "cite datacomp_basic, exact_dedup") + "dedup exact(dup_key(text))\n"
    assert codes(other, history) == []
    assert codes(again, history[:-1]) == []  # two in a row only


def test_s107_research_needs_a_note_and_bans_knob_tweaks():
    """`research`: no citation needed, a literal-only change is S105, a message without its note S107."""
    history = [(0, BASELINE), (1, parse(HEAD + "filter words(text) > 3\n"))]
    assert codes(HEAD + "filter words(text) > 4\n", history, scaffold="research") == ["S105"]
    assert codes(HEAD + "filter words(text) > 3\nfilter len(text) < 200\n", history, scaffold="research") == []

    class Entry:  # what check_submission reads of a ledger entry
        def __init__(self, n, text):
            self.n, self.policy_text, self.status = n, text, "scored"

    entries = [Entry(0, HEAD + "select random(seed=0)\n")]
    new = parse(HEAD + "filter words(text) > 3\n")
    note = research_message("captions under 3 words score low", "short captions are noise", "drop them",
                            summary="fewer short captions")
    assert note.splitlines() == ["fewer short captions", "observation: captions under 3 words score low",
                                 "hypothesis: short captions are noise", "change: drop them"]
    assert research_note(note) == {"observation": "captions under 3 words score low",
                                   "hypothesis": "short captions are noise", "change": "drop them"}
    assert check_submission("research", new, entries, note) == []
    [refusal] = check_submission("research", new, entries, "Observation: x\nchange: y")
    assert refusal.startswith("[S107 no research note] its message has no hypothesis") and "--hypothesis" in refusal
    assert research_note("observation: a\nhypothesis:   \nchange: c") is None  # an empty part is no part
    assert check_submission("open", new, entries, "") == []


def test_every_rule_has_an_explanation_and_a_test():
    assert sorted(RULES) == ["S101", "S102", "S103", "S104", "S105", "S106", "S107"]
    tested = Path(__file__).read_text()
    for code, rule in RULES.items():
        assert f"def test_{code.lower()}_" in tested and "Fix:" in rule.explanation
        out = CliRunner().invoke(cli, ["check", "--explain", code.lower()])
        assert out.exit_code == 0 and rule.title in out.output


# --- in a sandbox: warnings at check, refusals at submit, the guide -----------------------------

TRAIN = """\
import json, sys, polars as pl
sel = pl.read_parquet(sys.argv[1])
share = sel.filter(pl.col("id").str.ends_with("7")).height / max(sel.height, 1)
json.dump({"benchmarks": {"share7": share}}, open(sys.argv[2] + "/metrics.json", "w"))
"""


@pytest.fixture(scope="module")
def pools(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pools")
    make_demo(root / "demo", rows=1000, seed=0)
    return root


def sandbox(pools: Path, root: Path, monkeypatch, scaffold: str) -> Path:
    monkeypatch.setenv("CBDSL_POOLS", str(pools))
    monkeypatch.setenv("CBDSL_PROGRESS", "0")
    out = CliRunner().invoke(cli, ["init", str(root), "--backend", "command", "--budget", "200",
                                   "--scaffold", scaffold])
    assert out.exit_code == 0, out.output
    (root / "train.py").write_text(TRAIN)
    cmd = f"{sys.executable} {root / 'train.py'} {{export}} {{workdir}}"
    cfg = (root / "cbdsl.toml").read_text().partition("[backend.command]")[0]
    (root / "cbdsl.toml").write_text(cfg + f"[backend.command]\ncommand = {json.dumps(cmd)}\n")
    monkeypatch.chdir(root)
    return root


def run(*args: str) -> tuple[int, str]:
    out = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in out.output
    return out.exit_code, out.output


def submit(root: Path, text: str, *options: str) -> dict:
    (root / "policy.cur").write_text(text)
    code, out = run("compile", "policy.cur")
    assert code == 0, out
    _code, out = run("submit", "--json", *options)
    return json.loads(out[out.index("{"):])


def test_adapt_sandbox_warns_at_check_and_refuses_at_submit(pools, tmp_path, monkeypatch):
    root = sandbox(pools, tmp_path / "sb", monkeypatch, "adapt")
    (root / "policy.cur").write_text(HEAD + "filter words(text) > 3\n")
    code, out = run("check", "policy.cur")
    assert code == 0 and "warning[S101]" in out and "add `cite ID`" in out
    refused = submit(root, HEAD + "filter words(text) > 3\n")
    assert refused["status"] == "refused" and "S101" in refused["error"] and "fix: add `cite ID`" in refused["error"]
    assert submit(root, GOOD)["status"] == "scored"  # the baseline ran first and was not judged
    shallow = GOOD.replace("> 3", "> 4")
    (root / "policy.cur").write_text(shallow)
    code, out = run("check", "--json", "policy.cur")
    [warning] = [d for d in json.loads(out)["files"][0]["diagnostics"] if d["severity"] == "warning"]
    assert (code, warning["code"], warning["severity"]) == (0, "S105", "warning")
    refused = submit(root, shallow)
    assert refused["status"] == "refused" and "[S105 shallow move: no structural change]" in refused["error"]
    assert "iteration 2" in refused["error"] and "cbdsl diff @2 policy.cur" in refused["error"]  # 1 was refused
    assert submit(root, GOOD + "filter min(width, height) >= 20\n")["status"] == "scored"


def test_guide_protocol_has_the_strategy_guide_from_the_catalogue(pools, tmp_path, monkeypatch):
    guide = (sandbox(pools, tmp_path / "g", monkeypatch, "guide") / "PROTOCOL.md").read_text()
    assert "## Strategy guide" in guide
    for family in FAMILIES:
        assert f"### {family}\n\nWhen it helps: " in guide
    assert "`exact_dedup` (dedup)" in guide and "`minhash`" in guide
    adapt = (sandbox(pools, tmp_path / "a", monkeypatch, "adapt") / "PROTOCOL.md").read_text()
    assert "## Strategy guide" not in adapt and "shallow move" in adapt


def test_research_sandbox_records_the_note_and_refuses_knobs(pools, tmp_path, monkeypatch):
    root = sandbox(pools, tmp_path / "r", monkeypatch, "research")
    assert "research note" in (root / "PROTOCOL.md").read_text()
    first = HEAD + "filter words(text) > 3\n"
    refused = submit(root, first, "-m", "short captions out")
    assert refused["status"] == "refused" and "S107" in refused["error"]
    note = ("--observation", "the baseline keeps one-word captions", "--hypothesis", "they are noise",
            "--change", "keep captions of 4+ words")
    scored = submit(root, first, "-m", "short captions out", *note)
    assert scored["status"] == "scored"
    knob = submit(root, first.replace("> 3", "> 5"), *note)
    assert knob["status"] == "refused" and "S105" in knob["error"]
    code, out = run("show", str(scored["iteration"]))
    assert code == 0 and "hypothesis: they are noise" in out
    code, out = run("trajectory", "--json")
    steps = json.loads(out)["iterations"]
    assert steps[-1]["note"] == {"observation": "the baseline keeps one-word captions",
                                 "hypothesis": "they are noise", "change": "keep captions of 4+ words"}
    assert steps[0]["note"] is None  # the baseline
    code, out = run("trajectory")
    assert "short captions out" in out and "      change: keep captions of 4+ words" in out
