"""Per-family session behaviour (`SessionFamily`): ``base`` (the interface and shared checks),
``t2mir`` (`T2MIRSessions`), ``m3dt`` (`M3DTSessions`: task prompts and target returns), and
`session_family`, which picks the family of a loaded checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.families.base import SessionFamily
from server.families.m3dt import M3DTSessions
from server.families.t2mir import T2MIRSessions
from t2mir_model import M3DT_FAMILY, M3DTEngine, PolicyEngine, T2MIRConfig, read_family

__all__ = ["M3DTSessions", "SessionFamily", "T2MIRSessions", "session_family"]


def session_family(directory: Path, engine: PolicyEngine, card: dict[str, Any]) -> SessionFamily:
    """The `SessionFamily` of a loaded checkpoint (its config's family)."""
    if read_family(directory) == M3DT_FAMILY:
        if not isinstance(engine, M3DTEngine):
            raise TypeError(f"{directory}: an M3DT checkpoint loaded as {type(engine).__name__}")
        return M3DTSessions.load(directory, engine.config, card)
    if not isinstance(engine.config, T2MIRConfig):
        raise TypeError(f"{directory}: a T2MIR checkpoint loaded with a {type(engine.config).__name__}")
    return T2MIRSessions(engine.config)
