"""The method catalogue: every published method the policy language can express.

One TOML file per method under ``scaffolds/catalogue/<id>.toml`` (read with
the standard library's ``tomllib``), with its citation, family, bucket, the
scorers it uses, its canonical form in the DSL, its default parameters and
its known departures from the reference code, and the example that
reproduces the reference (tests/test_catalogue.py holds the two to the same
rule). ``cite``/``adapt`` in a policy
resolve against these ids; ``cbdsl methods`` prints them; the scaffold modes
compare a policy with the canonical form of what it cites.

A scorer that an entry names but the registry does not have yet is
*pending* (:func:`pending_scorers`): the checker says so with its own code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbdsl.home import home
from cbdsl.scorers.registry import registry

FAMILIES: tuple[str, ...] = (
    "heuristic filter", "text statistics", "embedding geometry", "training dynamics",
    "importance resampling", "label noise", "influence", "dedup", "baseline",
)
BUCKETS: tuple[str, ...] = ("filter", "select", "dedup", "mix")

#: When each family helps: the `guide` scaffold's strategy guide (PROTOCOL.md) is written from this
#: and the catalogue, so an agent learns what directions exist, not only which knobs.
FAMILY_GUIDE: dict[str, str] = {
    "heuristic filter": "cheap rules on metadata (caption length, image size, aspect ratio, language): removes "
                        "broken or tiny images and empty or foreign captions; the first thing to try on a raw pool",
    "text statistics": "a language model or token statistics of the caption (perplexity, token counts): finds "
                       "spam, boilerplate and run-on text that simple length rules miss",
    "embedding geometry": "a model's view of the pair (CLIP image-text agreement, clusters, prototypes, "
                          "k-center coverage): removes mismatched captions and keeps a diverse, balanced set",
    "training dynamics": "how a small proxy model learns each example (loss, EL2N, GraNd, forgetting): separates "
                         "easy, hard and mislabelled rows; helps when noise survives the metadata filters",
    "importance resampling": "weights rows by how much they resemble a target distribution (DSIR): helps when the "
                             "evaluation domain differs from the bulk of the pool",
    "label noise": "confident learning over a classifier's out-of-sample predictions: finds rows whose label "
                   "(caption or class) disagrees with their content",
    "influence": "gradient similarity to a target set (LESS, ICONS): selects the rows that most help a target "
                 "task; costly, for a final, targeted selection",
    "dedup": "exact, MinHash or semantic duplicate removal: frees budget taken by copies and near-copies, so "
             "the same budget covers more distinct data",
    "baseline": "no filtering or a uniform random sample: the reference every other family must beat",
}

_REQUIRED = ("id", "name", "authors", "venue", "year", "family", "bucket", "scorers", "canonical", "url")


@dataclass(frozen=True)
class Method:
    """One catalogue entry (see the module docstring)."""

    id: str
    name: str
    authors: tuple[str, ...]
    venue: str
    year: int | None
    family: str
    bucket: str
    scorers: tuple[str, ...]
    canonical: str
    url: str
    defaults: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    departures: tuple[str, ...] = ()
    example: str | None = None  # the example under examples/ that reproduces the reference's rule

    @property
    def citation(self) -> str:
        """'Gadre et al. (2023). DataComp: .... NeurIPS Datasets and Benchmarks.'"""
        if not self.authors:
            who = "(no single paper)"
        elif len(self.authors) == 1:
            who = self.authors[0]
        elif len(self.authors) == 2:
            who = f"{self.authors[0].split()[-1]} and {self.authors[1].split()[-1]}"
        else:
            who = f"{self.authors[0].split()[-1]} et al."
        year = f" ({self.year})" if self.year else ""
        venue = f" {self.venue}." if self.venue else ""
        return f"{who}{year}. {self.name}.{venue}"


class CatalogueError(ValueError):
    """A catalogue file is malformed: a bug in cbdsl's data, caught by its tests."""


def _directory() -> Path:
    # the package's own folder, not importlib.resources: cbdsl is installed unpacked, and importing
    # importlib.resources costs ~10 ms of every `cbdsl check`
    return Path(__file__).with_name("catalogue")


def _load_one(name: str, text: str) -> Method:
    return _method(name, _toml(name, text))


def _toml(name: str, text: str) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CatalogueError(f"{name}: {err}") from err


def _method(name: str, data: dict[str, Any]) -> Method:
    """A validated entry from the parsed TOML of the file ``name``."""
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CatalogueError(f"{name}: missing field(s) {', '.join(missing)}")
    unknown = set(data) - set(_REQUIRED) - {"defaults", "departures", "example"}
    if unknown:
        raise CatalogueError(f"{name}: unknown field(s) {', '.join(sorted(unknown))}")
    if data["id"] != name.removesuffix(".toml"):
        raise CatalogueError(f"{name}: id {data['id']!r} does not match the file name")
    if data["family"] not in FAMILIES:
        raise CatalogueError(f"{name}: family {data['family']!r} is not one of {FAMILIES}")
    if data["bucket"] not in BUCKETS:
        raise CatalogueError(f"{name}: bucket {data['bucket']!r} is not one of {BUCKETS}")
    return Method(
        id=data["id"],
        name=data["name"],
        authors=tuple(data["authors"]),
        venue=data["venue"],
        year=data["year"] or None,
        family=data["family"],
        bucket=data["bucket"],
        scorers=tuple(data["scorers"]),
        canonical=data["canonical"].strip() + "\n",
        url=data["url"],
        defaults=dict(data.get("defaults", {})),
        departures=tuple(data.get("departures", ())),
        example=data.get("example"),
    )


