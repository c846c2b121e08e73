"""``t2mir bench``: act latency and throughput against the naive baseline, and cost growth with context.

By default it starts everything itself (a private redis-server, ``t2mir serve`` on the checkpoint,
the baseline), runs every measurement, stops them, prints the tables and optionally writes the
JSON report, the figures and ``docs/benchmarks.md``. ``--server URL`` loads a running server
instead (``--baseline URL`` a running baseline). The API key of an external server is read from
the environment variable ``T2MIR_BENCH_API_KEY`` (never from the command line).

The full run behind ``docs/benchmarks.md``::

    t2mir bench --checkpoint checkpoints/darkroom-t2mir-ad --env darkroom --sessions=1,8,64 \\
        --duration 8 --warmup 1 --transport http,ws --overload 4 --parity-acts 100 \\
        --label '2-core CPU, default flags' --json docs/benchmarks.json --plots docs \\
        --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import aiohttp

from server.bench.episodes import ENV_KINDS
from server.bench.processes import REPO_ROOT

DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "darkroom-t2mir-ad"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("every value must be >= 1")
    return values


def _transports(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values or any(v not in ("http", "ws") for v in values):
        raise argparse.ArgumentTypeError("transport: http, ws or http,ws")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``bench`` flags."""
    parser.add_argument(
        "--checkpoint", help=f"checkpoint directory (default {DEFAULT_CHECKPOINT.relative_to(REPO_ROOT)})"
    )
    parser.add_argument("--server", help="load this running t2mir server instead of starting one")
    parser.add_argument("--baseline", dest="baseline_url", help="a running baseline server to compare with")
    parser.add_argument(
        "--sessions", type=_int_list, default=[1, 8, 64], help="concurrent sessions (default 1,8,64)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per row (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    parser.add_argument(
        "--env", choices=ENV_KINDS, default="darkroom", help="episode driver (default darkroom)"
    )
    parser.add_argument("--transport", type=_transports, default=["http"], help="http, ws or http,ws")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--redis-url", help="session store: this Redis (default: a private redis-server)")
    store.add_argument("--store", choices=["redis", "memory"], default="redis", help="session store kind")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    parser.add_argument("--context-episodes", type=_int_list, default=[1, 2, 4, 8],
                        help="cost-growth context sizes (default 1,2,4,8)")  # fmt: skip
    parser.add_argument("--no-growth", action="store_true", help="skip the cost-growth measurement")
    parser.add_argument("--growth-repeats", type=int, default=20, help="timed repeats per growth point")
    parser.add_argument("--prefill-episodes", type=int, default=None,
                        help="closed episodes per session before measuring (default: fill the context)")  # fmt: skip
    parser.add_argument(
        "--parity-acts", type=int, default=350, help="acts of the baseline parity check (0: skip)"
    )
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="intra-op threads of each server (default 1)"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device of both servers and of the growth policy"
    )
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra flag for t2mir serve, e.g. --server-arg=--max-wait-ms=1 (repeatable)")  # fmt: skip
    parser.add_argument("--overload", type=float, metavar="FACTOR",
                        help="add the overload row: FACTOR times the measured capacity (e.g. 4)")  # fmt: skip
    parser.add_argument("--overload-sessions", type=int, default=128,
                        help="paced sessions of the overload row (default 128)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="t2mir bench", help="title of the run in the report and figures")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--plots", help="write benchmarks_*.png figures into this directory")
    parser.add_argument("--markdown", help="write the Markdown report here (e.g. docs/benchmarks.md)")
    parser.add_argument(
        "--from-json", metavar="PATH", help="measure nothing: print, plot and document a saved report"
    )


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (flags with their effective values)."""
    parts = ["t2mir", "bench"]
    if args.server:
        parts += ["--server", args.server]
    if args.checkpoint:
        parts += ["--checkpoint", args.checkpoint]
    if args.baseline_url:
        parts += ["--baseline", args.baseline_url]
    parts += [f"--sessions={','.join(map(str, args.sessions))}", "--duration", f"{args.duration:g}"]
    parts += ["--warmup", f"{args.warmup:g}", "--env", args.env, "--transport", ",".join(args.transport)]
    parts += ["--redis-url", args.redis_url] if args.redis_url else ["--store", args.store]
    if args.no_baseline:
        parts.append("--no-baseline")
    if args.no_growth:
        parts.append("--no-growth")
    else:
        parts += ["--context-episodes", ",".join(map(str, args.context_episodes))]
        parts += ["--growth-repeats", str(args.growth_repeats)]
    if args.prefill_episodes is not None:
        parts += ["--prefill-episodes", str(args.prefill_episodes)]
    parts += ["--parity-acts", str(args.parity_acts), "--torch-threads", str(args.torch_threads)]
    if args.device != "cpu":
        parts += ["--device", args.device]
    parts += [f"--server-arg={a}" for a in args.server_arg]
    if args.overload:
        parts += ["--overload", f"{args.overload:g}", f"--overload-sessions={args.overload_sessions}"]
    parts += ["--seed", str(args.seed), "--label", args.label]
    for flag in ("json", "plots", "markdown"):
        if getattr(args, flag):
            parts += [f"--{flag}", getattr(args, flag)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; returns the exit code (1 if any act or ceiling request failed, the parity
    check disagreed, or the overload row lost or invented a step)."""
    from server.bench.runner import BenchOptions, run_bench

    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        return _publish(report, args, write_json=False)
    checkpoint = args.checkpoint
    if checkpoint is None and DEFAULT_CHECKPOINT.exists():
        checkpoint = str(DEFAULT_CHECKPOINT)
    needs_checkpoint = args.server is None or (not args.no_baseline and args.baseline_url is None)
    if needs_checkpoint and checkpoint is None:
        print(
            "t2mir bench: no checkpoint (pass --checkpoint DIR, or --server URL with --no-baseline)",
            file=sys.stderr,
        )
        return 2
    if checkpoint is not None and not Path(checkpoint).is_dir():
        print(f"t2mir bench: checkpoint {checkpoint} is not a directory", file=sys.stderr)
        return 2
    options = BenchOptions(
        checkpoint=checkpoint,
        sessions=args.sessions,
        duration_s=args.duration,
        warmup_s=args.warmup,
        env=args.env,
        transports=args.transport,
        store="redis" if args.redis_url else args.store,
        redis_url=args.redis_url,
        server_url=args.server,
        baseline_url=args.baseline_url,
        baseline=not args.no_baseline,
        context_episodes=[] if args.no_growth else args.context_episodes,
        growth_repeats=args.growth_repeats,
        prefill_episodes=args.prefill_episodes,
        parity_acts=args.parity_acts,
        torch_threads=args.torch_threads,
        device=args.device,
        server_args=list(args.server_arg),
        label=args.label,
        seed=args.seed,
        api_key=os.environ.get("T2MIR_BENCH_API_KEY") or None,
        command=command_line(args),
        overload=args.overload,
        overload_sessions=args.overload_sessions,
    )
    try:
        report = run_bench(options)
    except (RuntimeError, ValueError, OSError, aiohttp.ClientError) as exc:
        print(f"t2mir bench: {exc}", file=sys.stderr)
        return 1
    return _publish(report, args, write_json=True)


def _publish(report: dict[str, Any], args: argparse.Namespace, write_json: bool) -> int:
    """Figures, tables, JSON and Markdown of a report; returns the exit code."""
    from server.bench.docs import write_markdown, write_plots
    from server.bench.report import print_report

    if args.plots:
        report["plots"] = write_plots(report, args.plots)
    print_report(report)
    if args.json and write_json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        write_markdown(report, args.markdown)
    overload = report.get("overload") or {}
    failed = (
        any(r["errors"] for r in report["runs"])
        or bool(report["parity"] and report["parity"]["mismatches"])
        or bool(overload.get("errors") or overload.get("lost_steps") or overload.get("phantom_steps"))
        or bool((report.get("ceiling") or {}).get("errors"))
    )
    return 1 if failed else 0
