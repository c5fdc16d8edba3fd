"""The shape of the code: the host never reaches up into the plugins, and agent/ has no
import cycles even counting the imports for annotations only (``if TYPE_CHECKING:``),
which tests/test_imports.py leaves out."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.venvs import REPO

AGENT = REPO / "agent"


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    where = REPO.joinpath(*dotted.split("."))
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import stands."""
    found: set[str] = set()
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:  # a submodule by its own name, else the module
                name = f"{base}.{alias.name}"
                found.add(name if _is_module(name) else base)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in AGENT.rglob("*.py")}

    def own(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = {own(i) for i in _imports(path)}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def test_agent_never_imports_plugins() -> None:
    offenders = sorted(f"{p.relative_to(REPO)} imports {i}" for p in AGENT.rglob("*.py")
                       for i in _imports(p) if i == "plugins" or i.startswith("plugins."))
    assert not offenders, ("the host reaches into the builtin plugins; offer it through the "
                           f"plugin interface (Platform, a hook) instead: {offenders}")


def test_no_import_cycles_in_agent_even_for_annotations() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles in agent/: " + "; ".join(" -> ".join(c) for c in cycles)
