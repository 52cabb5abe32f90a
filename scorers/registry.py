"""The registry: every callable a policy can name, registered where it is defined.

Entries (:class:`~cbdsl.compiler.signatures.Entry`) are registered one decorator per callable::

    @scorer("words", inputs=[Input("text", "str")], output="int")
    def words(ctx, text):
        '''Number of whitespace-separated words.'''
        return text.str.count_matches(r"\\S+")

A dedup method or a select strategy is one module of ``cbdsl.scorers.dedup``
or ``cbdsl.scorers.select``, named by its id, whose run-time function is
registered with its signature::

    @strategy("random", params=SeedParams, method="random")
    def random(ctx: SelectContext):
        '''A uniform random sample without replacement.'''
        ...

The registry fills lazily: :func:`registry` imports the builtin modules on
first use; a lookup that misses imports the module named by the id in the
select or dedup package, then, if still missing, every other scorer module.
Lowering and run functions import Polars inside their body, never at module
top, so ``cbdsl check`` stays free of Polars, NumPy and the model libraries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any, Literal

from cbdsl.compiler.signatures import CostClass, Entry, Input, Kind, LowerContext, OutputSpec, Params, Registry
from cbdsl.compiler.types import UNKNOWN

__all__ = ["Entry", "Input", "LowerContext", "Params", "Registry", "dedup_method", "function", "model_scorer",
           "register", "registry", "scorer", "statistic", "strategy"]

#: The modules whose import registers the builtin entries.
BUILTIN_MODULES: tuple[str, ...] = (
    "cbdsl.scorers.metadata",
    "cbdsl.scorers.functions",
)

#: Where the select strategies and the dedup methods live: one module per id, named by it
#: (``cbdsl.scorers.select.kcenter``), imported the first time a policy names it.
PACKAGES: dict[str, str] = {
    "select": "cbdsl.scorers.select",
    "dedup": "cbdsl.scorers.dedup",
}


_REGISTRY = Registry()
_loaded = False


def register(entry: Entry) -> Entry:
    """Add one entry to the process-wide registry (what the decorators call)."""
    return _REGISTRY.add(entry)


def registry() -> Registry:
    """The registry with every builtin entry (imports the builtin modules on first call)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _REGISTRY._find = _find
        _REGISTRY._complete = lambda: [importlib.import_module(m) for m in _discovered()]
    return _REGISTRY


def _find(id: str, space: str) -> None:
    """Import the module of the select strategy or dedup method ``id`` (``cbdsl.scorers.select.<id>``), if any."""
    package = PACKAGES.get(space)
    if package is None or not id.isidentifier() or id.startswith("_"):
        return
    try:
        importlib.import_module(f"{package}.{id}")
    except ModuleNotFoundError as err:
        if err.name != f"{package}.{id}":  # the module exists but fails to import: say so
            raise


def _discovered() -> list[str]:
    """Every other module of ``cbdsl.scorers`` is a scorer module (one file per scorer or family), and
    every module of the select and dedup packages is a strategy or a dedup method.

    Shared model code lives in the subpackage ``cbdsl.scorers.models``, which is not scanned.
    Scorer modules import torch and friends inside their functions, so this stays cheap.
    """
    skip = {"api", "registry", *(m.rsplit(".", 1)[1] for m in BUILTIN_MODULES)}
    scorers = [m for m in _modules("cbdsl.scorers") if m.rsplit(".", 1)[1] not in skip]
    return [*scorers, *(m for package in PACKAGES.values() for m in _modules(package))]


def _modules(package: str) -> list[str]:
    """The modules of ``package`` (not its subpackages, not ``_private`` ones), sorted by name."""
    import pkgutil  # ~0.5 ms, paid once per process

    path = importlib.import_module(package).__path__
    return [f"{package}.{m.name}" for m in sorted(pkgutil.iter_modules(path), key=lambda m: m.name)
            if not m.ispkg and not m.name.startswith("_")]


def _registering(kind: Kind, role: str, **fields: Any) -> Callable[[Callable], Callable]:
    """A decorator that registers the function as the entry's ``role`` (``lower``, ``compute`` or ``run``)."""

    def wrap(fn: Callable) -> Callable:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        fields["inputs"] = tuple(fields.get("inputs", ()))
        register(Entry(kind=kind, summary=summary, **{role: fn}, **fields))
        return fn

    return wrap


def _decorator(kind: Kind) -> Callable[..., Callable[[Callable], Callable]]:
    def make(id: str, *, inputs: Iterable[Input] = (), params: type[Params] = Params, output: OutputSpec = "float",
             cost: CostClass = "metadata", method: str | None = None) -> Callable[[Callable], Callable]:
        return _registering(kind, "lower", id=id, inputs=inputs, params=params, output=output, cost=cost,
                            method=method)

    make.__doc__ = f"Register the decorated lowering function as a {kind}."
    return make


def model_scorer(id: str, *, inputs: Iterable[Input] = (), params: type[Params] = Params, output: OutputSpec = "float",
                 cost: CostClass = "cpu_model", method: str | None = None, population: bool = False,
                 version: Callable[..., str] | None = None) -> Callable[[Callable], Callable]:
    """Register the decorated batch function as a model scorer (see :attr:`Entry.compute`)."""
    return _registering("scorer", "compute", id=id, inputs=inputs, params=params, output=output, cost=cost,
                        method=method, population=population, version=version)


def strategy(id: str, *, inputs: Iterable[Input] = (), params: type[Params] = Params, cost: CostClass = "metadata",
             method: str | None = None, prefers: Literal["high", "low"] | None = None) -> Callable[[Callable], Callable]:
    """Register the decorated function as the ``run`` of the select strategy ``id`` (see
    :class:`~cbdsl.scorers.api.SelectContext`); ``prefers``: see :attr:`Entry.prefers`."""
    return _registering("select", "run", id=id, inputs=inputs, params=params, output=UNKNOWN, cost=cost,
                        method=method, prefers=prefers)


def dedup_method(id: str, *, inputs: Iterable[Input] = (), params: type[Params] = Params,
                 cost: CostClass = "metadata", method: str | None = None,
                 bands: Callable[..., list[Any]] | None = None) -> Callable[[Callable], Callable]:
    """Register the decorated function as the ``run`` of the dedup method ``id`` (see
    :class:`~cbdsl.scorers.api.DedupContext`); ``bands``: see :attr:`Entry.bands`."""
    return _registering("dedup", "run", id=id, inputs=inputs, params=params, output=UNKNOWN, cost=cost,
                        method=method, bands=bands)


def statistic(id: str, *, inputs: Iterable[Input] = (), params: type[Params] = Params, output: OutputSpec = "float",
              aggregate: Callable[..., dict[str, Any]] | None = None) -> Callable[[Callable], Callable]:
    """Register the decorated lowering function as a statistic; ``aggregate``: see :attr:`Entry.aggregate`."""
    return _registering("statistic", "lower", id=id, inputs=inputs, params=params, output=output,
                        aggregate=aggregate)


scorer = _decorator("scorer")
function = _decorator("function")
