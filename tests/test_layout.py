"""The package's shape: imports flow one way (no cycles), uld modules are imported at the top of
a module, and method names are read only by the METHODS table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "uld"


def _module(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(("uld", *parts)).removesuffix(".__init__")


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the uld modules it imports (anywhere in the file)."""
    modules = {_module(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in candidates if c in modules and c not in ("uld", name)}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_graph_sees_imports_inside_functions(tmp_path):
    (tmp_path / "x.py").write_text("def f():\n    from uld.y import g\n")
    (tmp_path / "y.py").write_text("from uld import x\n")
    graph = import_graph(tmp_path)
    assert graph == {"uld.x": {"uld.y"}, "uld.y": {"uld.x"}}
    assert find_cycle(graph) == ["uld.x", "uld.y", "uld.x"]


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"uld.cli", "uld.runs", "uld.methods", "uld.trainer"} <= set(graph)
    assert find_cycle(graph) is None
    # the layers: nothing below the orchestration imports it or the command line
    top = {"uld.__main__", "uld.cli", "uld.runs", "uld.compare", "uld.demo", "uld.serve"}
    for module, deps in graph.items():
        if module not in top:
            assert not deps & top, f"{module} imports {deps & top}"


def test_uld_modules_are_imported_at_the_top():
    """Function-local imports are for optional heavy dependencies only, never for uld's own
    modules (which would hide a cycle)."""
    local = []
    for path in SRC.rglob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uld"):
                        local.append(f"{path.name}:{node.lineno} {node.module}")
    assert local == []


# comparisons of a method name with a string, anywhere but the table
NAME_CHECK = re.compile(
    r"""method\s*(==|!=|in\s*\()|method\.(startswith|removeprefix|split|partition)"""
    r"""|["'](uoe\+|offset-)["']"""
)


@pytest.mark.parametrize(
    "line, found",
    [
        ('if cfg.method == "uld":', True),
        ('loss = cfg.method.removeprefix("offset-")', True),
        ('if self.method.startswith("uoe+"):', True),
        ("spec = method(cfg.method)", False),
        ("if spec.composite:", False),
    ],
)
def test_the_name_check_pattern(line, found):
    assert bool(NAME_CHECK.search(line)) is found


def test_method_names_are_read_only_by_the_methods_table():
    hits = [
        f"{path.name}:{i}: {line.strip()}"
        for path in SRC.rglob("*.py")
        if path.name != "methods.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if NAME_CHECK.search(line.split("#")[0])
    ]
    assert hits == []
    # the two names the report's efficiency defaults hold (config.py) are rows of the table
    from uld.config import TIME_BASELINE_METHOD, TIME_UNIT_METHOD
    from uld.methods import METHODS

    assert {TIME_UNIT_METHOD, TIME_BASELINE_METHOD} <= set(METHODS)
