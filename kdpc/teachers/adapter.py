"""How a foreign teacher is fed and read, stated in config (``--adapter KEY=VALUE``, ``adapter:`` in YAML or a YAML
file of its own), never in code.

=============== ===================================================================================================
``layout``      ``BNC`` (default): the teacher takes ``[B, N, C]``; ``BCN``: ``[B, C, N]`` (PointNet/DGCNN-style
                reference code)
``channels``    which channel groups it takes, in order: ``xyz`` (default), ``xyz+normals``, ``xyz+rgb``, ...
``output``      where the class scores are: unset (the output is the tensor), a dict key (``logits``), a tuple
                index (``0``) or, for ONNX, an output name
``output_type`` ``logits`` (default), ``log_probs`` (e.g. the reference PointNet++ code, which ends in
                ``log_softmax``) or ``probs``
``class_names`` the teacher's classes in output order: a list, or a text file with one name per line. Default:
                the names the file carries, else the dataset's when the output width matches. Names that are a
                permutation of the dataset's are reordered to the dataset's order.
``normalize``   what the teacher's training pipeline did to each cloud, redone per view: ``none`` (default: kdpc's
                unit-sphere samples as augmented), ``unit_sphere`` (centre, scale to max norm 1) or ``unit_cube``
                (centre the bounding box, scale to max |coordinate| 1); xyz only
``scale``       a factor on xyz after ``normalize`` (default 1.0), for teachers trained in other units
=============== ===================================================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..data.channels import channels_text, parse_channels
from ..errors import KdpcError

LAYOUTS = ("BNC", "BCN")
OUTPUT_TYPES = ("logits", "log_probs", "probs")
NORMALIZE = ("none", "unit_sphere", "unit_cube")


@dataclass(frozen=True)
class TeacherAdapter:
    layout: str = "BNC"
    channels: tuple[str, ...] = ("xyz",)
    output: str | int | None = None
    output_type: str = "logits"
    class_names: tuple[str, ...] | None = None
    normalize: str = "none"
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise KdpcError(f"adapter layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.output_type not in OUTPUT_TYPES:
            raise KdpcError(f"adapter output_type must be one of {', '.join(OUTPUT_TYPES)}, got {self.output_type!r}")
        if self.normalize not in NORMALIZE:
            raise KdpcError(f"adapter normalize must be one of {', '.join(NORMALIZE)}, got {self.normalize!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not self.scale > 0:
            raise KdpcError(f"adapter scale must be a number > 0, got {self.scale!r}")
        if self.output is not None and (isinstance(self.output, bool) or not isinstance(self.output, (str, int))):
            raise KdpcError(f"adapter output must be a key (text) or an index (whole number), got {self.output!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TeacherAdapter":
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KdpcError(f"unknown adapter option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "layout" in data:
            data["layout"] = str(data["layout"]).upper()
        if "channels" in data:
            data["channels"] = parse_channels(data["channels"], "adapter channels")
        if data.get("class_names") is not None:
            data["class_names"] = _class_names(data["class_names"])
        if isinstance(data.get("scale"), int) and not isinstance(data.get("scale"), bool):
            data["scale"] = float(data["scale"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, and ``from_dict(to_dict())`` gives the same adapter (stores keep it as provenance)."""
        out = dataclasses.asdict(self)
        out["channels"] = channels_text(self.channels)
        out["class_names"] = None if self.class_names is None else list(self.class_names)
        return out

    @property
    def is_default(self) -> bool:
        return self == TeacherAdapter()

    # ------------------------------------------------------------------------------------------ input side
    def inputs(self, points: torch.Tensor, columns: list[int]) -> torch.Tensor:
        """The teacher's input from a batch of views ``[B, N, C_data]``: the adapter's channel columns, normalised
        and scaled like the teacher's training data, in its layout."""
        index = torch.as_tensor(columns, device=points.device)
        x = points.index_select(-1, index).float()
        if self.normalize != "none" or self.scale != 1.0:
            x = x.clone()
            x[..., :3] = self._normalized_xyz(x[..., :3])
        return x.transpose(1, 2).contiguous() if self.layout == "BCN" else x.contiguous()

    def _normalized_xyz(self, xyz: torch.Tensor) -> torch.Tensor:
        if self.normalize == "unit_sphere":
            xyz = xyz - xyz.mean(dim=1, keepdim=True)
            radius = xyz.norm(dim=-1).amax(dim=1, keepdim=True).clamp_min(1e-12)
            xyz = xyz / radius[..., None]
        elif self.normalize == "unit_cube":
            low, high = xyz.amin(dim=1, keepdim=True), xyz.amax(dim=1, keepdim=True)
            xyz = xyz - (low + high) / 2
            xyz = xyz / xyz.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        return xyz * self.scale

    def static_points(self, input_shape: tuple[Any, ...] | None) -> int | None:
        """The point count a teacher with a fixed input shape needs (None: any)."""
        if not input_shape or len(input_shape) != 3:
            return None
        n = input_shape[2] if self.layout == "BCN" else input_shape[1]
        return n if isinstance(n, int) else None

    def static_channels(self, input_shape: tuple[Any, ...] | None) -> int | None:
        if not input_shape or len(input_shape) != 3:
            return None
        c = input_shape[1] if self.layout == "BCN" else input_shape[2]
        return c if isinstance(c, int) else None

    # ----------------------------------------------------------------------------------------- output side
    def pick(self, out: Any) -> torch.Tensor:
        """The class scores out of whatever the teacher returned."""
        if self.output is None:
            if torch.is_tensor(out):
                return out
            if isinstance(out, Mapping):
                raise KdpcError(f"the teacher returns a dict (keys {', '.join(map(str, out))}); set the adapter's "
                                "output to the key of its class scores, e.g. --adapter output=logits")
            if isinstance(out, (tuple, list)):
                raise KdpcError(f"the teacher returns a tuple of {len(out)}; set the adapter's output to the index of "
                                "its class scores, e.g. --adapter output=0")
            raise KdpcError(f"the teacher returns a {type(out).__name__}, not a tensor of class scores")
        if isinstance(out, Mapping):
            if self.output in out:
                return out[self.output]
            if isinstance(self.output, int) and 0 <= self.output < len(out):
                return list(out.values())[self.output]
            raise KdpcError(f"the teacher's output has no {self.output!r} (it has {', '.join(map(str, out))})")
        if isinstance(out, (tuple, list)):
            if isinstance(self.output, int) and -len(out) <= self.output < len(out):
                return out[self.output]
            raise KdpcError(f"adapter output={self.output!r} but the teacher returns a tuple of {len(out)}")
        if torch.is_tensor(out):
            raise KdpcError(f"adapter output={self.output!r} but the teacher returns a single tensor; leave output "
                            "unset")
        raise KdpcError(f"the teacher returns a {type(out).__name__}, not class scores")

    def logprobs(self, scores: torch.Tensor) -> torch.Tensor:
        """float32 log-probabilities from the teacher's class scores ``[B, K]``."""
        x = scores.float()
        if self.output_type == "probs":
            x = torch.log(x.clamp_min(torch.finfo(torch.float32).tiny))
        return F.log_softmax(x, dim=-1)  # for log_probs: a renormalisation that leaves exact log-probs unchanged


def _class_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        names = tuple(str(v) for v in value)
    elif isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_file():
            raise KdpcError(f"adapter class_names: {value} is neither a list nor a file of names (one per line)")
        with open(path, encoding="utf-8") as handle:
            names = tuple(line.strip() for line in handle if line.strip())
    else:
        raise KdpcError(f"adapter class_names must be a list or a file of names, got {value!r}")
    if not names or len(set(names)) != len(names):
        raise KdpcError("adapter class_names must name each class once")
    return names
