"""The ``t2mir`` console script: one entry point, subcommands registered by the packages that own them.

A package adds a subcommand with an entry point of the ``t2mir.commands`` group in
``pyproject.toml``: its name is the subcommand, its value the module exposing
``add_arguments(parser)`` and ``run(args) -> int``. The first line of the module's docstring,
written as ````t2mir NAME``: help``, is the subcommand's help.

Only the chosen subcommand's module is imported, so this module names no package above it and
works with the training or server packages absent. A missing dependency becomes a message naming
the extra of the installed distribution that requires it, instead of an import traceback.
``t2mir --help`` reads the help lines from the modules' source files without importing them
(importing every subcommand takes seconds).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path
from types import ModuleType

COMMAND_GROUP = "t2mir.commands"
DISTRIBUTION = "t2mir"
_EXTRA_REQUIREMENT = re.compile(
    r"""^\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;.*\bextra\s*==\s*["']([^"']+)["']"""
)


def commands() -> dict[str, str]:
    """The installed subcommands: name -> module, sorted by name."""
    return {ep.name: ep.module for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda ep: ep.name)}


def help_line(docstring: str | None) -> str:
    """A command module's help: its docstring's first line without the ````t2mir NAME``:`` lead."""
    first = (docstring or "").strip().split("\n", 1)[0]
    return first.split("``:", 1)[-1].strip().rstrip(".")


def module_source(module_name: str) -> Path | None:
    """The source file of ``module_name``, found without importing it or its parent packages."""
    top, *rest = module_name.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin else None
    for location in spec.submodule_search_locations or ():
        base = Path(location, *rest)
        for candidate in (base.parent / f"{base.name}.py", base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def source_help(module_name: str) -> str:
    """`help_line` of a module read from its source file ("" when the module is not installed)."""
    path = module_source(module_name)
    if path is None:
        return ""
    return help_line(ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extras_providing(module_name: str) -> list[str]:
    """The extras of the installed t2mir distribution that require the distribution named like
    ``module_name``'s top-level package (``prometheus_client`` -> ``["server"]``)."""
    try:
        requirements = distribution(DISTRIBUTION).requires or []
    except PackageNotFoundError:
        return []
    wanted = _canonical(module_name.split(".")[0])
    extras: list[str] = []
    for requirement in requirements:
        match = _EXTRA_REQUIREMENT.match(requirement)
        if match and _canonical(match[1]) == wanted and match[2] not in extras:
            extras.append(match[2])
    return extras


def load_command(module_name: str) -> ModuleType:
    """Import a subcommand's module, naming the extra to install when a dependency is missing."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise SystemExit(f"t2mir: '{module_name}' is not part of this build") from exc
        extras = " or ".join(f"'{DISTRIBUTION}[{extra}]'" for extra in extras_providing(missing))
        hint = f" (install it with: pip install {extras})" if extras else ""
        raise SystemExit(f"t2mir: this command needs the missing module '{missing}'{hint}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    registered = commands()
    parser = argparse.ArgumentParser(prog="t2mir", description="T2MIR in-context RL: train, evaluate, serve.")
    if not argv or argv[0] in ("-h", "--help"):
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, module_name in registered.items():
            sub.add_parser(name, help=source_help(module_name), add_help=False)
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    if name not in registered:
        if not registered:
            parser.error(f"no subcommands are installed (entry points '{COMMAND_GROUP}'): reinstall t2mir")
        parser.error(f"unknown command '{name}' (choose from {', '.join(registered)})")
    module = load_command(registered[name])
    command_parser = argparse.ArgumentParser(prog=f"t2mir {name}", description=help_line(module.__doc__))
    module.add_arguments(command_parser)
    args = command_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
