"""`make demo` runs `t2mir demo`: the shipped checkpoint over real HTTP, returns and expert use printed."""

from __future__ import annotations

import argparse

from clients import demo


def test_demo_serves_the_shipped_checkpoint_and_reports(capsys):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert demo.run(parser.parse_args(["--tasks", "2", "--episodes", "2"])) == 0
    out = capsys.readouterr().out
    assert "serving darkroom-t2mir-ad (T2MIR-AD, 350,281 parameters)" in out
    assert "with the in-process session store" in out
    table = out[out.index("episode   test:0") :].splitlines()
    assert table[1].split()[0] == "1" and table[2].split()[0] == "2" and len(table[1].split()) == 4
    assert "token router L2 s:" in out and "task router  L2:" in out
