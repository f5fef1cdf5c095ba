"""The layout of `sdl/` (docs/decisions/0007-package-layout.md): what import-linter cannot check.

`lint-imports` keeps the rooms layered and free of circles. These keep the rest of the rule: no private name
is imported from another room, no module writes methods for another module's class (``self: OtherClass``), a
long module says why it is long, an import inside a function is the CLI's (which imports a command's modules
when the command runs) or has its reason listed here, and the names users import still import.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

SDL = Path(__file__).resolve().parents[1] / "sdl"
LONG = 500


#: Imports of sdl modules inside functions outside sdl/cli, and why each is there.
LAZY_IMPORTS = {
    ("space/parameters.py", "sdl.space.polytope"): "scipy.optimize (0.5-0.9 s): only with constraints",
    ("daemon/proposer.py", "sdl.daemon.proposer"): "run as -m, pickles must name the module",
    # The optimizer builds its backends when one is asked for (scipy, scikit-optimize: seconds to import).
    ("optimizer/__init__.py", "sdl.optimizer.baselines"): "a backend, built on demand",
    ("optimizer/__init__.py", "sdl.optimizer.bayesian"): "a backend, built on demand",
    ("optimizer/__init__.py", "sdl.optimizer.encoding"): "scipy.stats, with a backend",
    ("optimizer/__init__.py", "sdl.optimizer.objectives"): "with a backend",
    ("optimizer/__init__.py", "sdl.optimizer.skopt_backend"): "scikit-optimize, only for kind skopt",
    ("optimizer/encoding.py", "sdl.space.parameters"): "the constraints' polytope: only with constraints",
    ("optimizer/pareto.py", "sdl.optimizer.bayesian"): "a circle the optimizer's own cleanup removes",
    ("optimizer/problems.py", "sdl.optimizer.objectives"): "benchmark problems, moving to benchmarks/",
}


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SDL.rglob("*.py")):
        yield path.relative_to(SDL).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def room(name: str) -> str:
    """The top-level room a module (dotted, or a path under sdl/) belongs to."""
    parts = name.removeprefix("sdl.").replace("/", ".").removesuffix(".py").split(".")
    return parts[0]


def test_the_walk_sees_every_room() -> None:
    rooms = {room(path) for path, _ in modules()}
    assert {"api", "cli", "daemon", "execution", "loop", "spec", "space", "store"} <= rooms, rooms


def test_no_private_name_is_imported_from_another_room() -> None:
    crossings = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sdl."):
                for alias in node.names:
                    if alias.name.startswith("_") and room(node.module) != room(path):
                        crossings.append(f"{path}:{node.lineno} imports {node.module}.{alias.name}")
    assert not crossings, crossings


def test_no_module_writes_methods_for_another_modules_class() -> None:
    """The lab service was written as mixins whose methods were typed ``self: LabService``; no more."""
    foreign = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.args.args:
                first = node.args.args[0]
                if first.arg == "self" and first.annotation is not None:
                    foreign.append(f"{path}:{node.lineno} {node.name}(self: {ast.unparse(first.annotation)})")
    assert not foreign, foreign


def test_a_long_module_says_why() -> None:
    unexplained = []
    for path, tree in modules():
        lines = len((SDL / path).read_text(encoding="utf-8").splitlines())
        if lines > LONG and "Long because" not in (ast.get_docstring(tree) or ""):
            unexplained.append(f"{path}: {lines} lines")
    assert not unexplained, unexplained


def test_imports_inside_functions_are_the_clis_or_have_a_reason() -> None:
    lazy = []
    for path, tree in modules():
        if room(path) == "cli":
            continue
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                for name in names:
                    if name.startswith("sdl") and (path, name) not in LAZY_IMPORTS:
                        lazy.append(f"{path}:{node.lineno} imports {name} inside {function.name}()")
    assert not lazy, lazy


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("sdl.plans", ["lease", "release", "leased", "allow_leases"]),
        ("sdl.client", ["Client", "Credentials", "ServiceUnavailable"]),
        ("sdl.testing", ["LabServiceProcess", "wait_for", "alive", "descendants"]),
        ("drivers.testing", ["wait_for"]),
        ("sdl.space", ["SearchSpace", "RealParameter", "IntegerParameter", "CategoricalParameter"]),
    ],
)
def test_the_names_users_import_still_import(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    missing = [n for n in names if not hasattr(imported, n)]
    assert not missing, f"{module} lacks {missing}"
