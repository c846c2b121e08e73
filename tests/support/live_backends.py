"""Real servers on both session stores for black-box tests (malformed input, fuzzing, limits).

    with live_backends([ckpt], redis_url, args=[...]) as backends:
        backends["memory"].url, backends["redis"].url   # the Redis one only with a Redis URL

Both run with the test API keys (``TEST_API_KEYS``); the Redis one uses a fresh key prefix
(``Backend.prefix``) so tests can look at its raw keys.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from server_process import TEST_API_KEYS, ServerProcess


@dataclass
class Backend:
    """One running server and what a test needs to look behind it."""

    kind: str
    server: ServerProcess
    redis_url: str | None
    prefix: str

    @property
    def url(self) -> str:
        """HTTP base URL."""
        return self.server.url

    def redis_keys(self) -> list[str]:
        """Every Redis key of this server's sessions (empty on the in-process store)."""
        if self.redis_url is None:
            return []
        from redis import Redis

        with Redis.from_url(self.redis_url, decode_responses=True) as client:
            return sorted(client.scan_iter(match=f"{self.prefix}:*", count=1000))


@contextlib.contextmanager
def live_backends(
    checkpoints: Sequence[str | os.PathLike[str]],
    redis_url: str | None,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[dict[str, Backend]]:
    """Start an in-process-store server and (with ``redis_url``) a Redis-store one, together."""
    keys = {"T2MIR_API_KEYS": ",".join(TEST_API_KEYS), **(env or {})}
    prefix = f"t{uuid.uuid4().hex[:8]}"
    backends = {"memory": Backend("memory", ServerProcess(checkpoints, args=args, env=keys), None, "")}
    if redis_url is not None:
        server = ServerProcess(
            checkpoints, redis_url=redis_url, args=args, env={**keys, "T2MIR_REDIS_KEY_PREFIX": prefix}
        )
        backends["redis"] = Backend("redis", server, redis_url, prefix)
    ServerProcess.start_all([b.server for b in backends.values()])
    try:
        yield backends
    finally:
        for backend in backends.values():
            backend.server.close()
