"""What the command modules share: layering CLI flags over YAML over defaults, KEY=VALUE options, and the line that
says which epoch a training run kept."""

from __future__ import annotations

from typing import Any

from ..errors import KdpcError


def overrides(**kwargs: Any) -> dict[str, Any]:
    """CLI flags that were actually given (None means "not given": YAML or the default applies)."""
    return {k: v for k, v in kwargs.items() if v is not None}


def yaml_layer(config: str | None) -> dict[str, Any]:
    from ..config import load_yaml

    return load_yaml(config) if config else {}


def chosen(metrics: dict[str, Any]) -> str:
    """``chosen: epoch 7 (best val/oa): val/oa=0.91 test/oa=0.90``: which epoch was kept, why, and its scores."""
    scores = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    return f"chosen: epoch {metrics.get('epoch')} ({metrics.get('selected_by')}): {scores}"


def parse_kv(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``--model-opt width=32`` style options; values parsed as YAML scalars (so 32 is an int, true a bool)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise KdpcError(f"{flag} takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out
