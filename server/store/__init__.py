"""Session stores: where every session's in-context history lives (DESIGN.md decision 9).

`MemorySessionStore` (in-process, embedded default) and `RedisSessionStore` (source of truth in
compose) implement the same `SessionStore` protocol on the same argument checks (`CheckedStore`);
one contract test suite runs against both. `state_after_append` (what an append does to a
session) and `retain` (which closed episodes it keeps) are the Python form of the Redis store's
Lua script, used by the in-process store, the server's history mirror and the benchmark.
"""

from server.store.errors import (
    InvalidRecord,
    InvalidSessionId,
    SessionExists,
    StoreError,
    StoreUnavailable,
)
from server.store.memory import MemorySessionStore
from server.store.models import (
    MAX_STEP,
    SESSION_ID_PATTERN,
    AppendOutcome,
    AppendRequest,
    Backbone,
    Episode,
    Retention,
    SessionMeta,
    SessionState,
    StepRecord,
    as_backbone,
    dumps_json,
    encode_json,
    episode_return_after,
    is_valid_session_id,
    meta_after_append,
    normalize_record,
    retain,
    state_after_append,
    validate_session_id,
)
from server.store.protocol import SessionStore
from server.store.redis_store import RedisSessionStore, is_unavailable_error

__all__ = [
    "MAX_STEP",
    "SESSION_ID_PATTERN",
    "AppendOutcome",
    "AppendRequest",
    "Backbone",
    "Episode",
    "InvalidRecord",
    "InvalidSessionId",
    "MemorySessionStore",
    "RedisSessionStore",
    "Retention",
    "SessionExists",
    "SessionMeta",
    "SessionState",
    "SessionStore",
    "StepRecord",
    "StoreError",
    "StoreUnavailable",
    "as_backbone",
    "dumps_json",
    "encode_json",
    "episode_return_after",
    "is_unavailable_error",
    "is_valid_session_id",
    "meta_after_append",
    "normalize_record",
    "retain",
    "state_after_append",
    "validate_session_id",
]
