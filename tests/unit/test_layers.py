"""The package's layers, checked from the source: no import cycle, and each layer imports
only the layers below it (``docs/architecture.md`` draws the same picture).

Imports inside ``if TYPE_CHECKING:`` are for type hints only and never run, so they are left
out of the graph; imports inside functions (deferred on purpose) count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "chatmem"

# Lowest first. A module may import modules of its own layer or of a lower one, never of a
# higher one. Every module of the package must be listed (a new one must be placed).
LAYERS: list[set[str]] = [
    {"chatmem.errors", "chatmem.events", "chatmem.text", "chatmem.redact", "chatmem.framing"},
    {"chatmem.tokens", "chatmem.store"},
    {"chatmem.config", "chatmem.memory", "chatmem.adaptive", "chatmem.request", "chatmem.facts"},
    {
        "chatmem.servers",
        "chatmem.replies",
        "chatmem.prompting",
        "chatmem.local",
        "chatmem.models",
        "chatmem.summarize",
        "chatmem.embeddings",
    },
    {"chatmem.recall"},
    {
        "chatmem.factory",
        "chatmem.journal",
        "chatmem.inspection",
        "chatmem.marks",
        "chatmem.diffs",
        "chatmem.sync",
        "chatmem.folding",
        "chatmem.corrections",
    },
    {"chatmem.session"},
    {"chatmem.replay", "chatmem.sample_conversation", "chatmem.cli", "chatmem"},
    {"chatmem.__main__", "chatmem.ui"},
]
LEAVES = LAYERS[0]  # import nothing from chatmem


def _unit(module: str) -> str:
    """The layer unit a module belongs to: subpackages (store, ui) count as one."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in ("store", "ui"):
        return ".".join(parts[:2])
    return module


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against this package
                base = module.split(".")[: -node.level or None]
                found.add(".".join([*base, node.module]))
            else:
                # "from pkg import mod" needs pkg.mod; "from mod import name" needs mod
                found.update(f"{node.module}.{a.name}" for a in node.names)
                found.add(f"{node.module}:")
    return found


def graph() -> dict[str, set[str]]:
    """module -> the chatmem modules it imports when it runs."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = _runtime_imports(path, name)
        targets = {t for t in found if t in modules}
        for entry in (f for f in found if f.endswith(":")):
            base = entry[:-1]
            if base in modules and not any(t.startswith(base + ".") for t in targets):
                targets.add(base)
        edges[name] = {t for t in targets if t != name}
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle() -> None:
    assert _cycle(graph()) is None, f"import cycle: {' -> '.join(_cycle(graph()) or [])}"


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    assert {_unit(m) for m in graph()} <= placed


@pytest.mark.parametrize("module", sorted(graph()))
def test_imports_go_down_the_layers(module: str) -> None:
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    mine = rank[_unit(module)]
    for target in graph()[module]:
        if _unit(target) == _unit(module):
            continue  # inside one subpackage
        assert rank[_unit(target)] <= mine, f"{module} (layer {mine}) imports {target}"
        if _unit(module) in LEAVES:
            pytest.fail(f"{module} must import nothing from chatmem, but imports {target}")


def test_only_the_ui_imports_streamlit() -> None:
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        uses = any(i.split(".")[0].rstrip(":") == "streamlit" for i in _runtime_imports(path, name))
        assert uses == name.startswith("chatmem.ui") or not uses, name
