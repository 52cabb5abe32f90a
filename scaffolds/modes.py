"""Scaffold modes: rules on the policy AST, warned about by ``cbdsl check`` and enforced by ``cbdsl submit``.

- ``open`` and ``guide``: no rule (``guide`` adds a strategy guide to PROTOCOL.md);
- ``cite``: every iteration after the baseline cites a catalogue method;
- ``adapt`` (the method-citation scaffold): it also instantiates a cited
  method (one of its scorers or strategies shapes the selection, not just a
  `let`), adapts it (the instantiation differs from the method's canonical
  form, and an `adapt` clause says how), is no shallow move (its diff to the
  previous iteration is more than numbers) and does not rest on one family
  again (a family in each of the last three iterations must not be the only
  family of the next).

- ``research`` (Curation-Bench's instruction protocol): every iteration
  after the baseline carries a research note, an observation, a hypothesis
  and the minimal change that tests it (the iteration's message, in three
  labelled parts: :func:`research_message`), and its diff to the previous
  iteration is more than numbers (the protocol bans knob tweaks).

With a declarative policy these are checked on the AST instead of trusted
to a log. Each rule has a stable code (``cbdsl check --explain S105``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cbdsl.dsl import ast
from cbdsl.dsl.codes import Code
from cbdsl.dsl.diagnostics import Diagnostic
from cbdsl.dsl.diff import diff_policies, policy_families
from cbdsl.dsl.parser import parse
from cbdsl.dsl.uses import SELECTION_CLAUSES, ids, inline, lets_of, node_uses
from cbdsl.scaffolds.catalogue import family_of, get_method, method_tools

#: How many iterations in a row one family may be the whole story.
STREAK = 3

RULES: dict[str, Code] = {c.code: Code(c.code, c.title, c.explanation.strip()) for c in (
    Code("S101", "the iteration cites no method", """
Scaffolds `cite` and `adapt`: every iteration after the baseline names the
published method it builds on, with an id of the method catalogue.

    cite clip_score

Fix: add `cite ID` (METHODS.md and `cbdsl methods` list the ids)."""),
    Code("S102", "the cited method is not instantiated", """
Scaffold `adapt`: a cited method must shape the selection: one of its scorers
or strategies is used in a filter, dedup, mix, budget or select clause,
directly or through a `let` that such a clause reads.

    cite el2n
    let loss = el2n(proxy="tiny")      # named, but no clause uses it

Fix: use it, e.g. `filter loss <= quantile(loss, 95%)` or `select top loss`."""),
    Code("S103", "the adaptation is not explained", """
Scaffold `adapt`: the policy says how its use of the cited method differs
from the published one, in an `adapt` clause for that method.

Fix: add `adapt ID "what you changed and why"`."""),
    Code("S104", "the method is used exactly as published", """
Scaffold `adapt`: copying a method's canonical form is not an adaptation.
The clauses that use the method (with `let` names replaced by their
definitions, so renaming changes nothing) must differ from the canonical
form that `cbdsl methods ID` shows.

Fix: change how the method is used (inputs, parameters, thresholds, the
clauses it works with) and say how in `adapt ID "..."`."""),
    Code("S105", "shallow move: no structural change", """
Scaffolds `adapt` and `research`: an iteration whose AST diff to the previous iteration
changes only numbers (thresholds, weights, seeds, the budget split), or
nothing that shapes the selection, is local tuning, not method research.

Fix: change the structure: another scorer, strategy or dedup method, a
clause added or removed. `cbdsl diff @N policy.cur` shows the diff's class."""),
    Code("S106", "one method family again", """
Scaffold `adapt`: when one method family was used in each of the last three
iterations, the next one must not rest on that family alone.

Fix: bring in a method of another family (PROTOCOL.md's strategy guide and
`cbdsl methods` list the families)."""),
    Code("S107", "no research note", """
Scaffold `research`: every iteration after the baseline says what it
observed, what it hypothesizes and the minimal change that tests it, in the
iteration's message:

    cbdsl submit --observation "refcoco is at chance" \
                 --hypothesis "box rows are drowned by refusals" \
                 --change "drop answers that refuse"

Fix: submit with --observation, --hypothesis and --change (or a message
with lines starting `observation:`, `hypothesis:` and `change:`)."""),
)}

