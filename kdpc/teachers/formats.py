"""Loading a teacher in any of the formats ``--teacher`` accepts, into one ``LoadedTeacher``.

=============== ============================================================ ========================================
format          what ``--teacher`` names                                      how it is opened
=============== ============================================================ ========================================
``kdpc``        a checkpoint of ``kdpc train`` / ``kdpc distill``             ``torch.load(weights_only=True)``
``torchscript`` ``torch.jit.script(model).save(path)`` / ``jit.trace``        ``torch.jit.load``
``export``      ``torch.export.save(torch.export.export(model, ...), path)``  ``torch.export.load``
``onnx``        ``torch.onnx.export(...)`` or any ONNX model                  onnxruntime (``kdpc[onnx]``)
``factory``     ``package.module:build_fn`` + ``--teacher-weights FILE``      imports the user's module, calls
                                                                              ``build_fn(**teacher_cfg)``, loads the
                                                                              state dict (``weights_only``/safetensors)
``module``      an ``nn.Module`` object (Python API only)                    used as it is
=============== ============================================================ ========================================

Files are recognised by content. TorchScript archives and ``torch.export`` programs may carry their class names as
an extra file ``class_names.txt`` (one per line; ``_extra_files=`` / ``extra_files=`` when saving); ONNX models as
the metadata property ``class_names``.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from ..checkpoint import FORMAT as KDPC_FORMAT
from ..checkpoint import Checkpoint, checkpoint_from_payload, file_sha256
from ..errors import KdpcError, exception_line
from ..plugins import import_user_module
from . import sniff
from .weights import load_into, read_state_dict, torch_load

FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
CLASS_NAMES_FILE = "class_names.txt"


@dataclass
class LoadedTeacher:
    format: str
    module: torch.nn.Module
    arch: str  # what it is, for `records info`: the kdpc architecture, the scripted class, the factory, ...
    source: str  # the file name, or package.module:fn
    sha256: str | None  # of the file (of the weights file for a factory; of the state dict for a module)
    num_params: int | None
    class_names: list[str] | None = None
    checkpoint: Checkpoint | None = None  # kdpc checkpoints only
    input_shape: tuple[Any, ...] | None = None  # a fixed input shape ([B, N, C] with None where free)
    extra: dict[str, Any] = field(default_factory=dict)


def is_factory_spec(spec: str) -> bool:
    return bool(FACTORY_SPEC.match(spec)) and not Path(spec).exists()


def load_file_or_factory(spec: str, weights: str | None, options: dict[str, Any] | None,
                         device: torch.device) -> LoadedTeacher:
    if not spec:
        raise KdpcError("--teacher is required: a checkpoint or model file, or package.module:build_fn")
    if is_factory_spec(spec):
        return load_factory(spec, weights, options or {}, device)
    path = Path(spec).expanduser()
    if not path.exists():
        raise KdpcError(f"teacher {spec} does not exist (a file, or package.module:build_fn for your own code)")
    if path.is_dir():
        raise KdpcError(f"teacher {spec} is a folder; {sniff.TEACHER_OPTIONS}")
    if weights:
        raise KdpcError("--teacher-weights goes with --teacher package.module:build_fn (a file teacher carries its "
                        "own weights)")
    if options:
        raise KdpcError("--teacher-opt goes with --teacher package.module:build_fn (the factory's keyword arguments)")
    kind = sniff.sniff(path)
    if kind in (sniff.TORCH_ZIP, sniff.PICKLE):
        return load_torch_save(path, device)
    if kind == sniff.TORCHSCRIPT:
        return load_torchscript(path, device)
    if kind == sniff.EXPORT:
        return load_export(path, device)
    if kind == sniff.ONNX:
        return load_onnx(path, device)
    raise KdpcError(sniff.describe_unusable(path, kind))


def load_torch_save(path: Path, device: torch.device) -> LoadedTeacher:
    payload = torch_load(path)
    if not (isinstance(payload, dict) and payload.get("format") == KDPC_FORMAT):
        raise KdpcError(sniff.describe_payload(path, payload))
    ckpt = checkpoint_from_payload(path, payload)
    model = ckpt.build_model(device)
    return LoadedTeacher("kdpc", model, ckpt.arch, path.name, file_sha256(path), ckpt.num_params,
                         list(ckpt.class_names), checkpoint=ckpt)


def load_torchscript(path: Path, device: torch.device) -> LoadedTeacher:
    extra = {CLASS_NAMES_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:
        raise KdpcError(f"{path} looks like a TorchScript archive but does not load "
                        f"({exception_line(exc)[:300]})") from None
    module.eval()
    arch = f"torchscript {getattr(module, 'original_name', '') or 'module'}"
    return LoadedTeacher("torchscript", module, arch, path.name, file_sha256(path), _count(module),
                         _names(extra[CLASS_NAMES_FILE]))


@contextlib.contextmanager
def _weights_only_unpickling() -> Iterator[None]:
    """``torch.export.load`` unpickles some archive entries with ``weights_only=False`` or ``pickle.loads`` (sample
    inputs that fail a weights-only load, pickled weights, opaque objects). A ``.pt2`` is untrusted input, so while
    it loads every ``torch.load`` is weights-only and the plain unpicklers refuse."""
    real_load = torch.load

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("pickled Python objects in a torch.export archive")

    patches = [(torch, "load", weights_only_load), (pickle, "loads", refuse), (torch._C, "_pickle_load_obj", refuse)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def load_export(path: Path, device: torch.device) -> LoadedTeacher:
    extra = {CLASS_NAMES_FILE: ""}
    try:
        with _weights_only_unpickling():
            program = torch.export.load(str(path), extra_files=extra)
        module = program.module()
    except pickle.UnpicklingError:
        raise KdpcError(f"{path} is a torch.export program holding pickled Python objects, refused by a weights-only "
                        "load; kdpc never unpickles code (export a model whose inputs, weights and constants are "
                        "tensors)") from None
    except Exception as exc:
        raise KdpcError(f"{path} looks like a torch.export program but does not load "
                        f"({exception_line(exc)[:300]})") from None
    if device.type != "cpu":
        try:
            module = module.to(device)
        except Exception as exc:
            raise KdpcError(f"{path}: the exported program cannot move to {device} ({exception_line(exc)}); record "
                            "with --device cpu or export it on that device") from None
    return LoadedTeacher("export", module, "torch.export program", path.name, file_sha256(path),
                         sum(int(p.numel()) for p in program.parameters()), _names(extra[CLASS_NAMES_FILE]),
                         input_shape=_export_input_shape(program))


def _export_input_shape(program: Any) -> tuple[Any, ...] | None:
    users = list(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in users[:1]:
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is not None:
                return tuple(int(d) if isinstance(d, int) else None for d in shape)
    return None


def load_onnx(path: Path, device: torch.device) -> LoadedTeacher:
    from .onnx_module import OnnxModule, onnx_num_params

    module = OnnxModule(path, device)
    return LoadedTeacher("onnx", module, f"onnx {module.graph_name}", path.name, file_sha256(path),
                         onnx_num_params(path), _names(module.metadata.get("class_names", "")),
                         input_shape=module.input_shape)


def load_factory(spec: str, weights: str | None, options: dict[str, Any], device: torch.device) -> LoadedTeacher:
    module_name, fn_name = spec.split(":")
    mod = import_user_module(module_name, f"teacher {spec}")
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise KdpcError(f"teacher {spec}: module {module_name} has no function {fn_name!r}")
    try:
        model = fn(**options)
    except KdpcError:
        raise
    except Exception as exc:
        raise KdpcError(f"teacher {spec}({', '.join(f'{k}={v!r}' for k, v in options.items())}) failed: "
                        f"{exception_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise KdpcError(f"teacher {spec} returned a {type(model).__name__}; it must return a torch.nn.Module")
    sha = None
    if weights:
        load_into(model, read_state_dict(weights), f"teacher {spec} with weights {weights}")
        sha = file_sha256(weights)
    model = model.to(device).eval()
    extra = {"factory": spec, "factory_args": dict(options), "weights": Path(weights).name if weights else None}
    return LoadedTeacher("factory", model, spec, Path(weights).name if weights else spec, sha, _count(model),
                         list(getattr(model, "class_names", None) or []) or None, extra=extra)


def from_module(module: torch.nn.Module, device: torch.device) -> LoadedTeacher:
    """An ``nn.Module`` handed over in Python; its provenance hash is over its state dict."""
    if not isinstance(module, torch.nn.Module):
        raise KdpcError(f"a teacher must be a torch.nn.Module or a path, got {type(module).__name__}")
    cls = f"{type(module).__module__}.{type(module).__qualname__}"
    module = module.to(device).eval()
    return LoadedTeacher("module", module, cls, cls, state_dict_sha256(module), _count(module),
                         list(getattr(module, "class_names", None) or []) or None)


def state_dict_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{list(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _names(text: str | bytes) -> list[str] | None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.strip()
    if not text:
        return None
    if text.startswith("["):
        import json

        try:
            return [str(n) for n in json.loads(text)]
        except ValueError:
            pass
    return [line.strip() for line in text.splitlines() if line.strip()]
