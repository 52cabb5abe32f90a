"""The import ladder: each layer imports only the layers below it, and no modules import each other in a circle.

Read from the source with ``ast``: every ``import`` and ``from ... import`` of a
cbdsl module, at module level, inside ``if TYPE_CHECKING:`` or inside a
function. A failure names the edge. README "Layout" shows the same ladder.

A module that imports by name, from a table of strings, declares the table in
:data:`LAZY_TABLES`: each ``"module:attribute"`` string (or ``(module,
attribute)`` pair) of that module-level constant counts as an import of the
module at the table's line, at module level. :data:`cbdsl.cli.COMMANDS` is one:
the click group imports a command's module only when the command runs.

An import inside a function is allowed only to keep a heavy library off a fast
path (torch and friends off the registry, Polars off ``cbdsl check``); each says
so in a comment on its line or the line above, and there are at most
:data:`MAX_FUNCTION_IMPORTS` of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"tests", "examples", "build", "demo-sandbox", "demo-it-sandbox", "scripts", "recipes"}

#: Bottom to top. A module may import its own package (one entry of a row) and every row below;
#: the entries of one row do not import each other.
LADDER: tuple[tuple[str, ...], ...] = (
    ("cbdsl.version", "cbdsl.home", "cbdsl.process", "cbdsl.grammar", "cbdsl.pipelines"),
    ("cbdsl.dsl", "cbdsl.pipelines.engine.kernels"),
    ("cbdsl.compiler",),
    ("cbdsl.pipelines.data",),
    ("cbdsl.scorers",),
    ("cbdsl.scaffolds",),
    ("cbdsl.stages",),
    ("cbdsl.pipelines.engine",),
    ("cbdsl.pipelines.loop",),
    ("cbdsl.research",),
    ("cbdsl.harness",),
    ("cbdsl.commands",),
    ("cbdsl.cli",),
    ("cbdsl.entry",),  # the console script: `check FILE...` itself, everything else through the click group
    ("cbdsl.__main__", "cbdsl"),
)

#: Packages whose entry on the ladder is their ``__init__`` alone, not the modules below them.
ONLY_ITSELF = frozenset({"cbdsl", "cbdsl.pipelines"})

#: Module -> the name of its module-level table of lazy imports ("module:attribute" strings or
#: (module, attribute) pairs), read as that module's imports.
LAZY_TABLES = {"cbdsl.cli": "COMMANDS", "cbdsl": "_EXPORTS"}

MAX_FUNCTION_IMPORTS = 40


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["cbdsl", *parts]) if parts else "cbdsl"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP or any(p.startswith(".") for p in rel.parts) or path.name == "lark_tables.py":
            continue
        found[module_name(path)] = path
    return found


MODULES = modules()


def place(module: str) -> tuple[int, str]:
    """(row, entry) of the ladder a module belongs to: the longest entry that is it or a package above it
    (an entry of :data:`ONLY_ITSELF` holds only its ``__init__``: a new folder must be given its row)."""
    best = None
    for row, entries in enumerate(LADDER):
        for entry in entries:
            inside = module == entry or (entry not in ONLY_ITSELF and module.startswith(entry + "."))
            if inside and (best is None or len(entry) > len(best[1])):
                best = (row, entry)
    assert best is not None, f"{module} is on no row of the ladder: add its package to LADDER and README's layout"
    return best


def target(name: str) -> str | None:
    """The cbdsl module an imported name lives in (``cbdsl.dsl.ast.Span`` -> ``cbdsl.dsl.ast``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, inside a function, the source line and the one above) of each cbdsl import."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([child.module] if child.module else []))
                names = [f"{base}.{a.name}" for a in child.names] + [base]
            targets = {target(n) for n in names if n == "cbdsl" or n.startswith("cbdsl.")} - {None, module}
            if isinstance(child, ast.ImportFrom) and len(targets) > 1:
                targets.discard(target(base))  # `from cbdsl.pkg import mod`: the edge is to mod, not to pkg
            context = "\n".join(lines[max(child.lineno - 2, 0): child.lineno]) if targets else ""
            found.extend((t, child.lineno, in_function, context) for t in sorted(targets))
            visit(child, inside)

    visit(tree, False)
    found.extend(lazy_imports(module, tree))
    return found


