"""Nested config dataclasses from plain tables (TOML) and dotted ``key=value`` overrides.

A config is a dataclass whose fields are values (bool, int, float, str, a ``Literal`` of strings)
or other config dataclasses. A *path* names a value field through the nesting, e.g.
``model.moe.task_experts``. Here a value is checked against its field's type; ranges and rules
between fields are the dataclasses' own validation (``__post_init__``), which runs on every build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, TypeVar, get_args, get_origin, get_type_hints

from .t2mir.configuration import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ConfigT = TypeVar("ConfigT", bound="DataclassInstance")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _is_config(kind: object) -> TypeGuard[type[DataclassInstance]]:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def value_fields(cls: type[DataclassInstance], prefix: str = "") -> dict[str, object]:
    """Path -> type of every value field of the config dataclass ``cls``, through nested configs."""
    hints = get_type_hints(cls)
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if _is_config(kind):
            out.update(value_fields(kind, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = kind
    return out


def matching(key: str, paths: Collection[str]) -> list[str]:
    """The paths that ``key`` names: itself, or those that end with ``.key``."""
    if key in paths:
        return [key]
    return sorted(path for path in paths if path.endswith(f".{key}"))


def unknown_key(key: str, paths: Collection[str]) -> ConfigError:
    """The error for a key that names none of ``paths``, with those that share its last part."""
    if any(f".{key}." in f".{path}" for path in paths):
        return ConfigError(key, "is a table of settings, not a value")
    leaf = key.rpartition(".")[2]
    near = sorted(path for path in paths if path.rpartition(".")[2] == leaf)
    return ConfigError(key, "unknown config key" + (f" (did you mean {' or '.join(near)}?)" if near else ""))


def resolve(key: str, paths: Collection[str]) -> str:
    """The one path that is ``key`` or ends with ``.key``.

    ``moe.task_experts`` names ``model.moe.task_experts``; a key that names several is refused."""
    found = matching(key, paths)
    if not found:
        raise unknown_key(key, paths)
    if len(found) > 1:
        raise ConfigError(key, f"ambiguous key, could be any of {found}")
    return found[0]


def parse_text(path: str, kind: object, raw: str) -> object:
    """The value of command-line text ``raw`` for a field of type ``kind``."""
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(path, f"expected true/false, got {raw!r}")
    if kind is int or kind is float:
        try:
            return int(raw) if kind is int else float(raw)
        except ValueError:
            raise ConfigError(
                path, f"expected {'an integer' if kind is int else 'a number'}, got {raw!r}"
            ) from None
    return check_value(path, kind, raw)


def check_value(path: str, kind: object, value: object) -> object:
    """``value`` if it has type ``kind`` (an int is taken for a float); ConfigError otherwise."""
    if get_origin(kind) is Literal:
        if value not in get_args(kind):
            raise ConfigError(path, f"must be one of {list(get_args(kind))}, got {value!r}")
        return value
    if kind is float and type(value) is int:
        return float(value)
    if kind in (bool, int, float, str) and type(value) is kind:
        return value
    if _is_config(kind):
        raise ConfigError(path, f"is a table of settings, not a value (got {value!r})")
    name = getattr(kind, "__name__", str(kind))
    raise ConfigError(path, f"expected {name}, got {type(value).__name__} {value!r}")


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, object]:
    """Nested tables -> path -> value: ``{"model": {"d_model": 64}}`` -> ``{"model.d_model": 64}``."""
    out: dict[str, object] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def build(cls: type[ConfigT], values: Mapping[str, object]) -> ConfigT:
    """A validated ``cls`` from path -> value; fields not named keep their defaults (a nested
    config field with a default starts from that default)."""
    return _build(cls, None, values, "")


def replace_paths(config: ConfigT, values: Mapping[str, object]) -> ConfigT:
    """A validated copy of ``config`` with the fields at these paths changed."""
    return _build(type(config), config, values, "")


def _build(cls: type[ConfigT], base: ConfigT | None, values: Mapping[str, object], prefix: str) -> ConfigT:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    direct: dict[str, object] = {}
    nested: dict[str, dict[str, object]] = {}
    for path, value in values.items():
        head, dot, rest = path.partition(".")
        if head not in fields or (dot and not _is_config(hints[head])):
            raise unknown_key(prefix + path, value_fields(cls, prefix))
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = check_value(prefix + head, hints[head], value)
    for head, inner in nested.items():
        if base is not None:
            start = getattr(base, head)
        else:
            start = _default(fields[head]) if _has_default(fields[head]) else None
        direct[head] = _build(hints[head], start, inner, f"{prefix}{head}.")
    if base is not None:
        return dataclasses.replace(base, **direct)
    missing = [name for name, f in fields.items() if name not in direct and not _has_default(f)]
    if missing:
        raise ConfigError(prefix + missing[0], "missing (no default)")
    return cls(**direct)


def _has_default(f: dataclasses.Field[object]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _default(f: dataclasses.Field[object]) -> object:
    """The default value of a field that has one."""
    factory = f.default_factory
    return f.default if factory is dataclasses.MISSING else factory()
