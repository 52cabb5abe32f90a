"""The cards a sandbox gives an agent: PROTOCOL.md, POOL.md and METHODS.md (generated, never hand-edited).

POOL.md shows what a curator may know about the pool (schema, sizes,
per-source counts, value distributions) and nothing from its lineage, which
for the demo pool holds the ground-truth defect rates.
"""

from __future__ import annotations

import json

from cbdsl.compiler.types import BENCHMARK_KINDS
from cbdsl.pipelines.loop.backends import make_backend
from cbdsl.pipelines.loop.backends.base import BackendError
from cbdsl.scaffolds.catalogue import FAMILIES, FAMILY_GUIDE, catalogue, family_tools

SCAFFOLD_RULES = {
    "open": "No rule: any valid policy may be submitted.",
    "guide": "No rule. The strategy guide below lists the method families and when each helps.",
    "cite": "Every iteration after the baseline cites at least one method of METHODS.md (`cite ID`).",
    "adapt": (
        "Every iteration after the baseline must (1) cite a method of METHODS.md, (2) instantiate it: use "
        "a scorer or strategy of that method in a clause that affects the selection, (3) adapt it: differ "
        "from the method's canonical form and say how in an `adapt ID \"...\"` clause. An iteration that only "
        "changes numbers relative to the previous one is refused as a shallow move, and a method family used "
        "in the last three iterations in a row must not be the only family of the next."
    ),
    "research": (
        "Every iteration after the baseline carries a research note: what you observed (in the scores, the "
        "funnel, the data), the hypothesis it suggests, and the minimal change to the policy that tests it "
        "(`cbdsl submit --observation \"...\" --hypothesis \"...\" --change \"...\"`). A change that only tunes "
        "numbers (thresholds, seeds, weights) relative to the previous iteration is refused: test a hypothesis, "
        "not a knob."
    ),
}


#: What each embedded backend trains and how it scores, for PROTOCOL.md.
BACKEND_TASKS = {
    "mini": "a small CLIP is trained from scratch on your image-caption pairs and evaluated zero-shot on held-out "
            "images: attribute classification and image-text retrieval (seven scores)",
    "mini-vlm": "a small vision-language model (LLaVA-1.5's architecture, small) is instruction-tuned on your "
                "conversations (the loss on the assistant's turns, the vision tower frozen) from a fixed base "
                "and answers a held-out suite of eight benchmarks shaped like LLaVA-1.5's: vqa, gqa, textvqa, "
                "pope, mme, mmbench, llava_bench (descriptions) and refcoco (boxes)",
}


def pool_md(pool) -> str:
    card = pool.card
    out = [f"# Pool `{card.name}`", "",
           f"{card.rows:,} rows, id column `{card.id_column}`, content hash `{card.content_hash[:16]}`.", ""]
    out += ["## Columns", "", "| column | type | statistics |", "|---|---|---|"]
    for col, typ in card.schema.items():
        stats = {k: v for k, v in card.stats.get(col, {}).items() if k != "value_counts"}
        out.append(f"| `{col}` | {typ} | {json.dumps(stats, default=str)[:200]} |")
    images = [col for col, typ in card.schema.items() if typ == "image"]
    if images:
        out += ["", "## Images", "", f"{', '.join(f'`{c}`' for c in images)} names an image file of the pool's image "
                "folder (LLaVA's layout; null: no image): scorers that take an image read its bytes."]
    elif card.schema.get("image") == "str":
        out += ["", "## Images", "", "`image` holds image paths as plain strings: the pool was imported without "
                "an image folder, so no scorer (and no backend) can read the images; only the paths and the "
                "text columns are there to curate on."]
    counts = [(c, s["value_counts"]) for c, s in card.stats.items() if isinstance(s, dict) and s.get("value_counts")]
    for col, vc in counts:
        out += ["", f"## Rows per `{col}`", "", f"| {col} | rows |", "|---|---|"]
        out += [f"| {k} | {v:,} |" for k, v in sorted(vc.items(), key=lambda kv: -kv[1])]
    if card.assets:
        out += ["", "## Assets a policy may name", "", "| name | kind | description |", "|---|---|---|"]
        for name, info in sorted(card.assets.items()):
            if info.kind in BENCHMARK_KINDS:
                continue  # evaluation sets and ground truth are not for policies
            out.append(f"| `asset(\"{name}\")` | {info.kind} | {info.description} |")
    return "\n".join(out) + "\n"


