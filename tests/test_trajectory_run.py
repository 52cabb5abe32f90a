"""Done-when of issue 6: a 12-iteration run in a demo sandbox, through the real loop.

Every iteration goes through `cbdsl compile` and `cbdsl submit` with the
`command` backend running a real train/eval stand-in: a script that reads the
exported selection and scores it by the demo pool's ground-truth defect
labels (its `demo-defects` asset), so scores are real functions of the
selection. The change class of every iteration is labelled by hand below and
asserted, with the families each introduces, through `cbdsl trajectory` and
`cbdsl diff @N @M`; the summary shares are asserted against the same labels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.pipelines.data.demo import make_demo
from cbdsl.pipelines.data.pool import Pool

SCORE = """\
import json, sys, polars as pl
sel = pl.read_parquet(sys.argv[1]).select("id")
labels = sel.join(pl.read_parquet(sys.argv[3]), on="id", how="left")
def ok(*cols):
    return 1.0 - labels.select(pl.any_horizontal([pl.col(c) for c in cols]).mean()).item()
json.dump({"benchmarks": {
    "captions": ok("mismatched", "spam", "foreign_language"),
    "images": ok("blank", "tiny", "rendered_text"),
    "unique": ok("exact_duplicate", "near_duplicate"),
}}, open(sys.argv[2] + "/metrics.json", "w"))
"""

HEAD = 'policy "run"\npool "demo"\n'

#: (policy body, hand-labelled change class, families it introduces)
RUN: list[tuple[str, str, tuple[str, ...]]] = [
    ("filter words(text) > 2\nbudget 200\nselect random(seed=0)\n",
     "new-family", ("heuristic filter",)),
    ("filter words(text) > 3\nbudget 200\nselect random(seed=0)\n", "literal", ()),
    ("filter words(text) > 3\nfilter min(width, height) >= 16\nbudget 200\nselect random(seed=0)\n",
     "structural", ()),
    ("filter words(text) > 3\nfilter min(width, height) >= 20\nbudget 200\nselect random(seed=0)\n",
     "literal", ()),
    ("filter words(text) > 3\nfilter min(width, height) >= 20\ndedup exact(dup_key(text))\nbudget 200\n"
     "select random(seed=0)\n", "new-family", ("dedup",)),
    # clause order and layout carry no meaning: only the seed changed
    ("dedup   exact(dup_key(text))\nfilter min(width, height) >= 20\nfilter words(text) > 3\n\nbudget 200\n"
     "select random(seed=1)\n", "literal", ()),
    ("filter words(text) > 3\nfilter min(width, height) >= 20\ndedup exact(dup_key(text))\nbudget 200\n"
     "select weighted(len(text), seed=1)\n", "new-family", ("importance resampling",)),
    ("filter words(text) > 3\nfilter min(width, height) >= 20\ndedup exact(dup_key(text))\n"
     "mix by source { coco: 0.5, *: 0.5 }\nbudget 200\nselect weighted(len(text), seed=1)\n", "structural", ()),
    ("filter words(text) > 3\nfilter min(width, height) >= 20\ndedup exact(dup_key(text))\n"
     "mix by source { coco: 0.6, *: 0.4 }\nbudget 200\nselect weighted(len(text), seed=1)\n", "literal", ()),
    ("filter words(text) > 3\nfilter min(width, height) >= 20\nfilter token_count(text) < 40\n"
     "dedup exact(dup_key(text))\nmix by source { coco: 0.6, *: 0.4 }\nbudget 200\n"
     "select weighted(len(text), seed=1)\n", "new-family", ("text statistics",)),
    # a citation and an unused let shape nothing: the same selection, no structural change
    ("cite datacomp_basic\nlet spare = words(text)\nfilter words(text) > 3\nfilter min(width, height) >= 20\n"
     "filter token_count(text) < 40\ndedup exact(dup_key(text))\nmix by source { coco: 0.6, *: 0.4 }\n"
     "budget 200\nselect weighted(len(text), seed=1)\n", "metadata", ()),
    ("filter words(text) > 3\nfilter min(width, height) >= 20\nfilter token_count(text) < 40\n"
     "dedup exact(dup_key(text))\nbudget 200\nselect weighted(len(text), seed=1)\n", "structural", ()),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A sandbox after the whole run (baseline + 12 submissions)."""
    pools = tmp_path_factory.mktemp("pools")
    make_demo(pools / "demo", rows=1000, seed=0)
    labels = Pool.open(pools / "demo").asset_path("demo-defects")
    root = tmp_path_factory.mktemp("run") / "sb"
    mp = pytest.MonkeyPatch()
    mp.setenv("CBDSL_POOLS", str(pools))
    mp.setenv("CBDSL_PROGRESS", "0")
    ok("init", str(root), "--backend", "command", "--budget", "200", "--iterations", str(len(RUN)))
    (root / "score.py").write_text(SCORE)
    cmd = f"{sys.executable} {root / 'score.py'} {{export}} {{workdir}} {labels}"
    cfg = (root / "cbdsl.toml").read_text().partition("[backend.command]")[0]
    (root / "cbdsl.toml").write_text(cfg + f"[backend.command]\ncommand = {json.dumps(cmd)}\nformat = \"parquet\"\n"
                                     "timeout = 60\nmetrics = \"metrics.json\"\n")
    mp.chdir(root)
    for k, (body, _change, _new) in enumerate(RUN, start=1):
        (root / "policy.cur").write_text(HEAD + body)
        ok("compile", "policy.cur")
        out = ok("submit", "--json", "-m", f"step {k}")
        assert json.loads(out[out.index("{"):])["status"] == "scored", out
    yield root
    mp.undo()


