"""``t2mir serve``: run the inference server with uvicorn.

Flags override ``T2MIR_*`` environment variables, which override the defaults of
`ServerSettings`. API keys are read from ``T2MIR_API_KEYS`` only (never from the command line,
where other users could read them).
"""

from __future__ import annotations

import argparse
import logging.config
import sys
from typing import Any

from pydantic import ValidationError

from server.allocator import MALLOC_OPTIONS, MallocOption, tune_malloc
from server.logs import log_config
from server.settings import ServerSettings

FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--checkpoint",
        "checkpoints",
        {"action": "append", "metavar": "DIR", "help": "checkpoint directory (repeatable)"},
    ),
    ("--host", "host", {"help": "bind address (default 127.0.0.1)"}),
    ("--port", "port", {"type": int, "help": "port (default 8000; 0 picks a free one)"}),
    ("--redis-url", "redis_url", {"help": "Redis URL of the session store (default: in-process store)"}),
    ("--no-cache", "no_cache", {"action": "store_const", "const": True, "help": "disable KV caching"}),
    (
        "--compile",
        "compile_step",
        {
            "choices": ["auto", "on", "off"],
            "nargs": "?",
            "const": "on",
            "help": "compile the one-session decode step at load: auto (default: when on the CPU with a "
            "C++ compiler), on (bare --compile), off",
        },
    ),
    ("--max-batch-size", "max_batch_size", {"type": int, "help": "sessions per engine call (default 64)"}),
    ("--max-wait-ms", "max_wait_ms", {"type": float, "help": "batch window under load (default 2)"}),
    (
        "--act-deadline-ms",
        "act_deadline_ms",
        {"type": float, "help": "shed acts (503) not expected to be answered in time (default 500; 0: off)"},
    ),
    ("--max-queue", "max_queue", {"type": int, "help": "most acts queued per model version (default 1024)"}),
    ("--cache-slots", "cache_slots", {"type": int, "help": "KV-cache slots per model version"}),
    ("--kv-cache-mb", "kv_cache_mb", {"type": float, "help": "KV-cache memory bound per model version"}),
    ("--mirror-sessions", "mirror_sessions", {"type": int, "help": "session histories mirrored in memory"}),
    (
        "--session-ttl",
        "session_ttl_seconds",
        {"type": float, "help": "idle seconds before a session expires (default 86400; 0: never)"},
    ),
    ("--max-body-bytes", "max_body_bytes", {"type": int, "help": "largest request body / message"}),
    ("--max-sessions", "max_sessions", {"type": int, "help": "live sessions this server may create"}),
    (
        "--max-metadata-bytes",
        "max_metadata_bytes",
        {"type": int, "help": "largest session metadata as JSON (default 16384)"},
    ),
    ("--max-header-bytes", "max_header_bytes", {"type": int, "help": "largest request headers"}),
    ("--header-timeout", "header_timeout_s", {"type": float, "help": "seconds to send request headers"}),
    ("--body-timeout", "body_timeout_s", {"type": float, "help": "seconds to send a request body"}),
    ("--keep-alive", "keep_alive_s", {"type": int, "help": "idle keep-alive seconds (default 5)"}),
    ("--max-connections", "max_connections", {"type": int, "help": "open connections (default 2048)"}),
    ("--torch-threads", "torch_threads", {"type": int, "help": "intra-op threads per engine (default 1)"}),
    ("--device", "device", {"help": "torch device (default cpu)"}),
    (
        "--default-model",
        "default_model",
        {"metavar": "NAME", "help": "model of sessions that name none (when several are loaded)"},
    ),
    ("--log-level", "log_level", {"choices": ["debug", "info", "warning", "error"]}),
    ("--access-log", "access_log", {"action": "store_const", "const": True, "help": "log every request"}),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``serve`` flags."""
    for flag, dest, kwargs in FLAGS:
        parser.add_argument(flag, dest=dest, default=None, **kwargs)
    for option in MALLOC_OPTIONS:
        default = "glibc's" if option.default is None else f"{option.default}"
        parser.add_argument(
            option.flag,
            dest=_malloc_dest(option),
            type=int,
            default=None,
            metavar="N",
            help=f"glibc malloc setting (default {default}; overrides {option.env})",
        )


def _malloc_dest(option: MallocOption) -> str:
    return option.flag.lstrip("-").replace("-", "_")


def malloc_flags(args: argparse.Namespace) -> dict[str, int]:
    """The malloc settings given as flags, by environment variable name (`server.allocator`)."""
    values = {option.env: getattr(args, _malloc_dest(option), None) for option in MALLOC_OPTIONS}
    return {env: value for env, value in values.items() if value is not None}


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Environment + flags -> settings (flags win)."""
    overrides = {dest: getattr(args, dest) for _, dest, _ in FLAGS if getattr(args, dest, None) is not None}
    return ServerSettings(**overrides)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    import uvicorn

    from server.app import create_app
    from server.collector import tune_collector
    from server.http_protocol import HeaderLimits, protocol_factory

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"t2mir serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if not settings.checkpoints:
        print("t2mir serve: no checkpoint given (--checkpoint DIR or T2MIR_CHECKPOINTS)", file=sys.stderr)
        return 2
    config = log_config(settings.log_level, settings.key_values())
    logging.config.dictConfig(config)
    tune_malloc(flags=malloc_flags(args))  # before the app starts any thread (server/allocator.py)
    app = create_app(settings, on_ready=tune_collector)
    headers = HeaderLimits(settings.header_timeout_s, settings.max_header_bytes)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            http=protocol_factory(headers),  # type: ignore[arg-type]
            log_config=config,
            access_log=settings.access_log,
            ws_max_size=4 * settings.max_body_bytes + 4096,
            timeout_keep_alive=settings.keep_alive_s,
            limit_concurrency=settings.max_connections,
            timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
            lifespan="on",
        )
    )
    server.run()
    return 0 if server.started else 1
