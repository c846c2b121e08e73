"""``t2mir-client run`` against the real server (the CLI in process)."""

from __future__ import annotations

import re

import pytest
from live_server import KEY

from clients import SessionNotFound, T2MIRClient
from clients.cli import main, summarize


def test_cli_runs_darkroom_episodes(memory_server, capsys):
    before = len(memory_server.faults.created)
    args = [
        "run",
        "--server",
        memory_server.url,
        "--api-key",
        KEY,
        "--env",
        "t2mir/DarkRoom-v0",
        "--task",
        "test:3",
    ]
    code = main([*args, "--episodes", "3", "--greedy", "--keep-session"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (sid,) = memory_server.faults.created[before:]
    returns = [float(v) for v in re.findall(r"episode +\d+ +return +(\S+)", out)]
    with T2MIRClient(memory_server.url, KEY) as client:
        assert returns == client.get_session(sid).returns and len(returns) == 3
    assert f"session {sid} on darkroom" in out and "via http" in out and "'goal': [3, 3]" in out
    assert "3 episodes: mean return" in out
    assert "3/3" in err  # the progress bar


def test_cli_over_websocket_deletes_its_session(memory_server, capsys):
    before = len(memory_server.faults.created)
    args = [
        "run",
        "--server",
        memory_server.url,
        "--api-key",
        KEY,
        "--env",
        "t2mir/DarkRoom-v0",
        "--episodes",
        "1",
    ]
    assert main([*args, "--ws", "--encoding", "msgpack", "--no-progress"]) == 0
    out, _ = capsys.readouterr()
    assert "via websocket/msgpack" in out and "1 episodes" in out
    (sid,) = memory_server.faults.created[before:]
    with T2MIRClient(memory_server.url, KEY) as client, pytest.raises(SessionNotFound):
        client.get_session(sid)


def test_cli_reports_errors(memory_server, capsys, monkeypatch):
    monkeypatch.delenv("T2MIR_API_KEY", raising=False)
    args = ["run", "--server", memory_server.url, "--env", "t2mir/DarkRoom-v0", "--episodes", "1"]
    assert main([*args, "--api-key", KEY, "--model", "cheetah", "--no-progress"]) == 1
    assert "expects 3" in capsys.readouterr().err
    assert main([*args, "--no-progress", "--retries", "0"]) == 1
    assert "401 unauthorized" in capsys.readouterr().err
    assert main([*args, "--no-progress", "--api-key", KEY]) == 0
    assert main([]) == 2


def test_summarize():
    assert summarize([]) == "no episodes run"
    assert summarize([1, 2, 3, 6]) == "4 episodes: mean return 3.00, best 6.00, first 1 1.00 -> last 1 6.00"
