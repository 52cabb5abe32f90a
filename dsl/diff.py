"""The AST diff: what changed between two policies, edit by edit, and what kind of change it was.

Researchers label an agent's iterations as local tuning or a new direction;
a text diff cannot tell a threshold from a new method, and shows reordered
or reformatted clauses as changes. This diff works on the AST:

1. Clauses are matched by identity first: the clause kind for the clauses a
   policy has once (`policy`, `pool`, `budget`, `select`), the `let` name,
   the dedup method, the mix column, each cited or adapted method id.
   Filters have no identity: equal ones pair up, the rest pair by
   similarity. Clause order and layout never show, since clauses pair by
   identity and spans take no part in equality.
2. Inside a pair of clauses, Change Distiller as sqlglot's diff does it:
   leaves pair by text similarity, inner nodes by the share of matched
   leaves under them; then children in the same slot of a matched pair pair
   up (a stable position is an identity, which turns `0.3 -> 0.5` into one
   update instead of a removal and an insertion).
3. The matching gives the edits: ``insert`` and ``remove`` (the topmost
   unmatched nodes), ``update`` (a matched leaf whose value, or a matched
   node whose operator, changed) and ``move`` (a matched node under another
   parent, or out of its order among its siblings).

Each edit and the whole diff get a class (:data:`CLASSES`, weakest first):
``metadata`` (the name, `cite`, `adapt` or a `let` no selection clause
reads: no effect on the rows), ``literal`` (a number or percentage changed:
a threshold, a weight, a seed, a budget), ``structural`` (anything else),
``new-family`` (the edit brings in a scorer, strategy or dedup method of a
catalogue family that no earlier iteration used). ``none`` means no change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain

from cbdsl.dsl import ast
from cbdsl.dsl.format import format_clause, format_expr, format_string
from cbdsl.dsl.uses import Use, live_lets, node_uses, policy_uses, lets_of

CLASSES: tuple[str, ...] = ("none", "metadata", "literal", "structural", "new-family")

#: Change Distiller's thresholds: leaf text similarity, and the share of common leaves of
#: inner nodes (lower for small subtrees, where one leaf is a large share).
LEAF_SIMILARITY = 0.6
INNER_SIMILARITY, SMALL_INNER_SIMILARITY, SMALL_SUBTREE = 0.6, 0.4, 4
#: Two filters with no identity pair up when this share of their leaves is alike.
CLAUSE_SIMILARITY = 0.5

_METADATA_KINDS = ("policy", "cite", "adapt")
_SINGLE_KINDS = ("policy", "pool", "budget", "select")

FamilyOf = Callable[[str, str], "str | None"]


@dataclass(frozen=True)
class Side:
    """One side of an edit: the node's canonical text and where it is in its source."""

    text: str
    span: ast.Span

    def to_json(self) -> dict:
        return {"text": self.text, "start": self.span.start, "end": self.span.end, "source": self.span.source}


@dataclass(frozen=True)
class Edit:
    op: str  # insert | remove | update | move
    node: str  # the node's kind: number, call, filter, ...
    clause: str  # the clause it is in, by identity: "let clip", "filter", "cite el2n"
    old: Side | None
    new: Side | None
    change: str = "structural"
    families: tuple[str, ...] = ()  # the new families it brings in

    def to_json(self) -> dict:
        return {"op": self.op, "node": self.node, "clause": self.clause, "class": self.change,
                "families": list(self.families), "old": self.old and self.old.to_json(),
                "new": self.new and self.new.to_json()}


@dataclass(frozen=True)
class ClauseChange:
    """A clause that was inserted, removed or changed, with its edits."""

    label: str
    old: Side | None
    new: Side | None
    edits: tuple[Edit, ...]

    @property
    def change(self) -> str:
        return strongest(e.change for e in self.edits)


@dataclass(frozen=True)
class PolicyDiff:
    changes: tuple[ClauseChange, ...]
    change: str
    families_before: frozenset[str] = frozenset()
    families_after: frozenset[str] = frozenset()
    new_families: frozenset[str] = frozenset()

    @property
    def edits(self) -> tuple[Edit, ...]:
        return tuple(chain.from_iterable(c.edits for c in self.changes))

    def to_json(self) -> dict:
        return {"class": self.change, "families": {"before": sorted(self.families_before),
                                                   "after": sorted(self.families_after),
                                                   "new": sorted(self.new_families)},
                "edits": [e.to_json() for e in self.edits],
                "clauses": [{"clause": c.label, "class": c.change, "old": c.old and c.old.to_json(),
                             "new": c.new and c.new.to_json()} for c in self.changes]}


