"""Loaded models: several names and versions at once, each with its own engine and batcher.

A checkpoint's name is its card's ``name`` (or the directory name) and its version the card's
``version``. New sessions get the *current* version of a name; a session keeps the version it
started with. ``reload`` reads the name's checkpoint directory again and makes the version found
there current; older versions stay loaded for their sessions and their in-flight requests until
they have been unused for ``version_idle_seconds``, and at most ``max_versions_per_model`` per
name (then the least recently used idle old version is unloaded). `sweep` runs at every reload
and session creation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from server.batcher import Batcher
from server.errors import ApiError
from server.families import SessionFamily, session_family
from server.metrics import ServerMetrics
from server.settings import MB, ServerSettings
from server.store import Backbone, Retention, as_backbone
from t2mir_model import (
    ActionSpec,
    ActRequest,
    ActResult,
    EngineOptions,
    EngineOutput,
    PolicyEngine,
    ReadCounts,
    ServedConfig,
    StepCompileError,
    card_action_noise,
    load_engine,
    read_card,
)

log = logging.getLogger("t2mir.server")


def action_spec(config: ServedConfig) -> dict[str, Any]:
    """The model's action space as clients see it."""
    return describe_action(config.action)


def describe_action(a: ActionSpec) -> dict[str, Any]:
    """An action space as clients see it."""
    if a.is_discrete:
        return {"kind": "discrete", "n": a.n}
    return {"kind": "continuous", "dim": a.dim, "low": list(a.low or ()), "high": list(a.high or ())}


def retention_for(config: ServedConfig) -> Retention:
    """What the store keeps of closed episodes: AD the L-1 best, DPT the last one."""
    return Retention.for_backbone(config.backbone, config.context_episodes)


@dataclass
class LoadedModel:
    """One model version: weights, engine, batcher and what clients need to know about it."""

    name: str
    version: str
    directory: Path
    card: dict[str, Any]
    engine: PolicyEngine
    batcher: Batcher[ActRequest, ActResult, EngineOutput]
    backbone: Backbone
    """The sessions' context rule (the config's ``backbone``, checked at load)."""
    family: SessionFamily
    """How this model's sessions differ by model family (create options, act requests)."""
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    ready: bool = False

    @property
    def config(self) -> ServedConfig:
        """The facts of the model's config that serving reads."""
        return self.engine.config

    @property
    def retention(self) -> Retention:
        """Store retention for this model's sessions."""
        return retention_for(self.config)

    @property
    def discrete(self) -> bool:
        """True for a discrete action space."""
        return self.config.action.is_discrete

    @property
    def default_action_noise(self) -> float:
        """Exploration noise of new continuous sessions: what the card's metrics were measured with."""
        return 0.0 if self.discrete else card_action_noise(self.card)

    def describe(self) -> dict[str, Any]:
        """JSON description for ``GET /models``."""
        c = self.config
        return {
            "name": self.name,
            "version": self.version,
            "backbone": c.backbone,
            "variant": self.engine.variant,
            "parameters": self.card.get("parameters"),
            "env_id": c.env_id,
            "observation_dim": c.observation.dim,
            "action": action_spec(c),
            "max_episode_steps": c.max_episode_steps,
            "context_episodes": c.context_episodes,
            "cache_slots": self.engine.num_slots,
            "compiled_step": self.engine.compiled_step,
            "ready": self.ready,
            "loaded_at": self.loaded_at,
            **self.family.describe_model(),
        }


def has_cxx_compiler() -> bool:
    """True when a C++ compiler AOTInductor can use is on the PATH (``$CXX``, g++, c++ or clang++)."""
    names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(shutil.which(name) for name in names if name)


def _compiles(settings: ServerSettings) -> bool:
    """Whether a model's decode step is to be compiled at load (``compile_step``, see the settings)."""
    if settings.compile_step == "auto":
        return settings.device.startswith("cpu") and not settings.no_cache and has_cxx_compiler()
    return settings.compile_step == "on"


