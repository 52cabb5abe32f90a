"""AST mutations: the proposal grammar of ``cbdsl search``.

Why: the benchmark needs an automated, non-LLM baseline that explores the
same space an agent edits (thresholds, scorers, filters, selection), so that
the scaling of curation search with iterations can be measured without an
agent. Every operator is a pure function ``(policy, rng, vocabulary) ->
Mutation | None``: the same policy, vocabulary and seeded ``random.Random``
always give the same proposal, and ``None`` says the operator does not apply
(no filter to drop, no literal to change). Whether a proposal is *valid* is
not decided here: the searcher runs ``cbdsl check`` and redraws.

The :class:`Vocabulary` is what a mutation may write on one pool: row scores
(numeric columns and scorer calls whose inputs the pool's columns fill),
embeddings, group columns, dedup methods, select strategies, and for each
scorer the others of its bucket (same output type, catalogue bucket and input
kinds) that a swap may put in its place. It is built once from the pool's
schema, the scorer registry and the method catalogue (:func:`vocabulary`).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cbdsl.dsl import ast
from cbdsl.dsl.format import format_clause, format_expr
from cbdsl.dsl.uses import SELECTION_CLAUSES, ids, lets_of, live_lets, node_uses
from cbdsl.scaffolds.catalogue import catalogue, methods_using
from cbdsl.scorers.registry import registry

COSTS: tuple[str, ...] = ("metadata", "cpu_model", "gpu_model")
QUANTILES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

#: Clause kinds whose literals a mutation may change (never the budget: the sandbox fixes it).
_TUNABLE = (ast.Let, ast.Filter, ast.Dedup, ast.Mix, ast.Select)

Path = tuple[tuple[str, int | None], ...]


@dataclass(frozen=True)
class Mutation:
    """A proposal: the new policy, the operator that made it, and what it changed, in words."""

    policy: ast.Policy
    kind: str
    description: str


@dataclass(frozen=True)
class Vocabulary:
    """What mutations may write on one pool (see the module docstring)."""

    scores: tuple[ast.Node, ...] = ()
    embeddings: tuple[ast.Node, ...] = ()
    groups: tuple[str, ...] = ()
    dedups: tuple[ast.Call, ...] = ()
    strategies: tuple[ast.Select, ...] = ()
    swaps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    methods: Mapping[str, str] = field(default_factory=dict)  # identifying tool -> the method it instantiates


# --- building nodes -----------------------------------------------------------------


def call(func: str, *args: ast.Node, **kwargs: Any) -> ast.Call:
    """A call node; keyword values are Python literals (int, float, str)."""
    return ast.Call(func=ast.Ident(name=func), args=args,
                    kwargs=tuple(ast.Keyword(name=ast.Ident(name=k), value=literal(v)) for k, v in kwargs.items()))


def literal(value: Any) -> ast.Node:
    if isinstance(value, bool):
        return ast.Bool(value=value)
    if isinstance(value, (int, float)):
        return ast.Number(value=value)
    return ast.String(value=str(value))


def _text(node: ast.Node) -> str:
    return format_clause(node, comments=False) if isinstance(node, ast.Clause) else format_expr(node)


# --- paths: replace one node anywhere in a frozen tree --------------------------------


def walk_paths(node: ast.Node, path: Path = ()) -> Iterator[tuple[Path, ast.Node]]:
    """Every node under ``node`` with its path (field, index) from ``node``, pre-order."""
    yield path, node
    for step, child in node.slots():
        yield from walk_paths(child, path + (step,))


def replace_at(node: ast.Node, path: Path, new: ast.Node) -> ast.Node:
    """``node`` with the node at ``path`` replaced by ``new`` (a copy; the input is unchanged)."""
    if not path:
        return new
    (name, index), rest = path[0], path[1:]
    value = getattr(node, name)
    if index is None:
        return node.model_copy(update={name: replace_at(value, rest, new)})
    items = list(value)
    items[index] = replace_at(items[index], rest, new)
    return node.model_copy(update={name: tuple(items)})


def node_at(node: ast.Node, path: Path) -> ast.Node:
    for name, index in path:
        node = getattr(node, name) if index is None else getattr(node, name)[index]
    return node


def with_clauses(policy: ast.Policy, clauses) -> ast.Policy:
    return policy.model_copy(update={"clauses": tuple(clauses)})


# --- literals ----------------------------------------------------------------------------


def _literal_sites(policy: ast.Policy) -> list[tuple[Path, str]]:
    """Paths of the tunable number literals, each with its role: seed, fraction, weight or number."""
    sites: list[tuple[Path, str]] = []
    for i, clause in enumerate(policy.clauses):
        if not isinstance(clause, _TUNABLE):
            continue
        for path, node in walk_paths(clause, (("clauses", i),)):
            if not isinstance(node, (ast.Number, ast.Percent)):
                continue
            parent = node_at(policy, path[:-1])
            if isinstance(parent, ast.MixEntry):
                sites.append((path[:-2], "weight"))  # the mix clause; weights move in pairs
            elif isinstance(parent, ast.Keyword) and parent.name.name == "seed":
                sites.append((path, "seed"))
            elif isinstance(node, ast.Percent) or (isinstance(node.value, float) and 0 < node.value < 1):
                sites.append((path, "fraction"))
            else:
                sites.append((path, "number"))
    return list(dict.fromkeys(sites))  # a mix appears once however many weights it has


def new_number(value: int | float, role: str, rng: random.Random) -> int | float:
    """A different value of the same role: a fresh seed, a fraction moved inside (0, 1), a number stepped."""
    if role == "seed":
        seed = rng.randrange(999)
        return seed if seed < value else seed + 1
    if role == "fraction":
        step = rng.choice((0.05, 0.1, 0.2)) * rng.choice((-1, 1))
        moved = min(0.99, max(0.01, round(value + step, 2)))
        return moved if moved != value else round(min(0.99, max(0.01, value - step)), 2)
    factor = rng.choice((0.1, 0.25, 0.5)) * rng.choice((-1, 1))
    if isinstance(value, int):
        step = max(1, round(abs(value) * abs(factor)))
        moved = value + (step if factor > 0 else -step)
        return moved if value < 0 or moved >= 0 else value + step
    return float(f"{value * (1 + factor):.3g}") if value else factor


def tweak_literal(policy: ast.Policy, rng: random.Random, vocab: Vocabulary) -> Mutation | None:
    """Change one threshold, fraction, seed or pair of mix weights (literal tuning)."""
    sites = _literal_sites(policy)
    if not sites:
        return None
    path, role = rng.choice(sites)
    if role == "weight":
        return _reweight(policy, path, rng)
    clause = node_at(policy, path[:1])
    old = node_at(policy, path)
    if isinstance(old, ast.Percent):
        value = round(new_number(old.value / 100, role, rng) * 100, 4)
        new: ast.Node = ast.Percent(value=int(value) if float(value).is_integer() else value)
    else:
        new = ast.Number(value=new_number(old.value, role, rng))
    changed = replace_at(policy, path, new)
    return Mutation(changed, "literal", f"{role} {_text(old)} -> {_text(new)} in `{_text(clause)}`")


def _reweight(policy: ast.Policy, path: Path, rng: random.Random) -> Mutation | None:
    mix = node_at(policy, path)
    if len(mix.entries) < 2:
        return None
    i, j = rng.sample(range(len(mix.entries)), 2)
    a, b = mix.entries[i].weight, mix.entries[j].weight
    scale = 100 if isinstance(a, ast.Percent) else 1
    delta = min(a.value, rng.choice((0.05, 0.1)) * scale)
    if delta <= 0:
        return None
    kind = type(a)
    weights = list(mix.entries)
    weights[i] = weights[i].model_copy(update={"weight": kind(value=round(a.value - delta, 4))})
    weights[j] = weights[j].model_copy(update={"weight": type(b)(value=round(b.value + delta, 4))})
    new = mix.model_copy(update={"entries": tuple(weights)})
    return Mutation(replace_at(policy, path, new), "literal", f"weights `{_text(mix)}` -> `{_text(new)}`")


# --- scorers -------------------------------------------------------------------------------


def _calls(policy: ast.Policy) -> list[tuple[Path, ast.Call]]:
    return [(p, n) for p, n in walk_paths(policy) if isinstance(n, ast.Call)]


def swap_scorer(policy: ast.Policy, rng: random.Random, vocab: Vocabulary) -> Mutation | None:
    """Replace a scorer by another of its bucket, everywhere the same call appears (keyword arguments it lacks go)."""
    sites = [c for _, c in _calls(policy) if vocab.swaps.get(c.func.name)]
    if not sites:
        return None
    old = rng.choice(list(dict.fromkeys(sites)))
    alt = rng.choice(vocab.swaps[old.func.name])
    params = _param_names(alt)
    new = old.model_copy(update={"func": ast.Ident(name=alt),
                                 "kwargs": tuple(k for k in old.kwargs if k.name.name in params)})
    changed = policy
    for path, node in _calls(policy):
        if node == old:
            changed = replace_at(changed, path, new)
    return Mutation(changed, "swap", f"scorer {old.func.name} -> {alt}: `{_text(old)}` -> `{_text(new)}`")


def _param_names(scorer_id: str) -> tuple[str, ...]:
    entry = registry().get(scorer_id)
    return entry.param_names if entry is not None else ()


# --- filters -------------------------------------------------------------------------------


def new_filter(rng: random.Random, vocab: Vocabulary) -> ast.Filter | None:
    """``X >= quantile(X, q)`` or ``X <= quantile(X, q)`` over a vocabulary score, sometimes ``per`` a group."""
    if not vocab.scores:
        return None
    x = rng.choice(vocab.scores)
    q = rng.choice(QUANTILES)
    op = rng.choice((">=", "<="))
    per = ast.Ident(name=rng.choice(vocab.groups)) if vocab.groups and rng.random() < 0.25 else None
    stat = ast.Call(func=ast.Ident(name="quantile"), args=(x, ast.Number(value=q)), per=per)
    return ast.Filter(condition=ast.Compare(operands=(x, stat), ops=(op,)))


def add_filter(policy: ast.Policy, rng: random.Random, vocab: Vocabulary) -> Mutation | None:
    """Add one quantile filter over a vocabulary score (a structural change)."""
    clause = new_filter(rng, vocab)
    if clause is None or clause in policy.clauses:
        return None
    return Mutation(with_clauses(policy, (*policy.clauses, clause)), "add-filter", f"add `{_text(clause)}`")


def drop_filter(policy: ast.Policy, rng: random.Random, vocab: Vocabulary) -> Mutation | None:
    """Remove one filter, and the ``let`` definitions only it used."""
    filters = [c for c in policy.clauses if isinstance(c, ast.Filter)]
    if not filters:
        return None
    gone = rng.choice(filters)
    kept = [c for c in policy.clauses if c is not gone]
    return Mutation(prune_lets(with_clauses(policy, kept), before=policy), "drop-filter", f"drop `{_text(gone)}`")


def prune_lets(policy: ast.Policy, before: ast.Policy) -> ast.Policy:
    """Drop the lets that ``before`` used and ``policy`` no longer does (a let unused from the start stays)."""
    dropped = live_lets(before) - live_lets(policy)
    return with_clauses(policy, [c for c in policy.clauses if not (isinstance(c, ast.Let) and c.name.name in dropped)])


# --- selection and dedup -------------------------------------------------------------------


def change_select(policy: ast.Policy, rng: random.Random, vocab: Vocabulary) -> Mutation | None:
    """Replace the selection strategy (``random`` when the policy has none) by another of the vocabulary."""
    current = next(iter(policy.of_kind(ast.Select)), None)
    choices = [s for s in vocab.strategies if current is None or s != current]
    if current is None:
        choices = [s for s in choices if s != _DEFAULT_SELECT]
    if not choices:
        return None
    new = rng.choice(choices)
    if new.kwargs and any(k.name.name == "seed" for k in new.kwargs):
        seed = ast.Keyword(name=ast.Ident(name="seed"), value=ast.Number(value=rng.randrange(1000)))
        new = new.model_copy(update={"kwargs": tuple(seed if k.name.name == "seed" else k for k in new.kwargs)})
    kept = [c for c in policy.clauses if not isinstance(c, ast.Select)] + [new]
    old = _text(current) if current is not None else "no select"
    return Mutation(prune_lets(with_clauses(policy, kept), before=policy), "select", f"`{old}` -> `{_text(new)}`")


_DEFAULT_SELECT = ast.Select(strategy=ast.Ident(name="random"),
                             kwargs=(ast.Keyword(name=ast.Ident(name="seed"), value=ast.Number(value=0)),))


def change_dedup(policy: ast.Policy, rng: random.Random, vocab: Vocabulary) -> Mutation | None:
    """Add a dedup method, replace the one there by another, or drop it."""
    current = next(iter(policy.of_kind(ast.Dedup)), None)
    others = [d for d in vocab.dedups if current is None or d != current.method]
    options = (["drop"] if current is not None else []) + (["use"] if others else [])
    if not options:
        return None
    rest = [c for c in policy.clauses if not isinstance(c, ast.Dedup)]
    if rng.choice(options) == "drop":
        return Mutation(prune_lets(with_clauses(policy, rest), before=policy), "dedup", f"drop `{_text(current)}`")
    new = ast.Dedup(method=rng.choice(others))
    what = f"`{_text(current)}` -> `{_text(new)}`" if current is not None else f"add `{_text(new)}`"
    return Mutation(prune_lets(with_clauses(policy, [*rest, new]), before=policy), "dedup", what)


Operator = Callable[[ast.Policy, random.Random, Vocabulary], "Mutation | None"]

#: Every operator, in a fixed order (the draw order depends on it).
OPERATORS: tuple[Operator, ...] = (tweak_literal, swap_scorer, add_filter, drop_filter, change_select, change_dedup)


def mutate(policy: ast.Policy, rng: random.Random, vocab: Vocabulary) -> Mutation | None:
    """One mutation by an operator drawn uniformly among those that apply; None if none applies."""
    for op in rng.sample(OPERATORS, len(OPERATORS)):
        found = op(policy, rng, vocab)
        if found is not None and found.policy != policy:
            return found
    return None


def random_policy(base: ast.Policy, rng: random.Random, vocab: Vocabulary, max_steps: int = 3) -> Mutation | None:
    """An independent random policy: 1 to ``max_steps`` mutations of ``base`` (the minimal policy)."""
    policy, done = base, []
    for _ in range(rng.randint(1, max_steps)):
        found = mutate(policy, rng, vocab)
        if found is None:
            break
        policy = found.policy
        done.append(found)
    if not done or policy == base:  # say, a filter added and dropped again
        return None
    kinds = "+".join(dict.fromkeys(m.kind for m in done))
    return Mutation(policy, kinds, "; ".join(m.description for m in done))


# --- fixed clauses and citations ----------------------------------------------------------


def with_frame(policy: ast.Policy, *, name: str, pool: str, budget: int) -> ast.Policy:
    """The policy under the sandbox's rules: this name, this pool, exactly this row budget; comments dropped."""
    fixed = (ast.PolicyClause(name=ast.String(value=name)), ast.PoolClause(name=ast.String(value=pool)),
             ast.Budget(unit="rows", amount=ast.Number(value=budget)))
    kept = [c.model_copy(update={"comments": (), "trailing": None}) for c in policy.clauses
            if not isinstance(c, (ast.PolicyClause, ast.PoolClause, ast.Budget))]
    return policy.model_copy(update={"clauses": (*fixed, *kept), "comments": (), "trailing": ()})