def strongest(classes: Iterable[str]) -> str:
    """The strongest class of some edits (``none`` for no edits)."""
    return max(classes, key=CLASSES.index, default="none")


def policy_families(policy: ast.Policy, family_of: FamilyOf) -> frozenset[str]:
    """The catalogue families of the scorers, strategies and dedup methods that shape the selection.

    ``family_of(id, space)`` is the catalogue's (:func:`cbdsl.scaffolds.catalogue.family_of`), given by the
    caller: the diff is pure AST work and imports nothing outside ``dsl/``."""
    return _families(policy_uses(policy), family_of)


def _families(uses: Iterable[Use], family_of: FamilyOf) -> frozenset[str]:
    return frozenset(f for f in (family_of(i, s) for i, s in uses) if f is not None)


def diff_policies(a: ast.Policy, b: ast.Policy, *, prior_families: Iterable[str] = (),
                  family_of: FamilyOf) -> PolicyDiff:
    """The diff from ``a`` to ``b``; ``prior_families`` adds the families of iterations before ``a``."""
    before, after = policy_families(a, family_of), policy_families(b, family_of)
    new = after - before - frozenset(prior_families)
    ctx = _Context(b, new, family_of, dead=_dead_lets(a, b))
    changes: list[ClauseChange] = []
    pairs, removed, inserted = match_clauses(_units(a), _units(b))
    for unit in removed:
        edit = ctx.classify(Edit("remove", _kind(unit.node), unit.label, _side(unit.node), None), unit, None)
        changes.append(ClauseChange(unit.label, edit.old, None, (edit,)))
    for unit in inserted:
        edit = ctx.classify(Edit("insert", _kind(unit.node), unit.label, None, _side(unit.node)), unit, unit.node)
        changes.append(ClauseChange(unit.label, None, edit.new, (edit,)))
    for ua, ub in pairs:
        edits = tuple(ctx.classify(e, ub, n) for e, n in tree_edits(ua.node, ub.node, ub.label))
        if edits:
            changes.append(ClauseChange(ub.label, _side(ua.node), _side(ub.node), edits))
    changes.sort(key=lambda c: (ast.CLAUSE_ORDER.index(c.label.split()[0]), (c.new or c.old).span.start))
    overall = strongest(c.change for c in changes)
    if new and overall != "new-family":
        overall = "new-family"  # e.g. a let that no clause read before is read now
    return PolicyDiff(tuple(changes), overall, before, after, new)


# --- clause units and their matching ---------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A clause (or one method of a `cite`) with its identity; None: matched by similarity."""

    identity: tuple | None
    label: str
    node: ast.Node
    kind: str


def _units(policy: ast.Policy) -> list[Unit]:
    out: list[Unit] = []
    for c in policy.clauses:
        if isinstance(c, ast.Cite):
            out += [Unit(("cite", m.name), f"cite {m.name}", m, "cite") for m in c.methods]
        elif isinstance(c, ast.Adapt):
            out.append(Unit(("adapt", c.method.name), f"adapt {c.method.name}", c, "adapt"))
        elif isinstance(c, ast.Let):
            out.append(Unit(("let", c.name.name), f"let {c.name.name}", c, "let"))
        elif isinstance(c, ast.Dedup):
            out.append(Unit(("dedup", c.method.func.name), f"dedup {c.method.func.name}", c, "dedup"))
        elif isinstance(c, ast.Mix):
            out.append(Unit(("mix", c.by.name), f"mix by {c.by.name}", c, "mix"))
        elif c.kind in _SINGLE_KINDS:
            out.append(Unit((c.kind,), c.kind, c, c.kind))
        else:
            out.append(Unit(None, c.kind, c, c.kind))
    return out