#: The parts of a research note, in order (scaffold ``research``).
NOTE_PARTS = ("observation", "hypothesis", "change")
_NOTE_LINE = re.compile(r"^\s*(observation|hypothesis|change)\s*:\s*(.*?)\s*$", re.I | re.M)


def research_message(observation: str, hypothesis: str, change: str, summary: str = "") -> str:
    """The message that carries a research note: an optional summary line, then one labelled line per part."""
    parts = dict(zip(NOTE_PARTS, (observation, hypothesis, change)))
    lines = [summary.strip()] if summary.strip() else []
    return "\n".join(lines + [f"{k}: {' '.join(v.split())}" for k, v in parts.items()])


def research_note_parts(message: str) -> dict[str, str]:
    """The labelled parts a message has (non-empty ones), complete or not."""
    return {k.lower(): v for k, v in _NOTE_LINE.findall(message or "") if v}


def research_note(message: str) -> dict[str, str] | None:
    """A message's research note (each part's text, in :data:`NOTE_PARTS` order), or None when one is missing."""
    found = research_note_parts(message)
    return {k: found[k] for k in NOTE_PARTS} if all(k in found for k in NOTE_PARTS) else None


@dataclass(frozen=True)
class Violation:
    """A broken rule: its code, what is wrong, the fix, and where (None: the policy as a whole)."""

    code: str
    message: str
    fix: str
    span: ast.Span | None = None

    @property
    def text(self) -> str:
        return f"[{self.code} {RULES[self.code].title}] {self.message}; fix: {self.fix}"


def check_policy(scaffold: str, policy: ast.Policy, history: Sequence[tuple[int, ast.Policy]]) -> list[Violation]:
    """The rules ``policy`` breaks as the next iteration after ``history``.

    ``history`` is the run's scored iterations in order, ``(iteration, policy)``,
    the baseline first (iteration 0, or later when its first run failed).
    """
    if scaffold in ("open", "guide"):
        return []
    if scaffold == "research":
        return _shallow(policy, history)
    cites = [m for c in policy.of_kind(ast.Cite) for m in c.methods]
    if not cites:
        first = policy.clauses[0].span if policy.clauses else None
        return [Violation("S101", "it cites no method", "add `cite ID` with a method of METHODS.md", first)]
    if scaffold == "cite":
        return []
    return _adaptation(policy, cites) + _shallow(policy, history) + _streak(policy, history)


def _adaptation(policy: ast.Policy, cites: list[ast.Ident]) -> list[Violation]:
    lets = lets_of(policy)
    used = set().union(*(ids(node_uses(c, lets)) for c in policy.clauses if isinstance(c, SELECTION_CLAUSES)))
    methods = [(ident, get_method(ident.name)) for ident in cites]
    instantiated = [(i, m) for i, m in methods if m is not None and method_tools(m) & used]
    if not instantiated:
        tools = sorted(set().union(*(method_tools(m) for _i, m in methods if m is not None)))
        return [Violation("S102", f"it cites {', '.join(i.name for i, _m in methods)} but no filter, dedup, mix, "
                          "budget or select clause uses their scorers or strategies",
                          f"use one of {', '.join(tools) or 'their scorers'} in such a clause (a `let` alone "
                          "does not count)", cites[0].span)]
    reasons = {c.method.name: c for c in policy.of_kind(ast.Adapt) if c.reason.value.strip()}
    explained = [(i, m) for i, m in instantiated if m.id in reasons]
    if not explained:
        names = ", ".join(i.name for i, _m in instantiated)
        return [Violation("S103", f"it instantiates {names} but says nowhere how it adapts it",
                          f"add `adapt {instantiated[0][0].name} \"how your use differs from the published method\"`",
                          instantiated[0][0].span)]
    if all(_as_published(policy, m) for _i, m in explained):
        m = explained[0][1]
        return [Violation("S104", f"it uses {m.id} exactly in its canonical form",
                          f"change how {m.id} is used (inputs, parameters, thresholds, the clauses around it); "
                          f"`cbdsl methods {m.id}` shows the canonical form", reasons[m.id].span)]
    return []