def with_citations(policy: ast.Policy, note: str, vocab: Vocabulary) -> ast.Policy:
    """Cite the catalogue methods the policy instantiates; one ``adapt`` each quotes its clauses after ``note``.

    The cite/adapt scaffolds ask every iteration to name the methods it builds
    on and how it uses them; a searcher can only say what it wrote.
    """
    kept = [c for c in policy.clauses if not isinstance(c, (ast.Cite, ast.Adapt))]
    lets = lets_of(policy)
    uses: dict[str, list[str]] = {}
    for clause in (c for c in kept if isinstance(c, SELECTION_CLAUSES)):
        for tool in sorted(ids(node_uses(clause, lets))):
            if tool in vocab.methods and _text(clause) not in uses.get(vocab.methods[tool], []):
                uses.setdefault(vocab.methods[tool], []).append(_text(clause))
    if not uses:
        return with_clauses(policy, kept)
    methods = sorted(uses)
    cite = ast.Cite(methods=tuple(ast.Ident(name=m) for m in methods))
    adapt = [ast.Adapt(method=ast.Ident(name=m), reason=ast.String(value=f"{note}: " + "; ".join(uses[m])))
             for m in methods]
    return with_clauses(policy, [cite, *adapt, *kept])


# --- the vocabulary of a pool ---------------------------------------------------------------


