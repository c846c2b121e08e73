"""The client package imports and works with torch (and the server/training packages) unimportable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCKED = ["torch", "safetensors", "t2mir_model", "training", "server", "fastapi", "redis", "uvicorn"]

SCRIPT = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit('the blocker does not work')
import clients
assert 'gymnasium' not in sys.modules, 'import clients must not import gymnasium'
import clients.cli, clients.demo, clients.gym_shim, clients.robot_loop, clients.ws, clients.examples.robot_loop
from clients import T2MIRClient, Session, WebSocketSession, run_episodes
from clients.protocol import act_body
import numpy as np
assert act_body(np.int64(2), np.ones(2, np.float32), np.float32(0.5)) == {{'step': 2, 'observation': [1.0, 1.0], 'reward': 0.5}}
T2MIRClient('http://127.0.0.1:9').close()
assert clients.cli.main([]) == 2
loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
assert not loaded, loaded
print('ok')
"""


def test_clients_import_without_torch():
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=root
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
