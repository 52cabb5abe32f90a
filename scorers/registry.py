"""The registry: every callable a policy can name, registered where it is defined.

Entries (:class:`~cbdsl.compiler.signatures.Entry`) are registered one decorator per callable::

    @scorer("words", inputs=[Input("text", "str")], output="int")
    def words(ctx, text):
        '''Number of whitespace-separated words.'''
        return text.str.count_matches(r"\\S+")

The registry fills lazily: :func:`registry` imports the builtin modules on
first use. Lowering functions import Polars inside their body, never at
module top, so ``cbdsl check`` stays free of Polars, NumPy and the model
libraries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from cbdsl.compiler.signatures import CostClass, Entry, Input, Kind, LowerContext, OutputSpec, Params, Registry

__all__ = ["Entry", "Input", "LowerContext", "Params", "Registry", "dedup_method", "function", "model_scorer",
           "register", "registry", "scorer", "statistic", "strategy"]

#: The modules whose import registers the builtin entries.
BUILTIN_MODULES: tuple[str, ...] = (
    "cbdsl.scorers.metadata",
    "cbdsl.scorers.functions",
    "cbdsl.scorers.selection",
    "cbdsl.scorers.dedup",
)


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
        _REGISTRY._complete = lambda: [importlib.import_module(m) for m in _discovered()]
    return _REGISTRY


def _discovered() -> list[str]:
    """Every other module of ``cbdsl.scorers`` is a scorer module (one file per scorer or family).

    Shared model code lives in the subpackage ``cbdsl.scorers.models``, which is not scanned.
    Scorer modules import torch and friends inside their functions, so this stays cheap.
    """
    import pkgutil

    import cbdsl.scorers as package

    skip = {"registry", *(m.rsplit(".", 1)[1] for m in BUILTIN_MODULES)}
    return [f"cbdsl.scorers.{m.name}" for m in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name)
            if not m.ispkg and not m.name.startswith("_") and m.name not in skip]


def _registering(kind: Kind, role: str, **fields: Any) -> Callable[[Callable], Callable]:
    """A decorator that registers the function as the entry's ``role`` (``lower`` or ``compute``)."""

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


scorer = _decorator("scorer")
function = _decorator("function")
statistic = _decorator("statistic")
strategy = _decorator("select")
dedup_method = _decorator("dedup")
