"""Structured one-line JSON logs for the server and uvicorn.

Every line is a JSON object with ``ts``, ``level``, ``logger``, ``msg`` and any ``extra={...}``
fields. The server never passes a secret to a logger (API keys are hashed before use), but
libraries below it do: at debug level the WebSocket library logs every handshake header through
``uvicorn.error``, ``Authorization`` and ``X-API-Key`` included. So the formatter redacts, at
every level and in every field, the configured API keys and the value of any header that carries
a credential (`redact`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

REDACTED = "[redacted]"
_CREDENTIAL_HEADER = re.compile(
    r"(?P<name>\b(?:authorization|proxy-authorization|x-api-key|cookie)\b['\"]?\s*[:=,]\s*['\"]?)"
    r"(?P<value>(?:bearer\s+|basic\s+)?[^\s'\",)]+)",
    re.IGNORECASE,
)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with every one of ``secrets`` and every credential header's value replaced."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return _CREDENTIAL_HEADER.sub(lambda m: m.group("name") + REDACTED, text)


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line, credentials redacted (``secrets``: the API keys)."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line for ``record``."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage(), self._secrets),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                if isinstance(value, int | float | bool | type(None)):
                    out[key] = value
                else:
                    out[key] = redact(value if isinstance(value, str) else repr(value), self._secrets)
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info), self._secrets)
        return json.dumps(out, separators=(",", ":"))


def log_config(level: str, secrets: Sequence[str] = ()) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict (also given to uvicorn) with JSON lines on stderr;
    ``secrets`` (the API keys) are redacted from every line."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "server.logs.JsonFormatter", "secrets": list(secrets)}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "t2mir": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "websockets": {"handlers": ["stderr"], "level": upper, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
