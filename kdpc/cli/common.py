"""What the command modules share: layering CLI flags over ``--set`` over YAML over defaults, KEY=VALUE options,
help texts that show the config defaults, and the line that says which epoch a training run kept."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from ..errors import KdpcError


def overrides(**kwargs: Any) -> dict[str, Any]:
    """CLI flags that were actually given (None means "not given": YAML or the default applies)."""
    return {k: v for k, v in kwargs.items() if v is not None}


def yaml_layer(config: str | None) -> dict[str, Any]:
    """The YAML file's options; its ``plugins:`` list (user modules registering models and datasets) is imported
    here, before anything looks a name up."""
    from ..config import load_yaml
    from ..plugins import load_plugins

    data = load_yaml(config) if config else {}
    plugins = data.pop("plugins", None)
    if plugins is not None:
        if isinstance(plugins, str):
            plugins = [plugins]
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            raise KdpcError(f"config file {config}: plugins must be a list of module names, got {plugins!r}")
        load_plugins(plugins, source=f"config {Path(str(config)).name}")
    return data


def set_layer(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--set lr=0.001 --set srkd.affinity_weight=0.5``: any config key, nested keys dotted; values are YAML."""
    from ..config import dotted

    parsed = []
    for pair in pairs:
        if "=" not in pair:
            raise KdpcError(f"--set takes KEY=VALUE (e.g. --set srkd.affinity_weight=0.5), got {pair!r}")
        key, value = pair.split("=", 1)
        parsed.append((key.strip(), _scalar(value, "--set")))
    return dotted(parsed)


def chosen(metrics: dict[str, Any]) -> str:
    """``chosen: epoch 7 (best val/oa): val/oa=0.91 test/oa=0.90``: which epoch was kept, why, and its scores."""
    scores = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    return f"chosen: epoch {metrics.get('epoch')} ({metrics.get('selected_by')}): {scores}"


def parse_kv(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``--model-opt width=32`` style options; values parsed as YAML scalars (so 32 is an int, true a bool)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise KdpcError(f"{flag} takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = _scalar(value, flag)
    return out


def parse_adapter(values: tuple[str, ...]) -> dict[str, Any]:
    """``--adapter layout=BCN --adapter output=logits`` or ``--adapter adapter.yaml`` (a file of such keys)."""
    from ..config import load_yaml

    out: dict[str, Any] = {}
    for value in values:
        if "=" in value:
            out.update(parse_kv((value,), "--adapter"))
        elif value.lower().endswith((".yaml", ".yml")):
            out.update(load_yaml(value))
        else:
            raise KdpcError(f"--adapter takes KEY=VALUE or a YAML file, got {value!r}")
    return out


def _scalar(text: str, flag: str) -> Any:
    import yaml

    from ..config import safe_yaml

    try:
        return safe_yaml(text)
    except yaml.YAMLError:
        raise KdpcError(f"{flag}: {text!r} is not a valid value") from None


class ConfigCommand(click.Command):
    """A command whose ``--help`` shows, for every flag left unset by default (``None``: "the config decides"),
    the default of the config field it sets. The config class is imported only when help is shown."""

    def __init__(self, *args: Any, config_class: str, defaults: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_class = config_class
        self.extra_defaults = dict(defaults or {})  # option name -> "module:Class.field" for fields kept elsewhere
        self._annotated = False

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._annotate()
        super().format_options(ctx, formatter)

    def _annotate(self) -> None:
        if self._annotated:
            return
        self._annotated = True
        from ..config import field_defaults

        defaults = field_defaults(_import(self.config_class))
        for param in self.params:
            if not isinstance(param, click.Option) or param.default is not None or param.name is None:
                continue
            where = self.extra_defaults.get(param.name)
            if where is not None:
                cls_path, field_name = where.rsplit(".", 1)
                value = field_defaults(_import(cls_path)).get(field_name)
            elif param.name in defaults:
                value = defaults[param.name]
            else:
                continue
            if value is None or value == {} or value == [] or value == "" or (param.is_flag and value is False):
                continue
            param.help = f"{param.help or ''}  [default: {value}]".strip()


def _import(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)
