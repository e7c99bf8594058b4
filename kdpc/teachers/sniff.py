"""What a teacher file is, decided by its content (never by its suffix alone), and what to tell a user about the
files kdpc cannot run as a teacher."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

TORCH_ZIP = "torch-save"
TORCHSCRIPT = "torchscript"
EXPORT = "export"
ONNX = "onnx"
SAFETENSORS = "safetensors"
PICKLE = "pickle"
HDF5 = "hdf5"
TEXT = "text"
EMPTY = "empty"
UNKNOWN = "unknown"

TEACHER_OPTIONS = ("--teacher takes a kdpc checkpoint, a TorchScript archive, a torch.export .pt2 program, an ONNX "
                   "model, or package.module:build_fn with --teacher-weights FILE")
FACTORY_HINT = "give --teacher your_module:build_fn (a function returning the nn.Module) --teacher-weights {path}"

# ModelProto field tags that can follow ir_version (field 1) at the start of an .onnx file
_ONNX_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0x8A}


def sniff(path: Path) -> str:
    """One of the format constants above, from the file's bytes."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head:
        return EMPTY
    if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
        return _zip_kind(path)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return HDF5
    if len(head) > 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 1 << 28:
        return SAFETENSORS
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return PICKLE  # a legacy (pre-zip) torch.save file or a plain pickle
    if _looks_like_onnx(head) or (path.suffix.lower() == ".onnx" and head[0] == 0x08):
        return ONNX
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return TEXT
        except UnicodeDecodeError:
            pass
    return UNKNOWN


def _zip_kind(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return TORCHSCRIPT
    if any(n.endswith("/archive_format") or "/models/" in n for n in names):
        return EXPORT
    if any(n.endswith("data.pkl") for n in names):
        return TORCH_ZIP
    return UNKNOWN


def _looks_like_onnx(head: bytes) -> bool:
    # field 1 (ir_version, varint) first, then another ModelProto field
    return len(head) > 3 and head[0] == 0x08 and 1 <= head[1] < 0x80 and head[2] in _ONNX_TAGS


def describe_unusable(path: Path, kind: str) -> str:
    """The one line for a file that is none of the teacher formats."""
    if kind == EMPTY:
        return f"{path} is empty; {TEACHER_OPTIONS}"
    if kind == TEXT:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = next((line.strip() for line in handle if line.strip()), "")
        return (f"{path} is a text file, not a kdpc checkpoint or any model format (first line {first[:60]!r}); "
                f"{TEACHER_OPTIONS}")
    if kind == HDF5:
        return (f"{path} is an HDF5 file (a Keras model or a data file?), not a PyTorch or ONNX teacher; "
                f"{TEACHER_OPTIONS}")
    if kind == SAFETENSORS:
        return (f"{path} is a safetensors file: weights without the architecture, not a kdpc checkpoint; "
                + FACTORY_HINT.format(path=path))
    return f"{path} is not a kdpc checkpoint nor a model file kdpc can read ({kind}); {TEACHER_OPTIONS}"


# Keys that name the origin of a training checkpoint: (origin, keys that must all be present, weights key)
_ORIGINS = (
    ("the official PointMLP repo's training checkpoint", ("net",), "net"),
    ("a Pointcept training checkpoint", ("state_dict", "epoch"), "state_dict"),
    ("an OpenPoints / PointNeXt training checkpoint", ("model", "epoch"), "model"),
    ("a PointNet/PointNet++ (yanx27) training checkpoint", ("model_state_dict",), "model_state_dict"),
    ("a training checkpoint", ("state_dict",), "state_dict"),
    ("a training checkpoint", ("model",), "model"),
)


def describe_payload(path: Path, payload: Any) -> str:
    """The one line for a ``torch.save`` file that loads weights-only but is not a kdpc checkpoint."""
    if isinstance(payload, Mapping) and payload and all(torch.is_tensor(v) for v in payload.values()):
        example = next(iter(payload))
        return (f"{path} is a bare state dict ({len(payload)} tensors, e.g. {example!r}): weights without the "
                "architecture, not a kdpc checkpoint; " + FACTORY_HINT.format(path=path))
    if isinstance(payload, Mapping):
        keys = [str(k) for k in payload]
        for origin, required, weights_key in _ORIGINS:
            if all(k in payload for k in required) and isinstance(payload.get(weights_key), Mapping):
                shown = ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "")
                return (f"{path} is {origin} (keys {shown}): weights without the architecture, not a kdpc checkpoint;"
                        f" {FACTORY_HINT.format(path=path)} (the weights under {weights_key!r} are found)")
        return (f"{path} holds a dict (keys {', '.join(keys[:6])}) that is not a kdpc checkpoint and holds no state "
                f"dict; {TEACHER_OPTIONS}")
    return f"{path} holds a {type(payload).__name__}, not a kdpc checkpoint or a state dict; {TEACHER_OPTIONS}"


def describe_refused_pickle(path: Path) -> str:
    """The one line for a ``torch.save`` file a weights-only load refuses: it pickles Python objects (a whole
    ``nn.Module``, custom classes). Names the classes without running anything."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # an old torch without the helper, or a damaged file
        found = []
    classes = [g for g in found if not g.startswith(("torch.", "collections.", "numpy."))] or found
    shown = ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")
    what = f"pickled Python objects ({shown})" if shown else "pickled Python objects"
    return (f"{path} holds {what}, refused by a weights-only load: probably a whole nn.Module saved with "
            "torch.save(model). kdpc never unpickles code; save model.state_dict() and "
            f"{FACTORY_HINT.format(path='WEIGHTS')}, or export the model (torch.jit.script(model).save(...), "
            "torch.export.save(...) or torch.onnx.export(...))")
