"""The package's import structure: the layers, no import cycles, no private names imported
across modules.

Every ``import`` and ``from ... import`` statement of every module of ``zoo`` counts, at
module level and inside functions alike (a lazy import still ties two modules together),
relative or absolute; ``from . import x`` where ``x`` is a submodule is an edge to ``x``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import zoo

PACKAGE_DIR = Path(zoo.__file__).resolve().parent
DESIGN_DOC = PACKAGE_DIR.parent / "docs" / "design.md"  # the layer table, "How zoo is built"


def module_files(package_dir: Path = PACKAGE_DIR, package: str = "zoo") -> dict[str, Path]:
    """{dotted module name: file} of every module of the package (``__init__`` as the
    package's own name)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules) -> str | None:
    """The longest prefix of the dotted ``name`` that is a module of the package."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, source: str, modules, is_package: bool = False):
    """Yield ``(target module, imported name or None, line)`` for every import of a package
    module in ``source``; the name is the one taken from the target by ``from t import name``
    (None for ``import t`` and for ``from . import submodule``)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, modules)
                if target is not None:
                    yield target, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            target = _resolve(base, modules)
            if target is None:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    yield sub, None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def import_graph(files: dict[str, Path]) -> dict[str, dict[str, int]]:
    """{module: {imported module: line of the first such import}} (self-imports left out)."""
    graph: dict[str, dict[str, int]] = {m: {} for m in files}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        for target, _, line in imports_of(module, path.read_text(), files, is_package):
            if target != module:
                graph[module][target] = min(line, graph[module].get(target, line))
    return graph


def find_cycles(graph: dict[str, dict | set]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one
    module; sorted, so the output is stable."""
    return sorted(_cycle_in(graph, set(c)) for c in components(graph))


def components(graph: dict[str, dict | set]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def _cycle_in(graph, component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    return [*paths[v], start]
                if w in component and w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def private_imports(files: dict[str, Path]) -> list[str]:
    """``module:line imports _name from other`` for each private name (one leading
    underscore, not a dunder) a module imports from another module of the package; and
    each private submodule imported from outside its package."""
    found = []
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        for target, name, line in imports_of(module, path.read_text(), files, is_package):
            if target == module:
                continue
            if name is not None and name.startswith("_") and not name.startswith("__"):
                found.append(f"{module}:{line} imports {name} from {target}")
            last = target.rpartition(".")[2]
            if name is None and last.startswith("_") and not last.startswith("__"):
                found.append(f"{module}:{line} imports private module {target}")
    return sorted(found, key=lambda f: (f.split(":")[0], int(f.split(":")[1].split()[0])))


# -- the layers ----------------------------------------------------------------------------------

#: zoo's layers, bottom up: (name, modules). A module imports only from its own layer or below;
#: an entry ``zoo.nn`` places the package and every module under it. The layer table of
#: docs/design.md ("How zoo is built") the same modules in the same layers (checked below).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("zoo.errors", "zoo.files", "zoo.readers", "zoo.options", "zoo.limits",
              "zoo.markup", "zoo.distributed", "zoo.progress",
              "zoo.runtime", "zoo.core", "zoo.nn")),
    ("data, models", ("zoo.dataspec", "zoo.data", "zoo.owndata", "zoo.images", "zoo.models")),
    ("registry, runs", ("zoo.registry", "zoo.runs", "zoo.sampling", "zoo.locks")),
    ("metrics", ("zoo.metrics",)),
    ("training", ("zoo.trainconfig", "zoo.trainloop", "zoo.logs", "zoo.card", "zoo.train")),
    ("harness", ("zoo.bench",)),
    ("decision", ("zoo.choose",)),
    ("api, CLI", ("zoo", "zoo.cli", "zoo.__main__")),
]


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index of the layer that places ``module`` (the longest matching entry), or None."""
    best, where = -1, None
    for i, (_, entries) in enumerate(layers):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best:
                best, where = len(entry), i
    return where


def upward_imports(graph: dict[str, dict[str, int]], layers=LAYERS) -> list[str]:
    """``module (layer) line L imports target (layer)`` for each import of a higher layer."""
    found = []
    for module, targets in sorted(graph.items()):
        own = layer_of(module, layers)
        for target, line in sorted(targets.items()):
            up = layer_of(target, layers)
            if own is not None and up is not None and up > own:
                found.append(f"{module} ({layers[own][0]}) line {line} imports {target} "
                             f"({layers[up][0]})")
    return found


def documented_layers(text: str) -> dict[str, set[str]]:
    """{layer name: modules} of docs/design.md's layer table (rows ``| layer | `a`, `b/` | ... |``,
    a module written as zoo sees it: `core`, `nn/`, `metrics/registry`)."""
    start = text.index("| layer | modules |")
    out = {}
    for row in text[start:].splitlines()[2:]:
        if not row.startswith("|"):
            break
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[1])
        out[cells[0]] = {"zoo" if n == "zoo" else "zoo." + n.strip("/").replace("/", ".")
                         for n in names}
    return out


# -- the checks on zoo ---------------------------------------------------------------------------


def test_every_zoo_module_has_a_layer():
    unplaced = [m for m in module_files() if layer_of(m) is None]
    assert not unplaced, f"modules in no layer of LAYERS: {unplaced}"


def test_zoo_imports_only_its_own_layer_or_below():
    found = upward_imports(import_graph(module_files()))
    assert not found, "imports up the layers:\n" + "\n".join(found)


