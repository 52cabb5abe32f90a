"""The type lattice of the policy language.

A small, closed set of value types: ``bool``, ``int``, ``float`` (an ``int``
widens to ``float``), ``str``, ``embedding``, ``list[T]``, ``asset``, ``binary``
(image bytes) and ``unknown``. ``unknown`` is what the checker cannot know
yet (a column when no pool schema is given, a name that already got an
error): it is compatible with everything, so one mistake gives one
diagnostic, never a cascade.

Signatures in the registry say what an argument *expects* with a word of
:data:`EXPECTS` (``number`` is ``int`` or ``float``, ``column`` is a bare
column or ``let`` name, ...); :func:`accepts` decides, :func:`describe_expect`
names it for people.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Type:
    """A value type; ``item`` is the element type of a ``list``."""

    name: str
    item: Type | None = None

    def __str__(self) -> str:
        return f"list[{self.item}]" if self.name == "list" and self.item is not None else self.name

    @property
    def is_unknown(self) -> bool:
        return self.name == "unknown"

    @property
    def is_numeric(self) -> bool:
        return self.name in ("int", "float")


BOOL = Type("bool")
INT = Type("int")
FLOAT = Type("float")
STR = Type("str")
EMBEDDING = Type("embedding")
ASSET = Type("asset")
BINARY = Type("binary")
IMAGE = Type("image")  # a column of image file paths (LLaVA's layout); read as image bytes by the scorers
UNKNOWN = Type("unknown")


#: Kinds of pool assets no policy may read (design rule 8): evaluation sets and ground truth. The
#: checker refuses a policy that names one; the benchmark (audit, backends, tests) reads them itself.
BENCHMARK_KINDS: tuple[str, ...] = ("eval", "truth")
#: Why a policy cannot read such an asset, and what to do instead (check and run say the same).
BENCHMARK_WHY = ("evaluation sets and ground truth are read only by the benchmark, never by a policy "
                 "(a policy reads only the pool and the scorers)")
BENCHMARK_FIX = "curate from the pool's columns and scores; POOL.md lists the assets a policy may name"


def list_of(item: Type) -> Type:
    return Type("list", item)


#: Schema type strings (``pool.json``) to types.
_SCHEMA: dict[str, Type] = {
    "bool": BOOL, "int": INT, "float": FLOAT, "str": STR, "embedding": EMBEDDING,
    "binary": BINARY, "image": IMAGE, "asset": ASSET, "any": UNKNOWN, "list": list_of(UNKNOWN),
}


def parse_type(text: str) -> Type:
    """A schema type string (``"int"``, ``"list[str]"``, ``"binary"``, ``"any"``) as a :class:`Type`.

    Unrecognised strings read as ``unknown``: a pool with a new column type
    must not make every policy fail to check.
    """
    text = text.strip().lower()
    if text.startswith("list[") and text.endswith("]"):
        return list_of(parse_type(text[5:-1]))
    return _SCHEMA.get(text, UNKNOWN)


def numeric_result(a: Type, b: Type, op: str) -> Type:
    """The type of ``a op b`` for numbers: int stays int (except ``/``), anything else widens to float."""
    if a.is_unknown or b.is_unknown:
        return UNKNOWN
    if a == INT and b == INT and op != "/":
        return INT
    return FLOAT


def family(t: Type) -> str:
    """What can be compared with what: numbers with numbers, strings with strings, ..."""
    return "number" if t.is_numeric else t.name


def comparable(a: Type, b: Type) -> bool:
    """Whether ``a == b`` makes sense (unknown is comparable with everything)."""
    if a.is_unknown or b.is_unknown:
        return True
    if a.name == "list" and b.name == "list":
        return a.item is None or b.item is None or comparable(a.item, b.item)
    return family(a) == family(b)


def orderable(a: Type, b: Type) -> bool:
    """Whether ``a < b`` makes sense: numbers with numbers, strings with strings."""
    if a.is_unknown or b.is_unknown:
        return (a.is_unknown or family(a) in ("number", "str")) and (b.is_unknown or family(b) in ("number", "str"))
    return family(a) == family(b) and family(a) in ("number", "str")


def join(a: Type, b: Type) -> Type | None:
    """The least type holding both (list items), or None when they do not mix."""
    if a.is_unknown:
        return b
    if b.is_unknown:
        return a
    if a == b:
        return a
    if a.is_numeric and b.is_numeric:
        return FLOAT
    return None


def groupable(t: Type) -> bool:
    """Whether rows can be grouped by values of this type (``per``, ``mix by``, ``stratified``)."""
    return t.name not in ("embedding", "list", "binary", "asset")


_ARTICLE = {
    "bool": "true/false", "int": "a whole number", "float": "a number",
    "str": "a string", "embedding": "an embedding", "asset": "an asset", "binary": "image bytes",
    "unknown": "a value of unknown type",
}


def describe(t: Type) -> str:
    """The type in words, with an article: 'a string', 'a list of strings'."""
    if t.name == "list":
        if t.item is None or t.item.is_unknown:
            return "a list"
        return f"a list of {describe_plural(t.item)}"
    return _ARTICLE.get(t.name, f"a {t.name}")


def describe_plural(t: Type) -> str:
    """The type in words, plural: 'strings', 'lists of strings'."""
    if t.name == "list":
        return "lists" if t.item is None or t.item.is_unknown else f"lists of {describe_plural(t.item)}"
    return {"str": "strings", "int": "whole numbers", "float": "numbers", "bool": "true/false values",
            "embedding": "embeddings", "asset": "assets", "binary": "images", "image": "image files"}.get(t.name, f"{t} values")


# --- what an argument expects --------------------------------------------------

#: Words a signature uses for an argument, and how they read to people.
EXPECTS: dict[str, str] = {
    "number": "a number",
    "int": "a whole number",
    "str": "text (a string)",
    "bool": "true/false (a condition)",
    "embedding": "an embedding",
    "image": "an image (image bytes, or an image column of file paths)",
    "sized": "text or a list",
    "key": "a value to compare exactly (not an embedding)",
    "column": "a column or `let` name",
    "any": "any value",
}


def accepts(expect: str, t: Type) -> bool:
    """Whether a value of type ``t`` may be passed where ``expect`` is expected."""
    if t.is_unknown or expect in ("any", "column"):
        return True
    if expect == "number":
        return t.is_numeric
    if expect == "int":
        return t == INT
    if expect == "str":
        return t == STR
    if expect == "bool":
        return t == BOOL
    if expect == "embedding":
        return t == EMBEDDING
    if expect == "image":
        return t in (BINARY, IMAGE)
    if expect == "sized":
        return t == STR or t.name == "list"
    if expect == "key":
        return t.name not in ("embedding", "asset")
    raise ValueError(f"unknown expectation {expect!r}")


def describe_expect(expect: str) -> str:
    return EXPECTS[expect]
