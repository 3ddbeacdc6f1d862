"""The shape of the house, read from the source with ``ast``: no import cycle, and the one-way doors between rooms."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("recovery", "components")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {_module_name(path): path for package in PRODUCT for path in (ROOT / package).rglob("*.py")}
    found["app"] = ROOT / "app.py"
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module an import statement of ``tree`` loads, at any depth (functions included), except under
    ``if TYPE_CHECKING:`` (not run) and ``if __name__ == "__main__":`` (a script's entry point)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and (_is_type_checking(node.test) or _is_main_guard(node.test)):
            yield from (name for child in node.orelse for name in _imports(child, module, is_package))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in MODULES else base
        yield from _imports(node, module, is_package)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[module] = {name for name in _imports(tree, module, path.name == "__init__.py") if name in MODULES}
        graph[module].discard(module)
    return graph


GRAPH = _graph()


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that ends where it starts), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check below can fail: a graph with a loop through three modules is reported with that loop."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_product_has_no_import_cycle() -> None:
    """No module of recovery/, components/ or app.py imports itself back through others."""
    assert _cycle(GRAPH) is None, " → ".join(_cycle(GRAPH) or ())


def test_the_graph_sees_the_imports() -> None:
    """The graph is read for real: the service imports the worker, and the app imports the service."""
    assert "components.generation.worker" in GRAPH["components.service"]
    assert "components" in GRAPH["app"]


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("recovery")))
def test_recovery_imports_neither_torch_gradio_nor_components(module: str) -> None:
    """recovery/ is generic: no torch, diffusers, gradio, ray or components anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text())
    loaded = set(_imports(tree, module, MODULES[module].name == "__init__.py"))
    forbidden = {name for name in loaded if name.split(".")[0] in {"torch", "diffusers", "gradio", "ray", "components"}}
    assert not forbidden, f"{module} imports {sorted(forbidden)}"


def test_only_the_fault_harness_imports_the_loopback_hub() -> None:
    """The loopback hub is test and demo equipment: no module outside components/chaos/ imports it."""
    importers = {module for module, targets in GRAPH.items() if "components.chaos.loopback_hub" in targets}
    assert importers and all(module.startswith("components.chaos") for module in importers), sorted(importers)


def test_no_product_module_imports_the_fault_harness() -> None:
    """Nothing in components/ outside components/chaos/ imports the harness (the app's Scenarios tab may)."""
    importers = {
        module
        for module, targets in GRAPH.items()
        if any(t == "components.chaos" or t.startswith("components.chaos.") for t in targets)
        and not module.startswith("components.chaos")
    }
    assert importers == {"app"}, sorted(importers)


def test_components_top_level_holds_only_wiring() -> None:
    """The sub-systems live in sub-packages; at the top only what wires them (and the two front-ends)."""
    top = sorted(path.stem for path in (ROOT / "components").glob("*.py") if path.stem != "__init__")
    assert top == ["http_api", "journal", "notebook", "service", "settings", "wiring"]


@pytest.mark.parametrize("package", sorted(name for name, path in MODULES.items() if path.name == "__init__.py"))
def test_package_inits_define_nothing(package: str) -> None:
    """Each package's ``__init__`` re-exports names in ``__all__`` and defines nothing of its own."""
    tree = ast.parse(MODULES[package].read_text())
    defined = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    assert not defined, [node.name for node in defined]
