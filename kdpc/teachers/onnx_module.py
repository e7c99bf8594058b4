"""An ONNX model behind the ``nn.Module`` call the rest of kdpc makes (``pip install 'kdpc[onnx]'``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import KdpcError, exception_line

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


class OnnxModule(torch.nn.Module):
    """Runs the graph with onnxruntime (CUDA when the device is a GPU and the CUDA provider is installed, else
    CPU). One input, the points; returns the output tensor, or a dict ``name -> tensor`` for several outputs."""

    def __init__(self, path: Path, device: torch.device) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise KdpcError(f"{path} is an ONNX model; pip install 'kdpc[onnx]' (onnxruntime) to run it") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise KdpcError(f"{path} is not a usable ONNX model ({exception_line(exc)[:300]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise KdpcError(f"{path}: the ONNX model takes {len(inputs)} inputs ({names}); kdpc feeds one point tensor "
                            "(export a wrapper that takes the points alone)")
        self.input_name = inputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        self.input_dtype = _NUMPY_TYPES.get(inputs[0].type)
        if self.input_dtype is None:
            raise KdpcError(f"{path}: the ONNX model's input is {inputs[0].type}; kdpc feeds float point clouds")
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(getattr(meta, "custom_metadata_map", {}) or {})
        self.graph_name = getattr(meta, "graph_name", "") or "onnx"

    def forward(self, x: torch.Tensor) -> Any:
        feed = {self.input_name: x.detach().to("cpu", torch.float32).numpy().astype(self.input_dtype, copy=False)}
        arrays = self.session.run(None, feed)
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(x.device) for a in arrays]
        return tensors[0] if len(tensors) == 1 else dict(zip(self.output_names, tensors))


def onnx_num_params(path: Path) -> int | None:
    """Elements of the graph's initializers (its weights), when the ``onnx`` package is installed."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))
