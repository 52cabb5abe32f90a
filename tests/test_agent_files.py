"""AGENTS.md, CLAUDE.md and the Agent Skills a sandbox gives an agent (issue 16, part 2)."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from cbdsl.cli import cli
from cbdsl.dsl.parser import parse
from cbdsl.pipelines.data.demo import make_demo
from cbdsl.pipelines.loop.agent_files import DESCRIPTION_LIMIT, skill_md, skill_name
from cbdsl.scaffolds.catalogue import Method, catalogue

NAME_RULE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")  # agentskills.io: lowercase, digits, single inner hyphens


def front_matter(text: str) -> tuple[dict[str, str], str]:
    """The front matter's top-level scalars (name, description: JSON-quoted or plain) and the body."""
    assert text.startswith("---\n"), "a SKILL.md starts with its front matter"
    head, _, body = text[4:].partition("\n---\n")
    fields = {}
    for line in head.splitlines():
        if line and not line.startswith(" ") and ":" in line:
            key, _, value = line.partition(":")
            value = value.strip()
            fields[key] = json.loads(value) if value.startswith('"') else value
    return fields, body


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("agents")
    make_demo(root / "pools" / "demo", rows=300, seed=0)
    patch = pytest.MonkeyPatch()
    patch.setenv("CBDSL_POOLS", str(root / "pools"))
    out = CliRunner().invoke(cli, ["init", str(root / "sb"), "--budget", "100", "--scaffold", "adapt"])
    patch.undo()
    assert out.exit_code == 0, out.output
    return root / "sb"


def test_agents_md_says_the_task_and_points_to_the_cards(sandbox):
    text = (sandbox / "AGENTS.md").read_text()
    assert "exactly 100 rows" in text and "`demo`" in text and "scaffold `adapt`" in text
    for card in ("PROTOCOL.md", "POOL.md", "METHODS.md", "skills/<method>/SKILL.md", "cbdsl submit"):
        assert card in text, card
    claude = (sandbox / "CLAUDE.md").read_text()
    assert "@AGENTS.md" in claude.splitlines()


def test_one_skill_per_catalogue_method_in_the_agent_skills_layout(sandbox):
    methods = catalogue()
    folders = sorted(p.name for p in (sandbox / "skills").iterdir())
    assert folders == sorted(skill_name(m) for m in methods)
    for method in methods.values():
        fields, body = front_matter((sandbox / "skills" / skill_name(method.id) / "SKILL.md").read_text())
        assert fields["name"] == skill_name(method.id) and NAME_RULE.match(fields["name"]) and len(fields["name"]) <= 64
        assert 0 < len(fields["description"]) <= DESCRIPTION_LIMIT and "Use when" in fields["description"]
        assert f"cite {method.id}" in body and method.family in body
        block = body.split("```\n", 2)[1]  # the canonical policy, as the catalogue has it
        assert block.strip() == method.canonical.strip()
        parse(block, f"{method.id}.skill")
        for key in method.defaults:
            assert f"`{key}`" in body


def test_skill_names_follow_the_rule_whatever_the_id():
    assert skill_name("datacomp_clip_score") == "datacomp-clip-score"
    assert skill_name("a__b--c") == "a-b-c" and skill_name("X1") == "x1"
    with pytest.raises(ValueError):
        skill_name("___")
    long = Method(id="m" * 80, name="n", authors=(), venue="", year=None, family="baseline", bucket="select",
                  scorers=(), canonical="cite x", url="", departures=("d",))
    fields, body = front_matter(skill_md(long))
    assert len(fields["name"]) == 64 and "no single paper" in fields["description"] and "- d" in body


def test_agents_md_shows_the_research_note_under_the_research_scaffold(tmp_path, monkeypatch):
    make_demo(tmp_path / "pools" / "demo", rows=300, seed=0)
    monkeypatch.setenv("CBDSL_POOLS", str(tmp_path / "pools"))
    out = CliRunner().invoke(cli, ["init", str(tmp_path / "sb"), "--budget", "100", "--scaffold", "research"])
    assert out.exit_code == 0, out.output
    text = (tmp_path / "sb" / "AGENTS.md").read_text()
    assert "--observation" in text and "--hypothesis" in text and "--change" in text
