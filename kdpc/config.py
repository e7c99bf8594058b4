"""Dataclass configs: defaults <- YAML file (safe_load) <- ``--set key.sub=value`` <- CLI flags that were given.

YAML is read with PyYAML's safe loader plus YAML 1.2's float rule, so ``lr: 1e-3`` is the number 0.001 (YAML 1.1
reads a float without a dot as text); quoted values stay text and are refused where a number is wanted."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from .errors import KdpcError

C = TypeVar("C")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` / ``5E+2`` as floats (YAML 1.2)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats; never constructs Python objects."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise KdpcError(f"config file {path} does not exist")
    try:
        data = safe_yaml(path.read_text())
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

    Mapping fields (e.g. ``augment``, ``srkd``) are merged key by key at every depth, so a YAML file or a
    ``--set augment.rotation=so3`` can set one nested option.
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
                merged[key] = deep_merge(merged[key], value)
            else:
                merged[key] = value
    hints = typing.get_type_hints(cls)
    for key, value in merged.items():
        merged[key] = check_type(key, value, hints[key])
    try:
        return cls(**merged)
    except TypeError as exc:
        raise KdpcError(f"bad {cls.__name__} options: {exc}") from None


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        nested = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = deep_merge(out[key], value) if nested else value
    return out


def dotted(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``[("srkd.affinity_weight", 0.5), ("lr", 0.1)]`` -> ``{"srkd": {"affinity_weight": 0.5}, "lr": 0.1}``."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = [p.strip().replace("-", "_") for p in key.split(".")]
        if not all(parts):
            raise KdpcError(f"--set takes KEY=VALUE with KEY like lr or srkd.affinity_weight, got {key!r}")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def field_defaults(cls: type) -> dict[str, Any]:
    """Each field's default (``default_factory`` called) without instantiating ``cls`` (whose checks may need
    more than defaults)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


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
