"""Server settings: environment variables with the ``T2MIR_`` prefix, overridable by CLI flags.

List settings (``T2MIR_CHECKPOINTS``, ``T2MIR_API_KEYS``) accept a JSON list or a comma-separated
string. API keys are kept as `SecretStr`, so they never appear in a repr or a log line.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MB = 1024 * 1024


def _split_list(value: Any) -> Any:
    """'a,b' or '["a","b"]' -> ['a', 'b']; lists pass through."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class ServerSettings(BaseSettings):
    """Everything ``t2mir serve`` can be told; one object per app (no globals)."""

    model_config = SettingsConfigDict(env_prefix="T2MIR_", extra="ignore", validate_default=True)

    checkpoints: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Checkpoint directories to serve (name from the card's ``name``, version from its ``version``)."""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    redis_url: str | None = None
    """Redis URL of the session store; None: the in-process store (single process only)."""
    redis_key_prefix: str = "t2mir"
    no_cache: bool = False
    """Turn KV caching off: every act recomputes the context from the stored history."""
    compile_step: Literal["auto", "on", "off"] = "auto"
    """Compile each T2MIR model's one-session decode step ahead of time (AOTInductor) when it loads:
    about 2-4x faster single-session forwards, tens of seconds more per model load, needs a C++
    compiler (see `t2mir_model.t2mir.fused_step.CompiledDecoder`). ``auto``: compile when serving
    on the CPU and a C++ compiler is on the PATH, else, or if compiling fails, serve eagerly (logged);
    ``on``: compile or refuse to start (CPU only); ``off``: eager. ``true``/``false`` read as
    on/off."""
    max_batch_size: int = Field(64, ge=1)
    """Most sessions joined into one engine call."""
    max_wait_ms: float = Field(2.0, ge=0)
    """Longest a queued request waits for a batch to fill, counted from its arrival."""
    cache_slots: int | None = Field(None, ge=1)
    """KV-cache slots per loaded model version; None: derived from ``kv_cache_mb``."""
    kv_cache_mb: float = Field(128.0, gt=0)
    """Memory bound of one model version's KV cache when ``cache_slots`` is not set."""
    mirror_sessions: int = Field(2048, ge=1)
    """Sessions whose history is mirrored in process memory (LRU); a miss rebuilds from the store."""
    max_versions_per_model: int = Field(3, ge=1)
    """Versions of one model name kept loaded after reloads (least recently used old ones go first)."""
    version_idle_seconds: float = Field(3600.0, gt=0)
    """An old (non-current) version unused this long is unloaded (its sessions then get 409)."""
    session_ttl_seconds: float | None = Field(86400.0, ge=0)
    """Idle time after which the store forgets a session (default 24 h; 0 or None: never)."""
    max_sessions: int = Field(10_000, ge=1)
    """Most live sessions this server process has created (not deleted, not idle past the TTL);
    ``POST /sessions`` answers 503 ``too_many_sessions`` beyond it (see `server.live_sessions`)."""
    max_metadata_bytes: int = Field(16 * 1024, ge=2)
    """Largest session ``metadata`` (as compact UTF-8 JSON) accepted by ``POST /sessions``."""
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Accepted API keys; empty: no authentication."""
    max_body_bytes: int = Field(1 * MB, ge=64)
    """Largest accepted request body (HTTP) or message (WebSocket)."""
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    """Largest request line plus headers of one HTTP request (431 beyond it)."""
    header_timeout_s: float = Field(10.0, gt=0)
    """Longest a connection may take to send a request's line and headers, counted from the
    connection's opening or the request's first byte (408, then closed)."""
    body_timeout_s: float = Field(30.0, gt=0)
    """Longest a request's body may take to arrive, counted from the end of its headers (408)."""
    keep_alive_s: int = Field(5, ge=1)
    """Idle seconds after which a keep-alive connection is closed."""
    max_connections: int = Field(2048, ge=1)
    """Open connections (HTTP and WebSocket) above which new requests get 503."""
    public_docs: bool = False
    """Serve ``/docs``, ``/redoc`` and ``/openapi.json`` without an API key even when keys are on."""
    torch_threads: int = Field(1, ge=1)
    """Intra-op threads of every engine worker thread."""
    device: str = "cpu"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    """Log one line per HTTP request (off by default: it costs latency)."""
    store_retry_after_s: int = Field(1, ge=1)
    """Retry-After sent with 503 answers while the store is unreachable."""
    shutdown_timeout_s: float = Field(30.0, gt=0)
    """Longest a graceful shutdown waits for queued and in-flight work."""
    redis_cluster: bool = False
    """``redis_url`` names a node of a Redis Cluster (the client discovers the others)."""
    redis_wait_replicas: int = Field(0, ge=0)
    """Replicas that must confirm a create or step (Redis ``WAIT``) before it is acknowledged;
    0: acknowledged once the master has it. A step not confirmed in time answers 503."""
    redis_wait_timeout_ms: int = Field(500, ge=1)
    """Longest a write waits for ``redis_wait_replicas`` confirmations."""
    default_model: str | None = Field(None, min_length=1)
    """Model of sessions created without ``model`` when several models are loaded (must be one of
    them); None: such a create is refused (422 missing_field) unless exactly one model is loaded."""
    act_deadline_ms: float = Field(500.0, ge=0)
    """Overload control: an act not expected to be answered (engine call, hand-off and store write)
    within this many ms of its arrival is refused with 503 ``overloaded`` and ``Retry-After``
    (nothing stored), before it is queued or when its call is about to start (see
    `server.batcher`); 0: no deadline."""
    max_queue: int = Field(1024, ge=1)
    """Most acts queued for one loaded model version; more are refused with 503 ``overloaded``."""

    @field_validator("checkpoints", "api_keys", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("session_ttl_seconds")
    @classmethod
    def _ttl_never(cls, value: float | None) -> float | None:
        return value or None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _keys_not_empty(self) -> ServerSettings:
        if any(not key.get_secret_value() for key in self.api_keys):
            raise ValueError("api_keys must not contain empty keys")
        return self

    @field_validator("compile_step", mode="before")
    @classmethod
    def _compile_from_bool(cls, value: Any) -> Any:
        """``true``/``false`` (and booleans) as ``on``/``off``."""
        if isinstance(value, bool):
            return "on" if value else "off"
        booleans = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}
        return booleans.get(value.strip().lower(), value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _compile_on_cpu(self) -> ServerSettings:
        if self.compile_step == "on" and not self.device.startswith("cpu"):
            raise ValueError(
                f"compile_step is for CPU serving only, not device {self.device!r}: the AOTInductor "
                "CUDA package crashed when loaded (torch 2.11, H200); serve eagerly on a GPU"
            )
        return self

    def key_values(self) -> list[str]:
        """The configured API keys in clear (for the auth check only; never log them)."""
        return [key.get_secret_value() for key in self.api_keys]
