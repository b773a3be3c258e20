"""The package's layers and layout: no import cycle, the library never imports the command line or the experiments,
a Config touches no JAX backend, and docs/library.md's layout table lists every module with its tests."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "aejax"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the aejax modules it imports anywhere in its file (lazy imports inside functions count)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from aejax.training import loop` names a module; `from aejax.x import y` x
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in modules else node.module)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_in_aejax():
    graph = import_graph()
    assert {"aejax.training.step", "aejax.training.loop", "aejax.cli", "aejax.config"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_library_never_imports_the_command_line_or_the_experiments():
    graph = import_graph()
    importers = sorted(m for m, edges in graph.items() if "aejax.cli" in edges)
    assert importers == ["aejax.codec.__main__", "aejax.train"]  # the command-line entry points only
    assert not any(m.endswith("__main__") for edges in graph.values() for m in edges)
    for path in PACKAGE.rglob("*.py"):
        imported = {getattr(n, "module", None) or "" for n in ast.walk(ast.parse(path.read_text()))
                    if isinstance(n, ast.ImportFrom)}
        assert not any(m.split(".")[0] == "experiments" for m in imported), path


@pytest.mark.slow  # fresh processes; CI runs it (`pytest -m slow`)
def test_building_every_study_and_paper_config_initialises_no_backend():
    """Configs are plain data: importing the presets and resolving them against the registries leaves JAX's
    backends untouched (on a GPU machine a backend takes most of its memory at start)."""
    code = ("import jax._src.xla_bridge as xb\n"
            "from aejax import models\n"
            "from aejax.configs import paper_2006, study\n"
            "configs = [a.config for a in study.ARMS.values()] + list(study.CONV_CANDIDATES.values())\n"
            "configs += list(paper_2006.VARIANTS.values()) + [paper_2006.PAPER]\n"
            "resolved = [models.resolve(c) for c in configs]\n"
            "assert len(resolved) > 10\n"
            "print(sorted(xb._backends))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def layout_table() -> dict[str, list[str]]:
    """docs/library.md's layout table: module path -> the test files it names."""
    rows = {}
    for line in (REPO / "docs" / "library.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`aejax/"):
            rows[cells[0].strip("`")] = re.findall(r"`(tests/[^`]+)`", cells[2])
    return rows


def test_the_layout_table_lists_every_module_with_tests_that_exist():
    table = layout_table()
    modules = sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py"))
    assert sorted(table) == modules, set(table) ^ set(modules)
    for module, tests in table.items():
        assert tests, f"{module} names no test"
        assert all((REPO / t).exists() for t in tests), (module, tests)
        named = REPO / "tests" / f"test_{Path(module).stem}.py"
        if named.exists() and Path(module).stem not in ("__init__", "__main__"):
            assert str(named.relative_to(REPO)) in tests, f"{module}: its own test file {named.name} is not listed"
        assert len((REPO / module).read_text().splitlines()) <= 400, f"{module} is over 400 lines"