def _read(directory: Path, settings: ServerSettings) -> tuple[dict[str, Any], PolicyEngine, SessionFamily]:
    """Worker thread: load the checkpoint's engine (whatever its model family), its card and its
    family's session behaviour. With ``compile_step="auto"`` a step that fails to compile is
    logged and the model served eagerly."""
    torch.set_num_threads(settings.torch_threads)
    options = EngineOptions(
        device=settings.device,
        cache_slots=settings.cache_slots,
        cache_bytes=int(settings.kv_cache_mb * MB),
        use_cache=not settings.no_cache,
        compile_step=_compiles(settings),
    )
    try:
        engine = load_engine(directory, options)
    except StepCompileError as exc:
        if settings.compile_step == "on":
            raise
        log.warning(
            "decode step not compiled, serving eagerly",
            extra={"checkpoint": str(directory), "error": str(exc)},
        )
        engine = load_engine(directory, replace(options, compile_step=False))
    card = read_card(directory)
    return card, engine, session_family(directory, engine, card)


class ModelRegistry:
    """Every loaded model version of one app."""

    def __init__(self, settings: ServerSettings, metrics: ServerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._current: dict[str, str] = {}
        self._dirs: dict[str, Path] = {}
        self._reload_locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ loading
    async def load_all(self, directories: list[str]) -> None:
        """Load every checkpoint directory (later ones of the same name become current); the
        ``default_model`` setting, if any, must name one of them."""
        for directory in directories:
            model = await self._load(Path(directory))
            if (model.name, model.version) in self._models:
                await model.batcher.close()
                raise ValueError(f"{directory}: {model.name} version {model.version} is already loaded")
            self._add(model)
        default = self.settings.default_model
        if default is not None and default not in self._current:
            raise ValueError(
                f"default_model {default!r} is not among the loaded models {sorted(self._current)}"
            )

    async def _load(self, directory: Path) -> LoadedModel:
        card, engine, family = await asyncio.to_thread(_read, directory, self.settings)
        name = str(card.get("name") or directory.resolve().name)
        version = str(card.get("version") or "1")
        try:
            backbone = as_backbone(engine.config.backbone)
        except ValueError as exc:
            raise ValueError(f"{directory}: {exc}") from exc
        batch = min(self.settings.max_batch_size, engine.num_slots)

        def record_output(output: EngineOutput, waits: list[float]) -> None:
            self.metrics.record_engine_output(name, output, waits)

        batcher: Batcher[ActRequest, ActResult, EngineOutput] = Batcher(
            engine,
            max_batch_size=batch,
            max_wait_ms=self.settings.max_wait_ms,
            name=f"{name}-{version}",
            torch_threads=self.settings.torch_threads,
            on_output=record_output,
            deadline_ms=self.settings.act_deadline_ms,
            max_queue=self.settings.max_queue,
        )
        model = LoadedModel(name, version, directory, card, engine, batcher, backbone, family)
        batcher.start()
        await batcher.run_on_worker(family.warm_up, engine)
        model.ready = True
        log.info(
            "model loaded",
            extra={
                "model": name,
                "version": version,
                "variant": engine.variant,
                "slots": engine.num_slots,
            },
        )
        return model

    def _add(self, model: LoadedModel) -> None:
        self._models[(model.name, model.version)] = model
        self._current[model.name] = model.version
        self._dirs[model.name] = model.directory
        self.metrics.model_loaded(model.name, model.version, model.config.backbone)

    # ------------------------------------------------------------------ lookup
    @property
    def ready(self) -> bool:
        """True once at least one model is loaded and every loaded model is warmed up."""
        return bool(self._models) and all(m.ready for m in self._models.values())

    def get(self, name: str, version: str) -> LoadedModel | None:
        """A loaded version, or None."""
        return self._models.get((name, version))

    def resolve(self, name: str | None) -> LoadedModel:
        """The current version of ``name``; when None, of the ``default_model`` setting or else of
        the only loaded model. Raises ApiError (422 when several are loaded and none is the default)."""
        if name is None:
            name = self.settings.default_model
        if name is None:
            if len(self._current) != 1:
                raise ApiError(
                    422,
                    "missing_field",
                    f"several models are loaded ({sorted(self._current)}) and no default_model is set: name one",
                    field="model",
                )
            name = next(iter(self._current))
        version = self._current.get(name)
        if version is None:
            raise ApiError(404, "unknown_model", f"model {name!r} is not loaded", field="model")
        return self._models[(name, version)]

    def describe(self) -> list[dict[str, Any]]:
        """Every loaded version, current ones flagged."""
        return [
            {**m.describe(), "current": self._current.get(m.name) == m.version}
            for m in sorted(self._models.values(), key=lambda m: (m.name, m.loaded_at))
        ]

    async def flush(self) -> None:
        """Wait for the pending engine statistics of every loaded version (see `Batcher.flush`) and
        add the queued routing statistics to the series, off the event loop."""
        await asyncio.gather(*(m.batcher.flush() for m in list(self._models.values())))
        await asyncio.to_thread(self.metrics.drain_routing)

    def slots_used(self) -> int:
        """KV-cache slots in use over every loaded version."""
        return sum(m.engine.slots_used for m in self._models.values())

    def queue_depths(self) -> dict[str, int]:
        """Acts waiting for an engine call, per model name (summed over its loaded versions)."""
        depths: dict[str, int] = {}
        for m in list(self._models.values()):
            depths[m.name] = depths.get(m.name, 0) + m.batcher.queued
        return depths

    def decode_reads(self) -> dict[str, ReadCounts]:
        """How each model's cached decode steps read their slots (summed over its loaded versions)."""
        reads: dict[str, ReadCounts] = {}
        for m in list(self._models.values()):
            reads.setdefault(m.name, ReadCounts()).add(m.engine.reads)
        return reads

    # ------------------------------------------------------------------ reload
    async def reload(self, name: str) -> tuple[LoadedModel, str]:
        """Load ``name``'s directory again and make its version current; returns (model, previous)."""
        if name not in self._current:
            raise ApiError(404, "unknown_model", f"model {name!r} is not loaded", field="name")
        lock = self._reload_locks.setdefault(name, asyncio.Lock())
        async with lock:
            previous = self._current[name]
            try:
                model = await self._load(self._dirs[name])
            except Exception as exc:
                log.exception("reload of %s failed", name)
                raise ApiError(500, "reload_failed", f"reloading {name!r} failed: {exc}") from exc
            if model.name != name or (name, model.version) in self._models:
                await model.batcher.close()
                if model.name != name:
                    raise ApiError(
                        409, "name_changed", f"the checkpoint of {name!r} is now named {model.name!r}"
                    )
                raise ApiError(
                    409,
                    "version_loaded",
                    f"{name} version {model.version} is already loaded; bump the card's version",
                )
            self._add(model)
            await self.sweep()
            return model, previous

    async def sweep(self) -> None:
        """Unload old versions that are idle (no queued work, unused for ``version_idle_seconds``)
        or, least recently used first, beyond ``max_versions_per_model`` per name."""
        now = time.monotonic()
        for name, current in list(self._current.items()):
            versions = [m for m in self._models.values() if m.name == name]
            idle = sorted(
                (m for m in versions if m.version != current and m.batcher.pending == 0),
                key=lambda m: m.last_used,
            )
            for model in idle:
                too_many = len(versions) > self.settings.max_versions_per_model
                if too_many or now - model.last_used > self.settings.version_idle_seconds:
                    versions.remove(model)
                    await self._unload(model)

    async def _unload(self, model: LoadedModel) -> None:
        self._models.pop((model.name, model.version), None)
        self.metrics.model_unloaded(model.name, model.version, model.config.backbone)
        await model.batcher.close(self.settings.shutdown_timeout_s)
        log.info("model unloaded", extra={"model": model.name, "version": model.version})

    async def aclose(self) -> None:
        """Drain and stop every batcher."""
        models = list(self._models.values())
        await asyncio.gather(*(m.batcher.close(self.settings.shutdown_timeout_s) for m in models))
