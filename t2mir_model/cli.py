"""The ``t2mir`` console script: one entry point, subcommands resolved lazily.

Each subcommand lives in the package that owns it (``training``, ``server``, ``t2mir_model``) as a
module exposing ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when
their subcommand is chosen, so ``t2mir_model`` stays importable without the training or server
dependencies, and a missing extra produces a clear message instead of an import traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "collect": ("training.collect.command", "train", "collect offline learning-history datasets"),
    "train": ("training.train.command", "train", "train a T2MIR / AD / DPT policy"),
    "eval": ("training.evaluation.command", "train", "in-context evaluation on held-out tasks"),
    "bench-train": ("training.train.bench", "train", "time a training step, dense against sparse experts"),
    "viz": ("training.viz.command", "train", "routing insight plots from a checkpoint"),
    "serve": ("server.command", "server", "run the inference server"),
    "demo": ("server.demo", "server", "serve the shipped checkpoint and drive client episodes"),
    "bench": ("server.bench.command", "server", "load-test a server against the naive baseline"),
    "bench-model": ("t2mir_model.t2mir.bench", "", "time full-forward versus cached decoding"),
}


def load_command(module_name: str, extra: str) -> ModuleType:
    """Import a subcommand module, explaining which extra to install when a dependency is missing."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise SystemExit(f"t2mir: '{module_name}' is not part of this build") from exc
        hint = f" (install it with: pip install 't2mir[{extra}]')" if extra else ""
        raise SystemExit(f"t2mir: this command needs the missing module '{missing}'{hint}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="t2mir", description="T2MIR in-context RL: train, evaluate, serve.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command '{argv[0]}'")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module_name, extra, help_text = SUBCOMMANDS[name]
    module = load_command(module_name, extra)
    command_parser = argparse.ArgumentParser(prog=f"t2mir {name}", description=help_text)
    module.add_arguments(command_parser)
    args = command_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
