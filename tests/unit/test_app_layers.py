"""The MONAI Label app (apps/stran) is layered: no module imports one that imports it back (docs/server.md "Files").

The imports are read from the source with ``ast``, those under ``TYPE_CHECKING`` and inside functions included.
Importing ``lib.a.b`` also runs the package ``lib.a``, so it counts as importing ``lib.a`` too (unless the
importer lies inside ``lib.a``: a package's own modules run while it is being initialised).
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "apps" / "stran"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the app's modules it imports, for ``main.py`` and every module under ``lib``."""
    files = {module_name(p, root): p for p in [root / "main.py", *sorted((root / "lib").rglob("*.py"))]}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                source = ".".join(part for part in (base, node.module) if part)
                targets.add(source)
                targets.update(f"{source}.{alias.name}" for alias in node.names)
        edges = set()
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                ancestor = ".".join(parts[:i])
                if ancestor in files and ancestor != name and not name.startswith(f"{ancestor}."):
                    edges.add(ancestor)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph is acyclic."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return []
        path.append(node)
        for target in sorted(graph[node]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return []


def test_the_graph_sees_the_app_imports() -> None:
    graph = import_graph(APP)
    assert {"lib.configs", "lib.routes", "lib.dicom_import"} <= graph["main"]
    assert {"lib.infers", "lib.trainers"} <= graph["lib.configs.scar"]
    assert "lib.scoring.uncertainty" in graph["lib.scoring"]  # from .uncertainty import ...
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_app_imports_only_downward() -> None:
    cycle = find_cycle(import_graph(APP))
    assert not cycle, "import cycle in apps/stran: " + " -> ".join(cycle)
