"""The package's import structure: no import cycles, no private names imported across modules.

Every ``import`` and ``from ... import`` statement of every module of ``zoo`` counts, at
module level and inside functions alike (a lazy import still ties two modules together),
relative or absolute; ``from . import x`` where ``x`` is a submodule is an edge to ``x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import zoo

PACKAGE_DIR = Path(zoo.__file__).resolve().parent


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


# -- the checks on zoo ---------------------------------------------------------------------------


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
