"""A session's metadata as the Redis store's ``meta`` hash holds it (see `server.store.redis_store`).

Every value is a string: numbers as Python writes them (``repr`` of a float is an exact round
trip), ``metadata`` and ``last_response`` as JSON. The Lua scripts read and write the progress
fields in the same form.
"""

from __future__ import annotations

import json

from server.store.models import Retention, SessionMeta, as_backbone, as_retention_mode


def meta_fields(meta: SessionMeta, metadata_json: str) -> dict[str, str]:
    """The hash of a new session: ``meta``'s identity (``metadata_json``: its metadata as JSON),
    progress at zero."""
    return {
        "session_id": meta.session_id,
        "owner": str(meta.owner),
        "model": str(meta.model),
        "model_version": str(meta.model_version),
        "backbone": str(meta.backbone),
        "retention_mode": meta.retention.mode,
        "retention_count": str(meta.retention.count),
        "metadata": metadata_json,
        "created_at": repr(float(meta.created_at)),
        "next_step": "0",
        "episode": "0",
        "episode_steps": "0",
        "episode_return": "0",
    }


def parse_meta(flat: list[str], rets: list[str]) -> SessionMeta:
    """The metadata from the hash (HGETALL's flat field/value list) and the ``rets`` list."""
    h = dict(zip(flat[::2], flat[1::2], strict=True))
    last_step = h.get("last_step")
    last_response = h.get("last_response")
    return SessionMeta(
        session_id=h["session_id"],
        owner=h["owner"],
        model=h["model"],
        model_version=h["model_version"],
        backbone=as_backbone(h["backbone"]),
        retention=Retention(as_retention_mode(h["retention_mode"]), int(h["retention_count"])),
        metadata=json.loads(h["metadata"]),
        created_at=float(h["created_at"]),
        next_step=int(h["next_step"]),
        episode=int(h["episode"]),
        episode_steps=int(h["episode_steps"]),
        episode_return=float(h["episode_return"]),
        last_step=int(last_step) if last_step else None,
        last_response=json.loads(last_response) if last_response is not None else None,
        returns=[float(r) for r in rets],
    )
