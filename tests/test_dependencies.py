"""Which package may import which: the domain (teams/) knows nothing of the live side
(tracking/), production code knows nothing of the benchmark (loadtest/), and no module imports
itself back through others."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("teamtrack", "teams", "tracking", "deploy", "loadtest", "tests")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """First-party modules a file imports (at any depth: a function's import counts too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def sources(*packages: str, tests: bool = False) -> dict[str, set[str]]:
    graph = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            if not tests and "tests" in path.relative_to(ROOT).parts:
                continue
            graph[module_name(path)] = imports_of(path)
    return graph


def test_the_domain_never_imports_the_live_side():
    offenders = {
        module: sorted(name for name in names if name.startswith("tracking"))
        for module, names in sources("teams", tests=True).items()
    }
    assert {module: names for module, names in offenders.items() if names} == {}


@pytest.mark.parametrize("package", ["teamtrack", "teams", "tracking", "deploy"])
def test_production_code_never_imports_the_benchmark(package):
    offenders = {
        module: sorted(name for name in names if name.startswith("loadtest"))
        for module, names in sources(package).items()
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_no_import_cycles_between_modules():
    graph = sources(*PACKAGES[:-1], tests=True)
    modules = set(graph)
    # An import of "package.name" may name a module or something in one: keep the modules.
    edges = {m: {n for n in names if n in modules and n != m} for m, names in graph.items()}
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []
