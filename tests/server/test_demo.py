"""`make demo` runs `t2mir demo`: the shipped checkpoint over real HTTP, returns and expert use printed."""

from __future__ import annotations

from t2mir_model.cli import main


def test_demo_serves_the_shipped_checkpoint_and_reports(capsys):
    assert main(["demo", "--tasks", "2", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "serving darkroom-t2mir-ad (T2MIR-AD" in out
    table = out[out.index("episode   test:0") :].splitlines()
    assert table[1].split()[0] == "1" and table[2].split()[0] == "2" and len(table[1].split()) == 4
    assert "token router L2 s:" in out and "task router  L2:" in out
