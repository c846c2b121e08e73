"""t2mir_model imports and runs with the server and training dependencies made unimportable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from t2mir_model.cli import SUBCOMMANDS, load_command, main

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
    (tmp_path / "needs_missing_dep.py").write_text("import definitely_not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit, match=r"definitely_not_installed_pkg.*t2mir\[server\]"):
        load_command("needs_missing_dep", "server")
    with pytest.raises(SystemExit, match="not part of this build"):
        load_command("t2mir_model.no_such_command", "server")


def test_cli_help_lists_every_subcommand(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)
    with pytest.raises(SystemExit):
        main(["frobnicate"])
