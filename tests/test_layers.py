"""The layout's rules, checked on the source: imports only go down, nothing imports a command module, nothing
imports another module's private names. README, "Where things are", draws the same picture."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
# bottom to top: a package may import itself and the packages before it, never one after it
LAYERS = ["common", "pipeline", "trainer", "inference", "evaluation", "reconstruct", "experiments", "aps"]
COMMANDS = {"pipeline.cli", "trainer.cli", "inference.cli", "evaluation.cli", "reconstruct.cli", "aps.cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import in a file, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return found


def test_every_package_of_the_layout_exists():
    assert all((ROOT / p / "__init__.py").is_file() for p in LAYERS)


def test_imports_only_go_down():
    wrong = []
    for name, path in _modules().items():
        mine = LAYERS.index(name.split(".")[0])
        for module, _, line in _imports(path):
            top = module.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > mine:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, wrong


def test_nothing_imports_a_command_module_but_the_console_script():
    wrong = []
    for name, path in _modules().items():
        for module, names, line in _imports(path):
            targets = {module} | {f"{module}.{n}" for n in names}
            if name.split(".")[0] != "aps" and targets & COMMANDS:  # aps/cli.py and `python -m aps` wire them
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {sorted(targets & COMMANDS)}")
    assert not wrong, wrong


def test_no_private_names_cross_modules():
    wrong = []
    modules = _modules()
    for name, path in modules.items():
        for module, names, line in _imports(path):
            if module in modules and module != name:
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {private} from {module}")
    assert not wrong, wrong


def _module_graph() -> dict[str, set[str]]:
    """module -> the modules of this project its file imports, function-level imports included. `from a import b`
    is an edge to `a.b` when that is a module, else to `a`; an edge goes to the file named, not to the packages
    above it (a package's __init__ that re-exports its modules is a facade, not a cycle)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for module, names, _ in _imports(path):
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            edges |= set(subs) if subs and len(subs) == len(names) else set(subs) | ({module} & modules.keys())
        graph[name] = edges - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
            visit(v)
    return found


def test_no_file_level_import_cycle():
    # an import inside a function counts: it hides a cycle rather than removing it
    assert not _cycles(_module_graph())


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert not _cycles({"a": {"b"}, "b": set()})
