"""No import cycles in ``agent/``: the modules form a graph whose arrows all run one way.

Every import counts, also one inside a function (a lazy import still ties the two
modules together), except those under ``if TYPE_CHECKING:`` (annotations only). The
few arrows still being taken apart are listed in ``KNOWN``; a new cycle fails this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parent.parent / "agent"

#: Arrows that still run the wrong way (each a lazy import from a lower layer up); each
#: closes a cycle being taken apart elsewhere in issue 12:
#: config checking [[notifiers]] through notify, and the dashboard address through web
#: (item 1, notifiers through the hooks); the dashboard's modules importing their own
#: package's __init__. Remove an entry when its import is gone; never add one.
KNOWN = {
    ("agent.config", "agent.notify"),
    ("agent.config", "agent.web"),
    ("agent.web.app", "agent.web"),
    ("agent.web.pages", "agent.web"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(AGENT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The ``agent`` modules ``path`` imports at run time (lazy imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(node) for top in ast.walk(tree) if isinstance(top, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(top.test)
                   for stmt in top.body for node in ast.walk(stmt)}
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [_longest(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            targets = targets or [_longest(base, modules)]  # names from a module
        else:
            continue
        found |= {t for t in targets if t and t != name}
    return found


def _longest(name: str, modules: set[str]) -> str:
    """The longest prefix of ``name`` that is a module of ours ("" if none)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def agent_graph() -> dict[str, set[str]]:
    files = sorted(AGENT.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): runtime_imports(f, modules) for f in files}


def test_no_new_import_cycles_in_agent():
    graph = {m: {t for t in targets if (m, t) not in KNOWN} for m, targets in agent_graph().items()}
    found = cycles(graph)
    assert not found, f"import cycles: {[sorted(c) for c in found]}"


def test_the_command_line_package_is_a_tree():
    graph = agent_graph()
    cli = {m for m in graph if m == "agent.cli" or m.startswith("agent.cli.")}
    assert {"agent.cli.root", "agent.cli.app", "agent.cli.output"} <= cli
    assert not any(c & cli for c in cycles(graph))
    assert not any("agent.cli" in graph[m] for m in cli - {"agent.cli.root"})  # no reaching back
    outside = {m for m in graph if m not in cli and graph[m] & cli}
    assert outside <= {"agent.__main__", "agent.web.filters"}  # the entry point, the dashboard


def test_the_finder_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