def vocabulary(schema: Mapping[str, str], stats: Mapping[str, Mapping] | None = None, *, id_column: str = "id",
               max_cost: str = "gpu_model", exclude: frozenset[str] = frozenset()) -> Vocabulary:
    """What mutations may write on a pool of this schema, using scorers up to ``max_cost`` except ``exclude``.

    Group columns are the low-cardinality ones the pool card lists value
    counts for; text inputs are the other string columns (never the id).
    """
    if max_cost not in COSTS:
        raise ValueError(f"max_cost must be one of {', '.join(COSTS)}, got {max_cost!r}")
    stats = stats or {}
    reg, cat = registry(), catalogue()
    allowed = COSTS[: COSTS.index(max_cost) + 1]
    groups = tuple(c for c, t in schema.items() if c != id_column and t in ("str", "int", "bool")
                   and "value_counts" in stats.get(c, {}))
    texts = [c for c, t in schema.items() if t == "str" and c != id_column and c not in groups]
    columns: dict[str, list[ast.Node]] = {
        "image": [ast.Name(name=c) for c, t in schema.items() if t in ("binary", "image")],
        "str": [ast.Name(name=c) for c in texts],
        "sized": [ast.Name(name=c) for c in texts],
        "number": [ast.Name(name=c) for c, t in schema.items() if t in ("int", "float") and c != id_column],
        "int": [ast.Name(name=c) for c, t in schema.items() if t == "int" and c != id_column],
        "key": [ast.Name(name=c) for c, t in schema.items() if t in ("str", "binary", "image") and c != id_column
                and c not in groups],
        "column": [ast.Name(name=c) for c in groups],
    }
    usable = [e for e in reg.entries()
              if e.cost in allowed and e.id not in exclude
              and not any(f.is_required() for f in e.params.model_fields.values())]
    scorers = [e for e in usable if e.kind == "scorer"]
    columns["embedding"] = [c for e in scorers if _output(e) == "embedding" for c in _fill(e, columns)]
    scores = [*columns["number"], *(c for e in scorers if _output(e) in ("int", "float") for c in _fill(e, columns))]
    dedups = tuple(c for e in usable if e.kind == "dedup" for c in _fill(e, columns))
    strategies = tuple(_strategy(e, c) for e in usable if e.kind == "select"
                       for c in (_fill(e, {**columns, "number": scores}) if e.inputs else [call(e.id)]))

    def bucket(e) -> tuple:
        methods = {*methods_using(e.id), *([e.method] if e.method in cat else [])}
        inputs = tuple("text" if i.expect in ("str", "sized") else i.expect for i in e.inputs)
        return _output(e), tuple(sorted({cat[m].bucket for m in methods})) or ("filter",), inputs

    filled = {c.func.name for c in scores if isinstance(c, ast.Call)}
    swappable = [e for e in scorers if e.id in filled]
    swaps = {e.id: tuple(o.id for o in swappable if o.id != e.id and bucket(o) == bucket(e)) for e in swappable}
    generic = {e.id for e in reg.entries() if e.kind in ("statistic", "function")} | {"top", "bottom"}
    methods: dict[str, str] = {}
    for e in reg.entries():
        owner = e.method if e.method in cat else next(iter(methods_using(e.id)), None)
        if owner is not None and e.id not in generic:
            methods.setdefault(e.id, owner)
    return Vocabulary(scores=tuple(scores), embeddings=tuple(columns["embedding"]), groups=groups, dedups=dedups,
                      strategies=strategies, swaps={k: v for k, v in swaps.items() if v}, methods=methods)


def _output(entry) -> str | None:
    return entry.output if isinstance(entry.output, str) and entry.output not in ("same", "join") else None


def _fill(entry, columns: Mapping[str, list[ast.Node]]) -> list[ast.Call]:
    """Every call of ``entry`` whose positional inputs the given expressions fill (one each, defaults for parameters)."""
    options = [columns.get(i.expect, []) for i in entry.inputs]
    return [ast.Call(func=ast.Ident(name=entry.id), args=tuple(args)) for args in itertools.product(*options)]


def _strategy(entry, filled: ast.Call) -> ast.Select:
    kwargs = (ast.Keyword(name=ast.Ident(name="seed"), value=ast.Number(value=0)),) if "seed" in entry.param_names else ()
    return ast.Select(strategy=ast.Ident(name=entry.id), args=filled.args, kwargs=kwargs)