def test_the_documented_layer_table_is_the_tests():
    table = documented_layers(DESIGN_DOC.read_text())
    assert list(table) == [name for name, _ in LAYERS], "docs/design.md's layer names or order"
    modules = module_files()
    for name, entries in LAYERS:
        unknown = table[name] - set(modules)
        assert not unknown, f"docs/design.md layer {name!r} names no module of zoo: {unknown}"
        assert {layer_of(m) for m in table[name]} == {LAYERS.index((name, entries))}, name
        for entry in entries:  # every entry of the test's layer is named in the table's row
            assert any(m == entry or m.startswith(entry + ".") for m in table[name]), (
                f"docs/design.md layer {name!r} lacks {entry}")


def test_an_upward_import_fails_the_layer_check(tmp_path):
    files = _fake_package(tmp_path, {
        "__init__.py": "",
        "low.py": "def f():\n    from .high import g\n    return g\n",
        "high.py": "from .low import f\n\ndef g():\n    pass\n",
        "mid/__init__.py": "",
        "mid/x.py": "from ..low import f\n",
    })
    layers = [("low", ("pkg.low", "pkg")), ("mid", ("pkg.mid",)), ("high", ("pkg.high",))]
    graph = import_graph(files)
    assert layer_of("pkg.mid.x", layers) == 1
    assert upward_imports(graph, layers) == ["pkg.low (low) line 2 imports pkg.high (high)"]
    # and on zoo: a lazy import of the CLI from core is found
    zoo_graph = import_graph(module_files())
    zoo_graph["zoo.core"] = {**zoo_graph["zoo.core"], "zoo.cli": 9}
    assert upward_imports(zoo_graph) == ["zoo.core (base) line 9 imports zoo.cli (api, CLI)"]




def test_zoo_has_no_import_cycles():
    files = module_files()
    assert {"zoo", "zoo.core", "zoo.train", "zoo.bench.report"} <= set(files)
    graph = import_graph(files)
    cycles = find_cycles(graph)
    lines = []
    for cycle in cycles:
        steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:], strict=False)]
        lines.append("cycle: " + "; ".join(steps))
    assert not cycles, "import cycles in zoo:\n" + "\n".join(lines)


def test_zoo_imports_no_private_names_across_modules():
    found = private_imports(module_files())
    assert not found, "private names imported across modules:\n" + "\n".join(found)


#: functions allowed past MAX_FUNCTION_LINES: tables of command-line arguments
LONG_TABLES = {("zoo.cli", "build_parser")}
MAX_FUNCTION_LINES = 80


def long_functions(files: dict[str, Path]) -> list[str]:
    """'module.function: N lines' for every function or method longer than the limit."""
    found = []
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and (module, node.name) not in LONG_TABLES:
                    found.append(f"{module}.{node.name}: {lines} lines")
    return found


def test_no_function_is_longer_than_80_lines():
    assert not long_functions(module_files()), long_functions(module_files())


def test_a_long_function_is_found(tmp_path):
    (tmp_path / "long.py").write_text("def f():\n" + "    x = 1\n" * 80)
    (tmp_path / "short.py").write_text("def g():\n" + "    x = 1\n" * 79)
    assert long_functions(module_files(tmp_path, "pkg")) == ["pkg.long.f: 81 lines"]


# -- the finder itself, on fake packages -----------------------------------------------------------


def test_find_cycles_on_small_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["d", "e", "d"]]
    # a component with a shortcut: the shortest cycle through its first module is shown
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": {"a"}}) == [["a", "c", "a"]]


def _fake_package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(root / "pkg", "pkg")


def test_graph_counts_lazy_relative_absolute_and_submodule_imports(tmp_path):
    files = _fake_package(tmp_path, {
        "__init__.py": "from .a import thing\n",
        "a.py": "from . import b\nthing = 1\n",
        "b.py": "def f():\n    from .sub.c import g\n    return g\n",
        "sub/__init__.py": "",
        "sub/c.py": "import pkg.a\nfrom .. import b as _b\n\ndef g():\n    pass\n",
        "d.py": "import os\nfrom pkg import sub\nfrom pkg.sub import c\n",
    })
    graph = import_graph(files)
    assert graph == {
        "pkg": {"pkg.a": 1},
        "pkg.a": {"pkg.b": 1},
        "pkg.b": {"pkg.sub.c": 2},
        "pkg.sub": {},
        "pkg.sub.c": {"pkg.a": 1, "pkg.b": 2},
        "pkg.d": {"pkg.sub": 2, "pkg.sub.c": 3},
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


def test_private_names_are_found(tmp_path):
    files = _fake_package(tmp_path, {
        "__init__.py": "__version__ = '1'\n",
        "a.py": "_ALIASES = {}\nPUBLIC = 1\n",
        "_hidden.py": "",
        "b.py": ("def f():\n    from .a import _ALIASES, PUBLIC\n"
                 "from . import __version__\nfrom . import _hidden\n"),
    })
    assert private_imports(files) == [
        "pkg.b:2 imports _ALIASES from pkg.a",
        "pkg.b:4 imports private module pkg._hidden",
    ]


def test_a_lazy_back_edge_in_zoo_would_be_found():
    """The check on zoo fails when a module low in the layers imports one above it, even
    inside a function."""
    files = module_files()
    graph = import_graph(files)
    back = imports_of("zoo.core", "def f():\n    from .train import load_run\n", files)
    graph["zoo.core"] = {**graph["zoo.core"], **{t: 2 for t, _, _ in back}}
    assert any({"zoo.core", "zoo.train"} <= set(c) for c in components(graph))