def match_clauses(old: list[Unit], new: list[Unit]) -> tuple[list[tuple[Unit, Unit]], list[Unit], list[Unit]]:
    """(pairs, removed, inserted): by identity, then equal clauses, then by leaf similarity within a kind."""
    pairs: list[tuple[Unit, Unit]] = []
    by_identity: dict[tuple, list[Unit]] = {}
    for u in new:
        if u.identity is not None:
            by_identity.setdefault(u.identity, []).append(u)
    rest_old: list[Unit] = []
    for u in old:
        bucket = by_identity.get(u.identity) if u.identity is not None else None
        if bucket:
            pairs.append((u, bucket.pop(0)))
        else:
            rest_old.append(u)
    taken = {id(b) for _a, b in pairs}
    rest_new = [u for u in new if id(u) not in taken]
    for u in list(rest_old):  # equal clauses (a filter kept, moved or reformatted)
        twin = next((v for v in rest_new if v.kind == u.kind and v.node == u.node), None)
        if twin is not None:
            pairs.append((u, twin))
            rest_old.remove(u)
            rest_new.remove(twin)
    scored = sorted(((_leaf_dice(u.node, v.node), i, j) for i, u in enumerate(rest_old)
                     for j, v in enumerate(rest_new) if u.kind == v.kind), key=lambda t: (-t[0], t[1], t[2]))
    used_old, used_new = set(), set()
    for score, i, j in scored:
        if score >= CLAUSE_SIMILARITY and i not in used_old and j not in used_new:
            pairs.append((rest_old[i], rest_new[j]))
            used_old.add(i)
            used_new.add(j)
    removed = [u for i, u in enumerate(rest_old) if i not in used_old]
    inserted = [u for j, u in enumerate(rest_new) if j not in used_new]
    return pairs, removed, inserted


def _leaf_dice(a: ast.Node, b: ast.Node) -> float:
    """Dice coefficient of the multisets of leaf texts: how much two clauses share."""
    la, lb = [_text(n) for n in a.walk() if _is_leaf(n)], [_text(n) for n in b.walk() if _is_leaf(n)]
    if not la and not lb:
        return 1.0
    remaining = list(lb)
    common = 0
    for t in la:
        if t in remaining:
            remaining.remove(t)
            common += 1
    return 2 * common / (len(la) + len(lb))


# --- Change Distiller inside a pair of clauses -----------------------------------------------


@dataclass
class _Item:
    node: ast.Node
    parent: int | None
    slot: tuple  # (field, key) under the parent; key is an index, a keyword name or a mix group
    path: tuple  # the slots from the root: same path, same place
    leaves: set[int] = field(default_factory=set)  # indexes of the leaves under it (itself for a leaf)


def _flatten(root: ast.Node) -> list[_Item]:
    items: list[_Item] = []

    def visit(node: ast.Node, parent: int | None, slot: tuple, path: tuple) -> int:
        index = len(items)
        items.append(_Item(node, parent, slot, path))
        for child_slot, child in _child_slots(node):
            child_index = visit(child, index, child_slot, path + (child_slot,))
            items[index].leaves |= items[child_index].leaves
        if not items[index].leaves:
            items[index].leaves = {index}
        return index

    visit(root, None, (), ())
    return items


def _child_slots(node: ast.Node) -> Iterable[tuple[tuple, ast.Node]]:
    """Children with their slots; keywords and mix entries are keyed by name, since their order means nothing."""
    for (name, index), child in node.slots():
        if isinstance(child, ast.Keyword):
            yield (name, child.name.name), child
        elif isinstance(child, ast.MixEntry):
            yield (name, "*" if child.key_text is None else child.key_text), child
        else:
            yield (name, index), child


def _is_leaf(node: ast.Node) -> bool:
    return next(iter(node.children()), None) is None


def _label(node: ast.Node) -> str:
    """Nodes pair only within a label; a number and a percentage are both numbers (`5000` -> `1%`)."""
    return "numeric" if isinstance(node, (ast.Number, ast.Percent)) else type(node).__name__


def _own(node: ast.Node) -> tuple:
    """A node's own values besides its children: an operator; a budget's unit when it counts tokens
    (rows and percentages are two ways to write the same row count, told apart by the amount)."""
    if isinstance(node, ast.Budget):
        return (node.unit == "tokens",)
    return tuple(getattr(node, name, None) for name in ("op", "ops"))


def _bigrams(text: str) -> list[str]:
    return [text[i:i + 2] for i in range(len(text) - 1)] or [text]


def _similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    x, y = _bigrams(a), _bigrams(b)
    remaining, common = list(y), 0
    for g in x:
        if g in remaining:
            remaining.remove(g)
            common += 1
    return 2 * common / (len(x) + len(y))