def ok(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_every_iteration_has_its_hand_labelled_class_and_families(run_dir):
    data = json.loads(ok("trajectory", "--json", str(run_dir)))
    steps = data["iterations"]
    assert [s["iteration"] for s in steps] == list(range(len(RUN) + 1))
    assert steps[0]["change"] == "baseline" and steps[0]["families"] == []  # random is the reference, no family
    for step, (_body, change, new) in zip(steps[1:], RUN):
        assert (step["change"], tuple(step["introduced"])) == (change, new), step
    assert steps[11]["cited"] == ["datacomp_basic"]
    assert steps[12]["families"] == ["dedup", "heuristic filter", "importance resampling", "text statistics"]


def test_summary_shares_and_best(run_dir):
    data = json.loads(ok("trajectory", "--json", str(run_dir)))
    steps, summary = data["iterations"], data["summary"]
    n = len(RUN)
    assert summary["iterations"] == n
    assert summary["new_family_share"] == pytest.approx(4 / n)
    assert summary["literal_share"] == pytest.approx(4 / n)
    assert summary["classes"] == {"literal": 4, "metadata": 1, "new-family": 4, "structural": 3}
    # delta, best and improvement, recomputed from the recorded scores
    best = steps[0]["score"]
    improved = 0
    for s in steps[1:]:
        assert s["delta"] == pytest.approx(s["score"] - best)
        improved += s["score"] > best
        best = max(best, s["score"])
        assert s["best"] == pytest.approx(best)
    assert summary["improved_share"] == pytest.approx(improved / n)
    top = max(steps, key=lambda s: (s["score"], -s["iteration"]))
    assert (summary["best_iteration"], summary["best_score"]) == (top["iteration"], top["score"])
    # the metadata-only iteration selects the same rows as the one before, so it scores the same
    assert steps[11]["score"] == pytest.approx(steps[10]["score"])
    # pinned from the first run (pool, seeds and scores are deterministic): which steps set a new best
    assert [s["iteration"] for s in steps if s["improved"]] == [3, 5, 6, 8, 9]
    assert summary["best_iteration"] == 9


def test_text_table_diff_of_iterations_and_plot(run_dir, tmp_path):
    text = ok("trajectory", str(run_dir), "--plot", str(tmp_path / "t.png"))
    assert "share introducing a new family" in text and "33%" in text
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = json.loads(ok("diff", "--json", "@6", "@7"))
    assert out["class"] == "new-family" and out["families"]["new"] == ["importance resampling"]
    [edit] = [e for e in out["edits"] if e["op"] == "update"]
    assert (edit["old"]["text"], edit["new"]["text"], edit["clause"]) == ("random", "weighted", "select")
    # iteration 12 uses only families of earlier iterations: from @11 it is structural
    assert json.loads(ok("diff", "--json", "@11", "@12"))["class"] == "structural"
    view = ok("diff", "@8", "@9")
    assert "@8 -> @9: literal" in view and "0.5 -> 0.6" in view


def test_compare_two_runs_side_by_side(run_dir, tmp_path):
    text = ok("trajectory", "--compare", str(run_dir), str(run_dir), "--plot", str(tmp_path / "c.png"))
    assert text.count("share literal-only") == 1 and text.count("33%") >= 2
    assert (tmp_path / "c.png").is_file()
    data = json.loads(ok("trajectory", "--compare", "--json", str(run_dir), str(run_dir)))
    assert len(data["runs"]) == 2