def _as_published(policy: ast.Policy, method) -> bool:
    """Whether the clauses that use ``method`` are those of its canonical form (lets inlined)."""
    tools = method_tools(method)
    return _instance(policy, tools) == _instance(parse(method.canonical, f"<canonical {method.id}>"), tools)


def _instance(policy: ast.Policy, tools: frozenset[str]) -> frozenset:
    lets = lets_of(policy)
    return frozenset(inline(c, lets).key() for c in policy.clauses
                     if isinstance(c, SELECTION_CLAUSES) and ids(node_uses(c, lets)) & tools)


def _shallow(policy: ast.Policy, history: Sequence[tuple[int, ast.Policy]]) -> list[Violation]:
    if not history:
        return []
    n, previous = history[-1]
    prior = frozenset().union(*(policy_families(p, family_of) for _n, p in history))
    change = diff_policies(previous, policy, prior_families=prior, family_of=family_of).change
    if change not in ("none", "metadata", "literal"):
        return []
    what = {"none": "changes nothing", "metadata": "changes nothing that shapes the selection",
            "literal": "changes only numbers"}[change]
    return [Violation("S105", f"compared with iteration {n} it {what} (a shallow move)",
                      "change the structure: another scorer, strategy or dedup method, or a clause added or "
                      f"removed (`cbdsl diff @{n} policy.cur` shows the diff)")]


def _streak(policy: ast.Policy, history: Sequence[tuple[int, ast.Policy]]) -> list[Violation]:
    recent = list(history[1:])[-STREAK:]  # the baseline (first) is no family's iteration
    if len(recent) < STREAK:
        return []
    common = frozenset.intersection(*(policy_families(p, family_of) for _n, p in recent))
    families = policy_families(policy, family_of)
    if len(families) != 1 or not families <= common:
        return []
    family = next(iter(families))
    first, last = recent[0][0], recent[-1][0]
    return [Violation("S106", f"its only method family, {family}, was used in each of iterations {first}-{last}",
                      f"bring in a method of another family besides {family} (see PROTOCOL.md's strategy guide)")]


def history_of(entries) -> list[tuple[int, ast.Policy]]:
    """The scored iterations of ledger entries, in order, as ``(iteration, policy)`` (what the rules compare with).

    Refused and failed submissions are no iterations: they neither count for a
    streak nor serve as the previous iteration.
    """
    return [(e.n, parse(e.policy_text, f"<iteration {e.n}>"))
            for e in sorted(entries, key=lambda e: e.n) if e.status == "scored"]


def check_submission(scaffold: str, policy: ast.Policy, entries, message: str = "") -> list[str]:
    """Why the scaffold refuses ``policy``, submitted with ``message`` after the ledger ``entries``: one line per
    rule with its fix (empty: accepted)."""
    violations = check_policy(scaffold, policy, history_of(entries))
    if scaffold == "research" and research_note(message) is None:
        missing = [k for k in NOTE_PARTS if k not in research_note_parts(message)]
        violations.append(Violation("S107", f"its message has no {', no '.join(missing)}",
                                    "submit with --observation, --hypothesis and --change"))
    return [v.text for v in violations]



def scaffold_warnings(policy: ast.Policy, scaffold: str, history) -> list[Diagnostic]:
    """The scaffold rules `cbdsl submit` would refuse on, as warnings, so no submission is spent to learn them.

    ``history`` is the run's scored iterations, ``(iteration, policy)`` in order.
    """
    return [Diagnostic(v.code, f"scaffold `{scaffold}`: {v.message}", v.span, "warning",
                       (v.fix, f"`cbdsl submit` refuses this: {RULES[v.code].title} "
                               f"(`cbdsl check --explain {v.code}`)"))
            for v in check_policy(scaffold, policy, history)]