def lazy_imports(module: str, tree: ast.Module) -> list[tuple[str, int, bool, str]]:
    """The entries of ``module``'s table in :data:`LAZY_TABLES` as module-level imports (module, line, False, "")."""
    table = LAZY_TABLES.get(module)
    if table is None:
        return []
    values = [node.value for node in tree.body
              if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == table for t in node.targets)
              or isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == table]
    assert len(values) == 1 and isinstance(values[0], ast.Dict), f"{module} has no dict literal {table} at module level"
    found = []
    for value in values[0].values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            name = value.value.partition(":")[0]
        elif isinstance(value, ast.Tuple) and value.elts and isinstance(value.elts[0], ast.Constant):
            name = value.elts[0].value
        else:
            raise AssertionError(f"{module}.{table}, line {value.lineno}: not a \"module:attribute\" string")
        assert name in MODULES, f"{module}.{table}, line {value.lineno}: no module {name}"
        found.append((name, value.lineno, False, ""))
    return found


EDGES = {m: imports(m, p) for m, p in MODULES.items()}


def test_every_module_is_on_the_ladder():
    for m in MODULES:
        place(m)


def test_no_import_runs_up_the_ladder():
    wrong = []
    for m, edges in EDGES.items():
        row, entry = place(m)
        for t, line, _fn, _ctx in edges:
            t_row, t_entry = place(t)
            if t_row > row or (t_row == row and t_entry != entry):
                wrong.append(f"{MODULES[m].relative_to(ROOT)}:{line}: {m} imports {t}, "
                             f"which is {'above it' if t_row > row else 'beside it'} on the ladder")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {m: sorted({t for t, *_ in edges}) for m, edges in EDGES.items()}
    cycles, index, low, stack, on, counter = [], {}, {}, [], set(), [0]

    def connect(v):  # Tarjan's strongly connected components, iterative
        work = [(v, iter(graph[v]))]
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        while work:
            node, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        w = stack.pop(); on.discard(w); group.append(w)
                        if w == node:
                            break
                    if len(group) > 1:
                        cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            connect(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_function_level_imports_keep_a_heavy_library_off_a_fast_path():
    local = [(m, t, line, ctx) for m, edges in EDGES.items() for t, line, fn, ctx in edges if fn]
    unexplained = [f"{MODULES[m].relative_to(ROOT)}:{line}: {m} imports {t} inside a function without a "
                   "comment saying which heavy library it keeps off which path" for m, t, line, ctx in local
                   if "#" not in ctx]
    assert not unexplained, "\n".join(unexplained)
    assert len(local) <= MAX_FUNCTION_IMPORTS, (
        f"{len(local)} imports of cbdsl modules inside functions (at most {MAX_FUNCTION_IMPORTS}):\n"
        + "\n".join(f"{MODULES[m].relative_to(ROOT)}:{line}: {t}" for m, t, line, _ in local))


@pytest.mark.parametrize("package", ["cbdsl.dsl", "cbdsl.pipelines.engine.kernels"])
def test_the_bottom_imports_nothing_of_cbdsl_above_it(package):
    outside = [f"{m} imports {t}" for m, edges in EDGES.items() if m == package or m.startswith(package + ".")
               for t, *_ in edges if not (t == package or t.startswith(package + "."))]
    assert not outside, "\n".join(outside)


def test_no_module_imports_another_modules_private_name():
    """A name that starts with `_` is its module's own: what two modules share is public, with a docstring."""
    private = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cbdsl"):
                private += [f"{path.relative_to(ROOT)}:{node.lineno}: {m} imports {node.module}.{a.name}"
                            for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert not private, "\n".join(private)
