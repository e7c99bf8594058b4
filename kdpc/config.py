"""Dataclass configs: defaults <- YAML file (safe_load) <- CLI flags that were given."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from .errors import KdpcError

C = TypeVar("C")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise KdpcError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KdpcError(f"config file {path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KdpcError(f"config file {path} must hold a mapping of option: value")
    return data


def build_config(cls: type[C], *layers: Mapping[str, Any] | None) -> C:
    """Later layers override earlier ones; ``None`` values in a layer mean "not given" and are skipped.

    Nested dataclass fields (e.g. ``augment``) are merged key by key, so a YAML file can set one augment option.
    """
    merged: dict[str, Any] = {}
    field_types = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for layer in layers:
        for key, value in (layer or {}).items():
            key = key.replace("-", "_")
            if key not in field_types:
                known = ", ".join(sorted(field_types))
                raise KdpcError(f"unknown option {key!r} for {cls.__name__}; known: {known}")
            if value is None:
                continue
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    hints = typing.get_type_hints(cls)
    for key, value in merged.items():
        merged[key] = check_type(key, value, hints[key])
    try:
        return cls(**merged)
    except TypeError as exc:
        raise KdpcError(f"bad {cls.__name__} options: {exc}") from None


def check_type(name: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits the field's type (an int where a float is wanted becomes a float; a YAML string that
    spells a number is NOT accepted); else one ``KdpcError`` naming the option and the type it needs."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_type(name, value, arg)
            except KdpcError as exc:
                errors.append(str(exc))
        raise KdpcError(errors[0])
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise KdpcError(f"option {name} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise KdpcError(f"option {name} must be a whole number, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise KdpcError(f"option {name} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise KdpcError(f"option {name} must be a string, got {value!r}")
    if origin is dict or hint is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise KdpcError(f"option {name} must be a mapping of KEY: VALUE, got {value!r}")
    if origin in (list, tuple) or hint in (list, tuple):
        if isinstance(value, (list, tuple)):
            return list(value)
        raise KdpcError(f"option {name} must be a list, got {value!r}")
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return convert(cfg)


def save_yaml(data: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dict(data), sort_keys=False))