def _match(src: list[_Item], tgt: list[_Item]) -> dict[int, int]:
    """Change Distiller's matching of two flattened trees (source index -> target index).

    Anchors come first: nodes in the same named place of anchored parents
    (a keyword by its name, a mix group by its key, a clause's expression)
    are the same node. Similarity matching then stays inside the anchors, so
    two mix weights of 0.4 in different groups never pair.
    """
    matched = _anchors(src, tgt)
    taken = set(matched.values())
    anchor_s, anchor_t = _nearest(src, set(matched)), _nearest(tgt, taken)

    def allowed(i: int, j: int) -> bool:
        return i not in matched and j not in taken and matched.get(anchor_s[i]) == anchor_t[j]

    leaves_s = [i for i, it in enumerate(src) if it.leaves == {i}]
    leaves_t = [j for j, it in enumerate(tgt) if it.leaves == {j}]
    candidates = []
    for i in leaves_s:
        for j in leaves_t:
            if allowed(i, j) and _label(src[i].node) == _label(tgt[j].node):
                score = _similarity(_text(src[i].node), _text(tgt[j].node))
                if score >= LEAF_SIMILARITY:
                    candidates.append((-score, src[i].path != tgt[j].path, i, j))
    for _score, _moved, i, j in sorted(candidates):
        if i not in matched and j not in taken:
            matched[i] = j
            taken.add(j)
    for i in reversed(range(len(src))):  # inner nodes, bottom-up
        if src[i].leaves == {i} or i in matched:
            continue
        best, best_score = None, 0.0
        for j, t in enumerate(tgt):
            if t.leaves == {j} or not allowed(i, j) or _label(t.node) != _label(src[i].node):
                continue
            common = sum(1 for leaf in src[i].leaves if matched.get(leaf) in t.leaves)
            size = max(len(src[i].leaves), len(t.leaves))
            score = 2 * common / (len(src[i].leaves) + len(t.leaves))
            if score >= (SMALL_INNER_SIMILARITY if size <= SMALL_SUBTREE else INNER_SIMILARITY) and score > best_score:
                best, best_score = j, score
        if best is not None:
            matched[i] = best
            taken.add(best)
    _match_slots(src, tgt, matched, taken)
    return matched


def _anchors(src: list[_Item], tgt: list[_Item]) -> dict[int, int]:
    """The roots (paired clauses), then, top-down, children in the same named place of anchored parents."""
    if _label(src[0].node) != _label(tgt[0].node):
        return {}
    anchored = {0: 0}
    slots_t = _slots(tgt)
    queue = [(0, 0)]
    while queue:
        i, j = queue.pop()
        if isinstance(src[i].node, (ast.Binary, ast.Unary)):
            continue  # `a and b` -> `b and a` is a move, not two updates
        for ci, child in enumerate(src):
            if child.parent != i or isinstance(child.slot[1], int):
                continue  # positional children (arguments, list items) are no identity
            cj = slots_t.get((j, child.slot))
            if cj is not None and _label(src[ci].node) == _label(tgt[cj].node):
                anchored[ci] = cj
                queue.append((ci, cj))
    return anchored


def _slots(items: list[_Item]) -> dict[tuple, int]:
    return {(it.parent, it.slot): k for k, it in enumerate(items) if it.parent is not None}


def _nearest(items: list[_Item], anchored: set[int]) -> list[int]:
    """For each node, its nearest anchored ancestor (or itself)."""
    out: list[int] = []
    for k, it in enumerate(items):  # pre-order: a parent comes before its children
        out.append(k if k in anchored or it.parent is None else out[it.parent])
    return out


def _match_slots(src: list[_Item], tgt: list[_Item], matched: dict[int, int], taken: set[int]) -> None:
    """Pair the unmatched children that sit in the same slot of a matched pair, top-down."""
    slots_t = _slots(tgt)
    children_s: dict[int, list[int]] = {}
    for i, it in enumerate(src):
        if it.parent is not None:
            children_s.setdefault(it.parent, []).append(i)
    queue = sorted(matched.items())
    while queue:
        i, j = queue.pop(0)
        for ci in children_s.get(i, []):
            cj = slots_t.get((j, src[ci].slot))
            if cj is None or ci in matched or cj in taken or _label(src[ci].node) != _label(tgt[cj].node):
                continue
            matched[ci] = cj
            taken.add(cj)
            queue.append((ci, cj))


