"""``t2mir bench``: load-test a running server against the naive stateless baseline.

Modules, one idea each:

- `episodes`: DarkRoom (real simulator) and synthetic episode drivers, and the client-side record of a
  session (what the naive client re-sends every call);
- `baseline`: the naive server, a stateless FastAPI app recomputing the full context per call;
- `processes`: server / baseline / redis-server subprocesses, free ports, CPU accounting;
- `targets`: HTTP / WebSocket clients of both servers (aiohttp);
- `loadgen`: N concurrent sessions for a measured window, prefill and the parity check;
- `stats`: numbers of a measured window (and `/metrics` deltas); `growth`: cost against context;
- `report`: JSON layout and tables; `docs`: figures and `docs/benchmarks.md`;
- `runner`: one benchmark run end to end; `command`: the CLI.
"""