@functools.cache
def _files() -> tuple[tuple[str, str], ...]:
    found = [(p.name, p.read_text(encoding="utf-8")) for p in _directory().iterdir() if p.name.endswith(".toml")]
    return tuple(sorted(found))


def _cache_path(digest: str) -> Path:
    return home() / "cache" / f"catalogue-{digest[:32]}.json"


@functools.cache
def _parsed() -> dict[str, dict[str, Any]]:
    """The TOML of every file, kept as JSON under ``$CBDSL_HOME/cache`` keyed by the files' hash.

    ``tomllib`` (pure Python) takes about 25 ms over the catalogue, and every
    ``cbdsl check`` needs the catalogue; JSON loads in a millisecond. A cache
    that is missing, unreadable or unwritable only costs the parse."""
    path = _cache_path(catalogue_hash())
    names = [name for name, _text in _files()]
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cached, dict) and list(cached) == names:
            return cached
    except (OSError, ValueError):
        pass
    parsed = {name: _toml(name, text) for name, text in _files()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(parsed), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass
    return parsed


@functools.cache
def catalogue() -> dict[str, Method]:
    """Every method by id, in id order."""
    return {m.id: m for m in (_method(name, data) for name, data in _parsed().items())}


def method_ids() -> tuple[str, ...]:
    return tuple(catalogue())


def get_method(method_id: str) -> Method | None:
    return catalogue().get(method_id)


def catalogue_hash() -> str:
    """sha256 over every catalogue file (name and bytes): identifies the catalogue a policy was compiled against."""
    h = hashlib.sha256()
    for name, text in _files():
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def scorer_ids() -> frozenset[str]:
    """Every scorer id that some method uses."""
    return frozenset(s for m in catalogue().values() for s in m.scorers)


@functools.cache
def pending_scorers() -> frozenset[str]:
    """Scorers the catalogue names that the registry does not implement yet."""
    return frozenset(s for s in scorer_ids() if s not in registry())


@functools.cache
def scorer_users() -> dict[str, tuple[str, ...]]:
    """For each scorer id, the ids of the methods that use it."""
    users: dict[str, list[str]] = {}
    for method in catalogue().values():
        for scorer_id in method.scorers:
            users.setdefault(scorer_id, []).append(method.id)
    return {k: tuple(v) for k, v in users.items()}


def methods_using(scorer_id: str) -> tuple[str, ...]:
    """Ids of the methods whose scorers include ``scorer_id``."""
    return scorer_users().get(scorer_id, ())


@functools.cache
def is_generic(callable_id: str) -> bool:
    """A statistic or function (quantile, top, min, len of a list): a tool of every method, the mark of none."""
    entry = registry().get(callable_id)
    return entry is not None and entry.kind in ("statistic", "function")


def method_tools(method: Method) -> frozenset[str]:
    """The scorers and strategies that instantiate ``method``: its catalogue scorers less the generic ones."""
    return frozenset(s for s in method.scorers if not is_generic(s))


@functools.cache
def family_of(callable_id: str, space: str = "expr") -> str | None:
    """The catalogue family a use of ``callable_id`` belongs to, or None for a shared tool.

    "A new method family" is the research's unit of a new direction, so it
    must come from the catalogue, not from a list kept beside it. A callable
    is a family's when every method that lists it is of that one family; a
    strategy counts only methods of the select bucket and a dedup method only
    dedup ones (`select top` is no method, `top(x, 30%)` is a statistic).
    Statistics, functions and tools several families share (quantile, lang,
    kmeans, image_embedding) belong to none: using them is no new direction.
    Nor is the `baseline` family (`select random`, no filter): dropping a
    method for the reference explores nothing, so it earns no new-family credit.
    """
    if space == "expr" and is_generic(callable_id):
        return None
    bucket = {"select": "select", "dedup": "dedup"}.get(space)
    families = {m.family for m in catalogue().values()
                if callable_id in m.scorers and (bucket is None or m.bucket == bucket)}
    return families.pop() if len(families) == 1 and families != {"baseline"} else None


def families_of(uses) -> frozenset[str]:
    """The families of some uses (``(callable id, space)`` pairs, see :mod:`cbdsl.dsl.uses`)."""
    return frozenset(f for f in (family_of(i, space) for i, space in uses) if f is not None)


def family_tools() -> dict[str, tuple[str, ...]]:
    """For each family, the callables that belong to it alone (what the strategy guide names)."""
    reg = registry()
    out: dict[str, set[str]] = {f: set() for f in FAMILIES}
    for m in catalogue().values():
        for tool in m.scorers:
            space = next((s for s in ("dedup", "select") if reg.get(tool, s) and not reg.get(tool)), "expr")
            if family_of(tool, space) == m.family:
                out[m.family].add(tool)
    return {f: tuple(sorted(t)) for f, t in out.items()}
