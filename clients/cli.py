"""``t2mir-client``: run gymnasium episodes against a t2mir server.

    t2mir-client run --server http://localhost:8000 --env t2mir/DarkRoom-v0 --task test:3 --episodes 20

    t2mir-client run --server http://localhost:8000 --env t2mir/MT50-v0 --task reach-v3 \
        --model m3dt --prompt-task reach-v3 --episodes 10

prints one line per episode (with a tqdm progress bar on stderr) and a summary. Envs are built by
`clients.gym_shim.make_env` (``gymnasium.make`` after loading the ``gymnasium.envs`` entry points
of the id's namespace): ``t2mir/...`` ids are the project's benchmarks, which take a task name
(``--task test:3``) of the task split ``--split-seed``; ``t2mir/MT50-v0`` takes a Meta-World task
name (``--task reach-v3``). M3DT models need the session's task prompt: ``--prompt-task`` names
one shipped with the model (and ``--target-return`` overrides its default). The API key may also
come from ``T2MIR_API_KEY``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from clients.errors import T2MIRClientError

PROJECT_PREFIX = "t2mir/"
DEFAULT_TASKS = {"t2mir/MT50-v0": "reach-v3"}
"""Default ``--task`` of project ids whose tasks are not split names (the others: test:0)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t2mir-client", description="Client for a t2mir inference server.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="drive a gymnasium env through a session, episode after episode")
    run.add_argument("--server", required=True, help="server root URL, e.g. http://localhost:8000")
    run.add_argument("--env", required=True, help="gymnasium id (t2mir/DarkRoom-v0 or any registered id)")
    run.add_argument(
        "--task",
        default=None,
        help="task of a t2mir/ env: train:K or test:K (default test:0); t2mir/MT50-v0: a Meta-World name",
    )
    run.add_argument("--split-seed", type=int, default=0, help="seed of the t2mir/ task split (default 0)")
    run.add_argument("--episodes", type=int, default=20, help="episodes to run (default 20)")
    run.add_argument("--api-key", default=os.environ.get("T2MIR_API_KEY"), help="API key (env T2MIR_API_KEY)")
    run.add_argument("--model", default=None, help="model name (default: the server's only/default model)")
    run.add_argument("--ws", action="store_true", help="act over the WebSocket instead of HTTP")
    run.add_argument("--encoding", choices=("json", "msgpack"), default="json", help="WebSocket frames")
    run.add_argument("--greedy", action="store_true", help="greedy actions instead of sampling")
    run.add_argument(
        "--action-noise",
        type=float,
        default=None,
        help="exploration noise of continuous actions (default: model's)",
    )
    run.add_argument(
        "--prompt-task",
        default=None,
        help="M3DT models: the shipped task prompt of the session, e.g. reach-v3",
    )
    run.add_argument(
        "--target-return", type=float, default=None, help="M3DT models: target return (default: the model's)"
    )
    run.add_argument("--seed", type=int, default=None, help="seed of the env's first reset")
    run.add_argument("--timeout", type=float, default=10.0, help="seconds per request attempt (default 10)")
    run.add_argument("--retries", type=int, default=3, help="retries per request (default 3)")
    run.add_argument("--keep-session", action="store_true", help="do not delete the session at the end")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def make_env(env_id: str, task: str | None, split_seed: int = 0) -> tuple[Any, str]:
    """Build the env; returns it and a label naming the task (empty for plain gymnasium ids).

    Raises ValueError for an id gymnasium does not know and SystemExit when a module is missing.
    """
    from clients.gym_shim import make_env as gym_make

    project = env_id.startswith(PROJECT_PREFIX)
    if task is not None and not project:
        raise SystemExit(f"--task applies to {PROJECT_PREFIX}* envs only, not {env_id}")
    kwargs = (
        {"task": task or DEFAULT_TASKS.get(env_id, "test:0"), "split_seed": split_seed} if project else {}
    )
    hint = " (pip install 't2mir[envs]')" if project else ""
    try:
        import gymnasium

        env = gym_make(env_id, **kwargs)
    except ImportError as exc:
        raise SystemExit(f"{env_id} needs a missing module{hint}: {exc}") from None
    except gymnasium.error.Error as exc:  # an unknown id or version
        raise ValueError(str(exc)) from exc
    if not project:
        return env, ""
    spec = env.unwrapped.task
    return env, f"{spec.name} {getattr(spec, 'params', '')}".rstrip()


def summarize(returns: Sequence[float]) -> str:
    """One paragraph: count, mean, best, and first vs last quarter of the run."""
    if not returns:
        return "no episodes run"
    mean = sum(returns) / len(returns)
    quarter = max(1, len(returns) // 4)
    first = sum(returns[:quarter]) / quarter
    last = sum(returns[-quarter:]) / quarter
    return (
        f"{len(returns)} episodes: mean return {mean:.2f}, best {max(returns):.2f}, "
        f"first {quarter} {first:.2f} -> last {quarter} {last:.2f}"
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clients.gym_shim import EpisodeReport, run_episodes
    from clients.http import T2MIRClient
    from clients.session import Session

    if args.episodes < 1:
        raise SystemExit("--episodes must be >= 1")
    env, task_label = make_env(args.env, args.task, args.split_seed)
    try:
        with T2MIRClient(args.server, args.api_key, timeout=args.timeout, retries=args.retries) as client:
            session = Session.create(
                client,
                model=args.model,
                sampling="greedy" if args.greedy else None,
                action_noise=args.action_noise,
                task=args.prompt_task,
                target_return=args.target_return,
                websocket=args.ws,
                encoding=args.encoding,
            )
            info = session.info
            transport = f"websocket/{args.encoding}" if args.ws else "http"
            print(
                f"session {info.session_id} on {info.model.name} {info.model.version} ({info.backbone}) "
                f"via {transport}; env {args.env} {task_label}".rstrip()
            )
            bar = tqdm(total=args.episodes, unit="ep", disable=args.no_progress, file=sys.stderr)

            def report(episode: EpisodeReport) -> None:
                bar.update(1)
                bar.set_postfix(ret=f"{episode.episode_return:.2f}")
                bar.write(
                    f"episode {episode.episode + 1:4d}  return {episode.episode_return:9.3f}  steps {episode.steps}"
                )

            try:
                returns = run_episodes(client, env, args.episodes, session, report, seed=args.seed)
            finally:
                bar.close()
                with contextlib.suppress(T2MIRClientError):
                    session.close(delete=not args.keep_session)
    finally:
        env.close()
    print(summarize(returns))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return run(args)
    except T2MIRClientError as exc:
        print(f"t2mir-client: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a space mismatch or a bad task name
        print(f"t2mir-client: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
