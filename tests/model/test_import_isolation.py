"""t2mir_model imports and runs with the server and training dependencies made unimportable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from t2mir_model.cli import commands, help_line, load_command, main, module_source, source_help

BLOCKED = [
    "fastapi",
    "uvicorn",
    "redis",
    "prometheus_client",
    "gymnasium",
    "mujoco",
    "metaworld",
    "stable_baselines3",
    "httpx",
    "websockets",
    "msgpack",
    "training",
    "server",
    "clients",
]

SCRIPT = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import torch
from t2mir_model import T2MIRConfig, T2MIRPolicy, ObservationSpec, ActionSpec, interleave_steps
policy = T2MIRPolicy(T2MIRConfig(observation=ObservationSpec(2), action=ActionSpec('discrete', n=5), d_model=16,
                                 n_layers=1, n_heads=2)).eval()
tokens = interleave_steps(torch.zeros(1, 3, 2), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3),
                          torch.arange(3)[None], torch.ones(1, 3, dtype=torch.bool))
assert policy(tokens).head.shape == (1, 9, 5)
loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
assert not loaded, loaded
print('ok')
"""


def test_model_package_needs_only_torch_and_safetensors():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cli_names_the_missing_extra(tmp_path, monkeypatch):
    (tmp_path / "needs_server_dep.py").write_text("import prometheus_client\n")
    (tmp_path / "needs_missing_dep.py").write_text("import definitely_not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if the server extra were absent
    with pytest.raises(
        SystemExit, match=r"missing module 'prometheus_client'.*pip install 't2mir\[server\]'"
    ):
        load_command("needs_server_dep")
    with pytest.raises(SystemExit, match=r"missing module 'definitely_not_installed_pkg'$"):
        load_command("needs_missing_dep")
    with pytest.raises(SystemExit, match="not part of this build"):
        load_command("t2mir_model.no_such_command")


EXPECTED_COMMANDS = {
    "collect": "training.collect.command",
    "train": "training.train.command",
    "eval": "training.evaluation.command",
    "bench-train": "training.train.bench",
    "viz": "training.viz.command",
    "serve": "server.command",
    "demo": "clients.demo",
    "bench": "server.bench.command",
    "bench-model": "t2mir_model.t2mir.bench",
    "results": "training.evaluation.results",
}


def test_every_subcommand_is_registered_by_its_package():
    assert commands() == dict(sorted(EXPECTED_COMMANDS.items()))
    for module_name in EXPECTED_COMMANDS.values():
        assert module_source(module_name) is not None, module_name
        assert source_help(module_name), f"{module_name} has no help line"


def test_cli_help_lists_every_subcommand_with_its_help(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert main(["--help"]) == 0
    assert capsys.readouterr().out == out
    for name in EXPECTED_COMMANDS:
        assert f"\n    {name}" in out
    assert "collect offline learning-history datasets" in out and "run the inference server" in out
    assert help_line("``t2mir serve``: run the inference server.\n\nMore.") == "run the inference server"
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_cli_help_imports_no_subcommand():
    script = (
        "import sys\n"
        "from t2mir_model.cli import main\n"
        "assert main(['--help']) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'server', 'clients'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
