"""Dependencies point downward: every import of the four packages, read from their source with `ast`.

``clients`` imports nothing of ours, ``server`` and ``training`` import ``t2mir_model`` only (not
each other), and ``t2mir_model`` imports nothing of ours. One exception: ``server`` imports
``clients.codes``, the wire protocol's table of error codes (a module that imports nothing of ours),
so server and client share one table; nothing else of ``clients``. Module-level and function-level
``import`` statements count, and so do ``importlib.import_module("...")`` / ``__import__("...")``
calls with a literal name. A program that needs several packages talks to the others across a
process boundary (``clients.demo`` runs ``t2mir serve``) or through entry points.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED: dict[str, frozenset[str]] = {
    "t2mir_model": frozenset(),
    "training": frozenset({"t2mir_model"}),
    "server": frozenset({"t2mir_model"}),
    "clients": frozenset(),
}
ALLOWED_MODULES: dict[str, frozenset[str]] = {"server": frozenset({"clients.codes"})}
"""Single modules a package may import from a package it otherwise may not."""
DYNAMIC_IMPORTS = {"import_module", "__import__"}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``; relative imports are skipped
    (they stay inside their package)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in DYNAMIC_IMPORTS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
    return sorted(found)


def violations(package: str, source: str, where: str) -> list[str]:
    """The imports of ``source`` (a module of ``package``) that point at a package it may not use."""
    bad = []
    for line, module in imported_modules(source):
        target = module.split(".")[0]
        if module in ALLOWED_MODULES.get(package, frozenset()):
            continue
        if target in ALLOWED and target != package and target not in ALLOWED[package]:
            bad.append(f"{where}:{line}: {package} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_point_downward(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found for {package}"
    bad = []
    for path in files:
        bad += violations(package, path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not bad, "imports against the dependency direction:\n" + "\n".join(bad)


def test_every_kind_of_import_is_seen():
    source = (
        "import server.app\n"
        "from training.envs import make_env\n"
        "from . import sibling\n"
        "def later():\n"
        "    import clients.http as h\n"
        "    importlib.import_module('training.collect.command')\n"
        "    __import__('server')\n"
        "    import_module(name)\n"
    )
    assert imported_modules(source) == [
        (1, "server.app"),
        (2, "training.envs"),
        (5, "clients.http"),
        (6, "training.collect.command"),
        (7, "server"),
    ]
    assert violations("training", source, "x.py") == [
        "x.py:1: training imports server.app",
        "x.py:5: training imports clients.http",
        "x.py:7: training imports server",
    ]
    assert violations("server", "from t2mir_model import T2MIRPolicy\nimport torch\n", "y.py") == []
    assert violations("t2mir_model", "from training import envs\n", "z.py") == [
        "z.py:1: t2mir_model imports training"
    ]


def test_server_may_import_only_the_code_table_of_clients():
    assert violations("server", "from clients import codes\nimport clients.codes\n", "a.py") == [
        "a.py:1: server imports clients"
    ]
    assert violations("server", "from clients.codes import ERROR_CODES\n", "b.py") == []
    assert violations("server", "from clients.errors import StepConflict\n", "c.py") == [
        "c.py:1: server imports clients.errors"
    ]
    assert violations("training", "from clients.codes import ERROR_CODES\n", "d.py") == [
        "d.py:1: training imports clients.codes"
    ]


def test_the_code_table_imports_only_the_standard_library():
    source = (ROOT / "clients" / "codes.py").read_text(encoding="utf-8")
    assert {module for _, module in imported_modules(source)} <= {"__future__", "dataclasses"}
