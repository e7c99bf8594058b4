"""State dicts from weights files, for teachers built by the user's own code (``--teacher module:fn``).

A ``torch.save`` file is read with ``torch.load(weights_only=True)`` only; numpy scalars (training scripts often
save ``np.float64`` accuracies next to the weights) are the one addition to its allowlist - they are plain numbers,
not code. ``.safetensors`` files are read with the ``safetensors`` package. Training checkpoints that keep the
weights under a key (``net``, ``state_dict``, ``model``, ...) work as they are, and a ``module.`` prefix left by
DataParallel is removed when the model has none.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import KdpcError, exception_line
from . import sniff

NESTED_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network", "weights", "params")


def _numpy_scalar_globals() -> list[Any]:
    core = getattr(np, "_core", None) or np.core
    out: list[Any] = [core.multiarray.scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType")
                if hasattr(dtypes, n)]
    return out


def torch_load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` (numpy scalars allowed); refusals and damage as one line."""
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise KdpcError(sniff.describe_refused_pickle(path)) from None
    except Exception as exc:  # torch.load raises many types on damaged bytes
        raise KdpcError(f"{path} cannot be read as a torch.save file ({exception_line(exc)})") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a state dict, a training checkpoint holding one, or safetensors."""
    path = Path(path)
    if not path.is_file():
        raise KdpcError(f"weights file {path} does not exist")
    kind = sniff.sniff(path)
    if kind == sniff.SAFETENSORS:
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise KdpcError(f"{path} is a safetensors file; pip install safetensors to read it") from None
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise KdpcError(f"{path} cannot be read as safetensors ({exception_line(exc)})") from None
    if kind not in (sniff.TORCH_ZIP, sniff.PICKLE):
        raise KdpcError(f"weights file {path} is not a torch.save or safetensors file ({kind})")
    payload = torch_load(path)
    found = _find_state_dict(payload)
    if found is None:
        keys = ", ".join(map(str, list(payload)[:6])) if isinstance(payload, Mapping) else type(payload).__name__
        raise KdpcError(f"weights file {path} holds no state dict (found: {keys})")
    return found


def _find_state_dict(payload: Any, depth: int = 0) -> dict[str, torch.Tensor] | None:
    if not isinstance(payload, Mapping) or depth > 2:
        return None
    if payload and all(isinstance(k, str) and torch.is_tensor(v) for k, v in payload.items()):
        return dict(payload)
    for key in NESTED_KEYS:
        found = _find_state_dict(payload.get(key), depth + 1)
        if found is not None:
            return found
    return None


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state)`` strictly; a DataParallel ``module.`` prefix is dropped when needed."""
    own = module.state_dict()
    if own and not any(k.startswith("module.") for k in own) and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {list(state[k].shape)} in the weights vs {list(own[k].shape)} in the model"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if shapes and not (missing or unexpected):
        raise KdpcError(f"{what}: the weights do not fit the model: {len(shapes)} shape mismatch(es), e.g. {shapes[0]} "
                        "(check the factory's options, --teacher-opt)")
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise KdpcError(f"{what}: the weights do not fit the model: {'; '.join(parts)}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise KdpcError(f"{what}: the weights do not fit the model ({' '.join(str(exc).split())[:300]})") from None