def tree_edits(a: ast.Node, b: ast.Node, label: str) -> list[tuple[Edit, ast.Node | None]]:
    """The edits from clause ``a`` to clause ``b``, each with the new-side node it brings (if any)."""
    src, tgt = _flatten(a), _flatten(b)
    matched = _match(src, tgt)
    back = {j: i for i, j in matched.items()}
    out: list[tuple[Edit, ast.Node | None]] = []
    for i, it in enumerate(src):
        if i not in matched and (it.parent is None or it.parent in matched):
            out.append((Edit("remove", _kind(it.node), label, _side(it.node), None), None))
    for j, it in enumerate(tgt):
        if j not in back and (it.parent is None or it.parent in back):
            out.append((Edit("insert", _kind(it.node), label, None, _side(it.node)), it.node))
    moved = _out_of_order(src, tgt, matched)
    for i, j in sorted(matched.items()):
        s, t = src[i], tgt[j]
        leaf = s.leaves == {i} and t.leaves == {j}
        if (leaf and _text(s.node) != _text(t.node)) or (not leaf and _own(s.node) != _own(t.node)):
            out.append((Edit("update", _kind(t.node), label, _side(s.node), _side(t.node)), t.node))
        if i in moved or (s.parent is not None and matched.get(s.parent) != t.parent) \
                or (s.parent is not None and not isinstance(s.slot[1], int) and s.slot != t.slot):
            out.append((Edit("move", _kind(t.node), label, _side(s.node), _side(t.node)), t.node))
    return out


def _out_of_order(src: list[_Item], tgt: list[_Item], matched: dict[int, int]) -> set[int]:
    """Matched nodes that stayed under their matched parent but changed their order among its positional children."""
    moved: set[int] = set()
    groups: dict[tuple, list[int]] = {}
    for i, j in matched.items():
        s, t = src[i], tgt[j]
        if s.parent is not None and matched.get(s.parent) == t.parent and isinstance(s.slot[1], int) \
                and s.slot[0] == t.slot[0]:
            groups.setdefault((s.parent, s.slot[0]), []).append(i)
    for members in groups.values():
        by_src = sorted(members, key=lambda i: src[i].slot[1])
        by_tgt = sorted(members, key=lambda i: tgt[matched[i]].slot[1])
        moved |= {a for a, b in zip(by_src, by_tgt) if a != b}
    return moved


# --- classes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What classifying an edit needs: the new policy's lets, the new families, the dead lets."""

    new_policy: ast.Policy
    new_families: frozenset[str]
    family_of: FamilyOf
    dead: frozenset[str]

    def classify(self, edit: Edit, unit: Unit, brought: ast.Node | None) -> Edit:
        if unit.kind in _METADATA_KINDS or (unit.kind == "let" and unit.identity[1] in self.dead):
            return _with(edit, "metadata")
        if edit.op == "update" and isinstance(brought, (ast.Number, ast.Percent)):
            return _with(edit, "literal")
        if brought is not None and self.new_families:
            uses = node_uses(_usage_root(brought, unit), lets_of(self.new_policy))
            fams = _families(uses, self.family_of) & self.new_families
            if fams:
                return _with(edit, "new-family", tuple(sorted(fams)))
        return _with(edit, "structural")


def _usage_root(node: ast.Node, unit: Unit) -> ast.Node:
    """What an edited node stands for: a changed function name means its call, a strategy its select."""
    if isinstance(node, ast.Ident) and isinstance(unit.node, (ast.Select, ast.Dedup)):
        return unit.node
    if isinstance(node, ast.Ident):
        for call in unit.node.find_all(ast.Call):
            if call.func is node:
                return call
    return node


def _with(edit: Edit, change: str, families: tuple[str, ...] = ()) -> Edit:
    return Edit(edit.op, edit.node, edit.clause, edit.old, edit.new, change, families)


def _dead_lets(a: ast.Policy, b: ast.Policy) -> frozenset[str]:
    """`let` names that no selection clause reads on either side where they exist: editing them changes nothing."""
    live = live_lets(a) | live_lets(b)
    return (frozenset(lets_of(a)) | frozenset(lets_of(b))) - live


# --- text of nodes ----------------------------------------------------------------------------


def _kind(node: ast.Node) -> str:
    return getattr(node, "node", type(node).__name__.lower())


def _side(node: ast.Node) -> Side:
    return Side(_text(node), node.span)


def _text(node: ast.Node) -> str:
    """The canonical text of any node: a clause, an expression or a part of one."""
    if isinstance(node, ast.Clause):
        return format_clause(node, comments=False)
    if isinstance(node, ast.Ident):
        return node.name
    if isinstance(node, ast.Keyword):
        return f"{node.name.name}={format_expr(node.value)}"
    if isinstance(node, ast.MixEntry):
        key = node.key_text
        return f"{'*' if key is None else key if isinstance(node.group, ast.Ident) else format_string(key)}: " \
               f"{format_expr(node.weight)}"
    return format_expr(node)
