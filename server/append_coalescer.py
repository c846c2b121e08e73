"""One store round trip for the appends of one engine batch.

The acts of one engine call get their answers in the same event-loop iteration (the batcher
settles their futures together), and each goes straight on to store its step. `AppendCoalescer`
gathers the appends issued in one loop iteration and sends them together at the start of the
next: one `SessionStore.append` for a lone append, one `SessionStore.append_many` (one Redis
pipeline) for several. Each append keeps its own fencing and its own outcome; a failed round trip
fails every append in it, with the same error `append` would have raised. Every caller waits for
the store's answer, so nothing is acknowledged before the store has it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from server.store import AppendOutcome, AppendRequest, SessionStore, StepRecord


class AppendCoalescer:
    """Appends of one event-loop iteration -> one store call; ``observe(op, seconds)`` is told
    each store call (``op`` ``"append"``: one round trip, whatever the number of appends)."""

    def __init__(self, store: SessionStore, observe: Callable[[str, float], None]) -> None:
        self.store = store
        self._observe = observe
        self._pending: list[tuple[AppendRequest, asyncio.Future[AppendOutcome]]] = []
        self._calls: set[asyncio.Task[None]] = set()

    async def append(
        self, session_id: str, record: StepRecord, response: dict[str, Any], created_at: float | None
    ) -> AppendOutcome:
        """`SessionStore.append`, sent with the other appends of this loop iteration."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendOutcome] = loop.create_future()
        self._pending.append((AppendRequest(session_id, record, response, created_at), future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)  # after every callback already scheduled for this iteration
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        call = asyncio.ensure_future(self._send(batch))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _send(self, batch: list[tuple[AppendRequest, asyncio.Future[AppendOutcome]]]) -> None:
        started = time.perf_counter()
        try:
            outcomes = await self._call([append for append, _ in batch])
        except asyncio.CancelledError:  # the loop is closing: nobody may wait forever
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the round trip failed: so did each append in it
            outcomes = [exc] * len(batch)
        finally:
            self._observe("append", time.perf_counter() - started)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller went away
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _call(self, appends: list[AppendRequest]) -> list[AppendOutcome | Exception]:
        """One store call; a lone append's own refusal (e.g. `InvalidRecord`) is its outcome."""
        if len(appends) > 1:
            return list(await self.store.append_many(appends))
        a = appends[0]
        try:
            return [await self.store.append(a.session_id, a.record, a.response, a.created_at)]
        except Exception as exc:
            return [exc]
