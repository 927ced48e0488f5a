"""The shape of the tree: which module imports which (every import, also those inside functions)."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("methods", "evaluation")


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source (``from a.b import c`` counts
    a.b.c when that is a module, else a.b)."""
    files = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1 packages
                    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" for a in node.names]
                hits = [n for n in names if n in files]
                deps.update(hits or ([base] if base in files else []))
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in files)
        graph[mod] = deps - {mod, *[m for m in deps if mod.startswith(m + ".") or m in PACKAGES]}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's smallest rotation, found by depth-first search from each module."""
    found = set()

    def walk(start, node, path):
        for nxt in graph.get(node, ()):
            if nxt == start:
                cyc = path[:]
                i = cyc.index(min(cyc))
                found.add(tuple(cyc[i:] + cyc[:i]))
            elif nxt not in path and nxt > start:
                walk(start, nxt, path + [nxt])

    for m in sorted(graph):
        walk(m, m, [m])
    return [list(c) for c in sorted(found)]


def test_relative_imports_are_read():
    graph = import_graph()
    assert "methods.core.io" in graph["methods.core.models"]  # `from .io import ...`


def test_cycle_finder_finds_a_known_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_methods_do_not_import_each_other():
    """Training methods share code through methods.core only (the registry and the CLI load them)."""
    from methods.registry import METHODS

    modules = {m.module for m in METHODS.values()} | {"methods.reward_model"}
    graph = import_graph()
    crossing = {m: sorted(graph[m] & modules) for m in modules if graph[m] & modules}
    assert crossing == {}
