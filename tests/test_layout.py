"""The package's imports run one way: no module imports itself back through others, whether the import runs as the
module loads or inside a function (an arrow that only runs when called is still an arrow); the statistics
(evaluate) never import the training engine; commands sit on top and config at the bottom."""

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


def import_graph(inside_functions: bool = True) -> dict[str, set[str]]:
    """runner module -> the runner modules it imports: everywhere in it (by default), or only in its module-level
    statements (what runs as it is imported)."""
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree) if inside_functions else tree.body:
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




def _reached(graph: dict[str, set[str]], module: str) -> set[str]:
    reached, todo = set(), [module]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in reached:
                reached.add(w)
                todo.append(w)
    return reached


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "runner.commands.train" in graph["runner.api"]  # api's _call imports it inside the function
    assert "runner.commands.train" not in import_graph(inside_functions=False)["runner.api"]


def test_no_module_imports_itself_back():
    graph = import_graph()
    assert len(graph) > 50 and "runner.models.fast" in graph["runner.models.module"]  # the graph is real
    assert cycles(graph) == []
    assert cycles(import_graph(inside_functions=False)) == []  # as the modules load, not even those


def test_statistics_never_import_the_engine_not_even_through_another_module():
    graph = import_graph()
    for module in graph:
        if module.startswith("runner.evaluate"):
            assert not {m for m in _reached(graph, module) if m.startswith("runner.engine")}, module


def test_commands_sit_on_top_and_config_at_the_bottom():
    """Nothing but a command (and runner.api, the commands' Python face) imports a command: a job's life cycle,
    the launchers and the pipeline are below them. The config layer imports only itself and runner's errors."""
    graph = import_graph()
    for module, imported in graph.items():
        if not module.startswith(("runner.commands", "runner.api")):
            assert not {m for m in imported if m.startswith("runner.commands")}, module
        if module.startswith("runner.config"):
            below = {m for m in imported if not m.startswith(("runner.config", "runner.errors", "runner.paths"))}
            assert not below, module