def methods_md() -> str:
    out = ["# Methods you can cite", "",
           "Each method below can be named in a policy: `cite ID`, its scorers in `let`/`filter`/`select`, and "
           "`adapt ID \"how\"` when you change it. The canonical form is the method as published.", ""]
    for m in catalogue().values():
        out += [f"## `{m.id}`: {m.name}", "", f"{m.citation}  ", f"family: {m.family}; bucket: {m.bucket}; "
                f"scorers: {', '.join(m.scorers) or '-'}; {m.url}", "", "```", m.canonical.strip(), "```", ""]
        if m.departures:
            out += ["Departures from the reference code:", ""] + [f"- {d}" for d in m.departures] + [""]
    return "\n".join(out)


def strategy_guide() -> str:
    """The `guide` scaffold's strategy guide: each catalogue family, when it helps, its methods and scorers.

    Written from the catalogue (families, buckets, the scorers that belong to a family alone), so a method
    added to the catalogue shows up here without an edit.
    """
    methods: dict[str, list] = {}
    for m in catalogue().values():
        methods.setdefault(m.family, []).append(m)
    tools = family_tools()
    lines = ["## Strategy guide", "",
             "The method catalogue falls into families. A new family is a new direction; a changed number is "
             "local tuning (`cbdsl diff` classes every change, `cbdsl trajectory` shows your run so far). When "
             "tuning stops paying off, try a family you have not used.", ""]
    for family in FAMILIES:
        if family not in methods:
            continue
        ids = ", ".join(f"`{m.id}` ({m.bucket})" for m in sorted(methods[family], key=lambda m: m.id))
        lines += [f"### {family}", "", f"When it helps: {FAMILY_GUIDE[family]}.", "", f"Methods: {ids}.  "]
        if tools.get(family):
            lines.append(f"Its scorers and strategies: {', '.join(f'`{t}`' for t in tools[family])}.")
        lines.append("")
    return "\n".join(lines)


def has_test_part(cfg) -> bool:
    """Whether the sandbox's backend scores a held-out test part (False when its settings do not make one)."""
    try:
        return bool(make_backend(cfg.backend, cfg.backend_settings).has_test_part)
    except BackendError:
        return False


def protocol_md(cfg, pool) -> str:
    out = [
        "# Protocol", "",
        f"Select exactly **{cfg.budget:,} rows** of the pool `{cfg.pool}` ({pool.card.rows:,} rows) by writing a "
        "curation policy in `policy.cur`. A fixed model is trained on your selection and evaluated on a held-out "
        f"suite (backend `{cfg.backend}`); you get its scores back. You have **{cfg.iterations} iterations** after "
        "the baseline (iteration 0, a random selection of the budget).", "",
        *([f"Backend `{cfg.backend}`: {BACKEND_TASKS[cfg.backend]}.", ""] if cfg.backend in BACKEND_TASKS else []),
        "## Commands", "",
        "```",
        "cbdsl check policy.cur          # parse + type-check, no data touched",
        "cbdsl explain --run policy.cur  # the row funnel: what each clause keeps",
        "cbdsl compile policy.cur        # check and plan; remembered for submit",
        "cbdsl submit -m \"why\"           # run, audit, train + evaluate, record, feedback",
        "cbdsl log | cbdsl show N | cbdsl leaderboard",
        "cbdsl diff @N policy.cur        # what changed since iteration N: literal, structural or new-family",
        "cbdsl trajectory                # your run: each iteration's change class, families, score",
        "cbdsl methods [ID]              # the method catalogue (also METHODS.md)",
        "```", "",
        "## Rules", "",
        f"Scaffold `{cfg.scaffold}`: {SCAFFOLD_RULES[cfg.scaffold]}", "",
        f"- The selection must be exactly the budget: write `budget {cfg.budget}` in the policy.",
        "- A policy reads only the pool and the scorers; the evaluation sets are out of reach, and an audit "
        "refuses selections that overlap them (exact text or image matches, 8-gram overlap).",
        "- Refused and failed submissions are recorded but do not use up an iteration.", "",
        "## Feedback", "",
        "Each submission reports the score of every benchmark of the suite, their aggregate (the mean), the "
        "change against your best so far and against the baseline, your rank among your submissions, and the "
        "iterations left. Higher is better. With the embedded backends' default recipe it also gives the "
        "aggregate's seed std (how far the same selection's score moves with the training seed, as measured "
        "by cbdsl's validity benchmark): a change smaller than about two of them may be noise. The feedback "
        "gives per-benchmark scores only, never per-example predictions.", "",
        *(["The scores you see are the suite's dev part. The suite also has a held-out test part that the "
           "researcher scores every submission on and you never see: a policy that fits the feedback's own "
           "questions gains nothing there.", ""] if has_test_part(cfg) else []),
    ]
    if cfg.scaffold == "guide":
        out.append(strategy_guide())
    return "\n".join(out)
