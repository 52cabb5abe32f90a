"""The files a coding agent finds by convention in a sandbox: ``AGENTS.md``, ``CLAUDE.md`` and one Agent Skill per
catalogue method (``skills/<name>/SKILL.md``).

Why it exists: Claude Code, Codex, OpenHands and their kin look for
``AGENTS.md`` (Claude Code for ``CLAUDE.md``) before they read anything else,
and load a skill's body only when its name and description match the task
(the Agent Skills format, agentskills.io). PROTOCOL.md, POOL.md and
METHODS.md stay what they are; these files point to them and give each
method a card an agent can load on its own: what it is, its canonical
policy, its parameters, when it helps and how cbdsl departs from the
reference code. Everything is generated from the catalogue, never
hand-edited.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cbdsl.scaffolds.catalogue import FAMILY_GUIDE, Method, catalogue

SKILLS_DIR = "skills"
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")  # the Agent Skills rule: lowercase, digits, single hyphens
DESCRIPTION_LIMIT = 1024  # characters, the Agent Skills limit


def skill_name(method_id: str) -> str:
    """A method id as an Agent Skills name: ``datacomp_clip_score`` -> ``datacomp-clip-score``."""
    name = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", method_id.lower())).strip("-")[:64].rstrip("-")
    if not _NAME.match(name):
        raise ValueError(f"method id {method_id!r} gives no valid skill name")
    return name


def skill_description(m: Method) -> str:
    """What the skill does and when to use it (front matter: one line, at most 1,024 characters)."""
    scorers = f" with {', '.join(f'`{s}`' for s in m.scorers)}" if m.scorers else ""
    source = " ".join(str(x) for x in (m.venue, m.year) if x) or "no single paper"
    text = (f"{m.name} ({source}) as a cbdsl curation policy: cite, instantiate and adapt it, a {m.bucket} "
            f"step{scorers} (family: {m.family}). Use when {FAMILY_GUIDE.get(m.family, m.family)}.")
    text = " ".join(text.split())
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 3].rstrip() + "..."


def _yaml_string(text: str) -> str:
    """A double-quoted YAML scalar (JSON's escaping is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def skill_md(m: Method) -> str:
    """One method's SKILL.md: front matter (name, description, metadata), then the card."""
    out = ["---", f"name: {skill_name(m.id)}", f"description: {_yaml_string(skill_description(m))}", "metadata:",
           f"  cbdsl-method: {_yaml_string(m.id)}", f"  family: {_yaml_string(m.family)}",
           f"  bucket: {_yaml_string(m.bucket)}", "---", "",
           f"# `{m.id}`: {m.name}", "", f"{m.citation} {m.url}".strip(), "",
           f"Family: {m.family}. Bucket: {m.bucket} (the clause it belongs in). "
           f"Scorers and strategies: {', '.join(f'`{s}`' for s in m.scorers) or 'none (rules only)'}.", "",
           "## When it helps", "", f"{_sentence(FAMILY_GUIDE.get(m.family, m.family))}", "",
           "## The canonical policy", "",
           "The method as published, in cbdsl (the clauses to add to `policy.cur`, with `pool` and `budget`):", "",
           "```", m.canonical.strip(), "```", ""]
    if m.defaults:
        out += ["## Parameters and their defaults", "", "| parameter | default |", "|---|---|"]
        out += [f"| `{k}` | `{v!r}` |" for k, v in m.defaults.items()] + [""]
    if m.departures:
        out += ["## How cbdsl departs from the reference code", ""] + [f"- {d}" for d in m.departures] + [""]
    out += ["## Using it", "",
            f"- Cite it: `cite {m.id}`. Instantiate it: use its scorer or strategy in a clause that changes the "
            "selection.",
            f"- Adapt it: change what the canonical form fixes and say how, `adapt {m.id} \"what you changed\"`.",
            f"- `cbdsl methods {m.id}` prints this entry; `cbdsl diff @N policy.cur` says whether a change is a new "
            "family, structural or literal-only."]
    if m.example:
        out.append(f"- The example `{m.example}` of cbdsl's repository runs it.")
    return "\n".join(out) + "\n"


def agents_md(cfg) -> str:
    """AGENTS.md: what the sandbox is, the loop, the files and the commands, for any agent."""
    return "\n".join([
        "# AGENTS.md", "",
        f"This folder is a cbdsl sandbox: you curate training data for the `{cfg.backend}` backend by writing a "
        f"policy in `policy.cur` that selects exactly {cfg.budget:,} rows of the pool `{cfg.pool}`. Each "
        f"submission trains and evaluates a fixed model on your selection and returns its scores; you have "
        f"{cfg.iterations} iterations (scaffold `{cfg.scaffold}`).", "",
        "## Read first", "",
        "- `PROTOCOL.md`: the task, the rules of this scaffold, the commands and what the feedback means.",
        "- `POOL.md`: the pool's columns, sizes and value counts, and the assets a policy may name.",
        "- `METHODS.md`: the published methods you can cite, each with its canonical policy.",
        f"- `{SKILLS_DIR}/<method>/SKILL.md`: one Agent Skill per method (the same catalogue, one card each: "
        "when it helps, its parameters, how cbdsl departs from the reference code).", "",
        "## The loop", "",
        "```",
        "cbdsl check policy.cur && cbdsl explain --run policy.cur   # valid? what does each clause keep?",
        "cbdsl compile policy.cur                                  # plan it; submit runs what compile saw",
        ("cbdsl submit --observation \"...\" --hypothesis \"...\" --change \"...\" --json   # the research note; "
         "the scores" if cfg.scaffold == "research" else
         "cbdsl submit -m \"what you changed and why\" --json          # train + evaluate; the scores"),
        "cbdsl log && cbdsl trajectory                             # your run so far",
        "```", "",
        "`check`, `explain`, `compile`, `submit`, `log`, `show`, `diff`, `trajectory` and `methods` take `--json` "
        "for machine-readable output; `cbdsl mcp` serves them as MCP tools. Errors name the place, the reason "
        "and a fix.", "",
        "## Do not", "",
        "- edit `cbdsl.toml` or anything under `.cbdsl/` (the task and its ledger; a changed task is refused);",
        "- read evaluation data: policies reach only the pool and its scorers, and the audit refuses selections "
        "that overlap the evaluation suite.", "",
    ])


CLAUDE_MD = """\
# CLAUDE.md

This sandbox's instructions are in AGENTS.md (read it first), the method cards in skills/.

@AGENTS.md
"""


def write_agent_files(root: Path, cfg) -> list[Path]:
    """Write AGENTS.md, CLAUDE.md and ``skills/<name>/SKILL.md`` for every catalogue method; returns the paths."""
    written = [root / "AGENTS.md", root / "CLAUDE.md"]
    written[0].write_text(agents_md(cfg))
    written[1].write_text(CLAUDE_MD)
    for m in catalogue().values():
        folder = root / SKILLS_DIR / skill_name(m.id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "SKILL.md").write_text(skill_md(m))
        written.append(folder / "SKILL.md")
    return written
