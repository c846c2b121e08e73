"""Example: a simulated robot at a fixed control rate, with an action timeout and a fallback.

    python -m clients.examples.robot_loop --server http://localhost:8000 \
        --env t2mir/DarkRoom-v0 --task test:3 --rate 20 --timeout 0.02 --episodes 2

The DarkRoom simulator stands in for the robot: every tick it executes the server's action if it
came within ``--timeout`` seconds, else the fallback (DarkRoom's "stay", action 4; zeros for a
continuous robot). Stop the server in the middle and start it again: the loop keeps ticking on the
fallback and the session continues where it was. A short report is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

from clients.cli import make_env
from clients.errors import T2MIRClientError
from clients.http import AsyncT2MIRClient
from clients.robot_loop import run_robot_loop
from clients.session import AsyncSession

DARKROOM_STAY = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="server root URL")
    parser.add_argument("--env", default="t2mir/DarkRoom-v0", help="env standing in for the robot")
    parser.add_argument("--task", default=None, help="task of a t2mir/ env (default test:0)")
    parser.add_argument("--model", default=None, help="model name")
    parser.add_argument("--api-key", default=os.environ.get("T2MIR_API_KEY"))
    parser.add_argument("--rate", type=float, default=20.0, help="control rate in Hz (default 20)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="action timeout in s (default: half a tick)"
    )
    parser.add_argument("--fallback", type=int, default=None, help="fallback action of a discrete robot")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None, help="ticks per episode (default: env limit)")
    parser.add_argument("--request-timeout", type=float, default=1.0, help="seconds per HTTP attempt")
    parser.add_argument("--keep-session", action="store_true")
    return parser


async def run(args: argparse.Namespace) -> int:
    robot, label = make_env(args.env, args.task)
    fallback = args.fallback
    if fallback is None and args.env == "t2mir/DarkRoom-v0":
        fallback = DARKROOM_STAY
    async with AsyncT2MIRClient(
        args.server, args.api_key, timeout=args.request_timeout, retries=2, backoff=0.05
    ) as client:
        session = await AsyncSession.create(client, model=args.model)
        print(f"session {session.session_id} on {session.info.model.name}; robot {args.env} {label}".rstrip())
        try:
            report = await run_robot_loop(
                session,
                robot,
                rate_hz=args.rate,
                action_timeout=args.timeout,
                fallback_action=fallback,
                episodes=args.episodes,
                max_steps=args.max_steps,
            )
        finally:
            robot.close()
            if not args.keep_session:
                with contextlib.suppress(T2MIRClientError):
                    await session.close(delete=True)
    print(report.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (T2MIRClientError, TimeoutError, ValueError) as exc:
        print(f"robot_loop: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
