"""The package's public boundary: every exported name resolves, and the server and the trainer
import the package itself, never one of its modules."""

from __future__ import annotations

import ast
from pathlib import Path

import t2mir_model

ROOT = Path(__file__).resolve().parents[2]
CONSUMERS = sorted(p for package in ("server", "training") for p in (ROOT / package).rglob("*.py"))


def test_every_exported_name_resolves():
    assert len(set(t2mir_model.__all__)) == len(t2mir_model.__all__)
    missing = [name for name in t2mir_model.__all__ if not hasattr(t2mir_model, name)]
    assert not missing


def test_the_entry_points_are_documented():
    doc = t2mir_model.__doc__ or ""
    for name in ("layers/", "t2mir/", "engine/", "load_engine", "PolicyEngine", "summarize_routing"):
        assert name in doc


def imports_of_the_model_package(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every import of ``t2mir_model`` in a file, including nested ones."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "t2mir_model"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("t2mir_model")
        ):
            found += [(node.lineno, f"{node.module}:{a.name}") for a in node.names]
    return found


def test_server_and_training_import_only_the_public_names():
    assert len(CONSUMERS) > 20
    imports = {path: imports_of_the_model_package(path) for path in CONSUMERS}
    assert sum(map(len, imports.values())) > 20  # the check sees the real imports
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path, found in imports.items()
        for line, what in found
        if not what.startswith("t2mir_model:") or what.split(":")[1] not in t2mir_model.__all__
    ]
    assert not wrong, "import from the t2mir_model package (a name in its __all__): " + "; ".join(wrong)


def test_the_check_catches_a_module_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from t2mir_model.history import SessionHistory\nimport t2mir_model.engine\n"
    )
    assert imports_of_the_model_package(bad) == [
        (3, "t2mir_model.engine"),
        (2, "t2mir_model.history:SessionHistory"),
    ]
