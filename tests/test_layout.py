"""The package's imports run one way: no module imports itself back through others at import time, and the
statistics (evaluate) never import the training engine."""

import ast
from pathlib import Path

import runner

ROOT = Path(runner.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["runner", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """runner module -> the runner modules it imports at import time (module-level statements only: an import
    inside a function runs when it is called, after every module has loaded)."""
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name.startswith("runner")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                if not base.startswith("runner"):
                    continue
                for alias in node.names:  # `from runner.models import fast` imports the module runner.models.fast
                    edges.add(f"{base}.{alias.name}" if _exists(f"{base}.{alias.name}") else base)
        graph[name] = {e for e in edges if e != name and _exists(e)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back():
    graph = import_graph()
    assert len(graph) > 50 and "runner.models.fast" in graph["runner.models.module"]  # the graph is real
    assert cycles(graph) == []


def test_statistics_never_import_the_engine_not_even_through_another_module():
    graph = import_graph()
    for module in graph:
        if module.startswith("runner.evaluate"):
            reached, todo = set(), [module]
            while todo:
                for w in graph.get(todo.pop(), ()):
                    if w not in reached:
                        reached.add(w)
                        todo.append(w)
            assert not {m for m in reached if m.startswith("runner.engine")}, module
