"""``Teacher``: any loaded teacher plus its adapter, as one callable ``views -> log-probabilities`` in the dataset's
class order. ``kdpc record``, ``kdpc records verify --teacher`` and ``kdpc distill --online-teacher`` all use it."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..data.channels import channel_columns, channels_text
from ..errors import KdpcError, exception_line
from ..models import model_forward
from .adapter import TeacherAdapter
from .formats import LoadedTeacher

PROBE_VIEWS = 2  # views the teacher runs on before any store is touched, to learn and check its output
FORMAT_NAMES = {"kdpc": "kdpc checkpoint", "torchscript": "TorchScript", "export": "torch.export", "onnx": "ONNX",
                "factory": "package.module:fn", "module": "nn.Module"}


class Teacher:
    """Call ``bind(dataset)`` once (checks the teacher against the data, learns its output width and class order),
    then ``teacher(points [B, N, C_data], labels)`` -> float32 log-probs ``[B, num_classes]``.

    kdpc checkpoints need no adapter (their models take the first ``in_channels`` columns); every other format
    is fed and read by its ``TeacherAdapter`` and records classification stores.
    """

    def __init__(self, loaded: LoadedTeacher, adapter: TeacherAdapter | Mapping[str, Any] | None = None) -> None:
        self.loaded = loaded
        self.adapter = adapter if isinstance(adapter, TeacherAdapter) else TeacherAdapter.from_dict(adapter)
        if self.is_kdpc and not self.adapter.is_default:
            raise KdpcError(f"{loaded.source} is a kdpc checkpoint: it needs no adapter (drop the adapter options)")
        for param in loaded.module.parameters():  # frozen: recording runs under inference_mode
            param.requires_grad_(False)
        self.class_names: list[str] | None = None
        self.class_names_from: str | None = None
        self._columns: list[int] | None = None
        self._order: torch.Tensor | None = None
        self._static_batch: int | None = None

    # -------------------------------------------------------------------------------------------- identity
    @property
    def is_kdpc(self) -> bool:
        return self.loaded.format == "kdpc"

    @property
    def format(self) -> str:
        return self.loaded.format

    @property
    def kind(self) -> str:
        """The format in words, for messages."""
        return FORMAT_NAMES.get(self.loaded.format, self.loaded.format)

    @property
    def task(self) -> str:
        return self.loaded.checkpoint.task if self.loaded.checkpoint is not None else "cls"

    @property
    def module(self) -> torch.nn.Module:
        return self.loaded.module

    @property
    def num_classes(self) -> int:
        if self.class_names is None:
            raise RuntimeError("Teacher.bind(dataset) first")
        return len(self.class_names)

    def dataset_info(self) -> dict[str, Any] | None:
        """The data a kdpc checkpoint was trained on (``None`` for other formats: they do not say)."""
        return dict(self.loaded.checkpoint.dataset) if self.loaded.checkpoint is not None else None

    def provenance(self) -> dict[str, Any]:
        """What a store's header keeps about its teacher: format, file, sha256, architecture, adapter."""
        ld = self.loaded
        if ld.checkpoint is not None:
            ckpt = ld.checkpoint
            out = {"format": "kdpc", "arch": ckpt.arch, "config": dict(ckpt.model_config),
                   "num_params": ckpt.num_params, "sha256": ld.sha256, "file": ld.source, "metrics": dict(ckpt.metrics),
                   "dataset_fingerprint": ckpt.dataset.get("fingerprint")}
            from ..plugins import plugin_of

            if plugin_of("model", ckpt.arch):
                out["plugin"] = plugin_of("model", ckpt.arch)
            return out
        out = {"format": ld.format, "arch": ld.arch, "file": ld.source, "sha256": ld.sha256,
               "num_params": ld.num_params, "adapter": self.adapter.to_dict(),
               "class_names_from": self.class_names_from}
        out.update(ld.extra)
        return out

    # ------------------------------------------------------------------------------------------------ data
    def dataset_for(self, name: str | None, root: str | None, split: str, num_points: int | None,
                    options: Mapping[str, Any] | None) -> Any:
        """The split to record: a kdpc checkpoint's own data unless told otherwise; other formats need ``name``."""
        from ..checkpoint import dataset_for_checkpoint
        from ..data import create_dataset

        if self.loaded.checkpoint is not None:
            return dataset_for_checkpoint(self.loaded.checkpoint, name, root, split, num_points, dict(options or {}))
        if not name:
            raise KdpcError(f"a {self.kind} teacher does not say which data it was trained on; pass --dataset NAME "
                            "(e.g. --dataset folder --data-root DIR)")
        return create_dataset(name, root=root, split=split, num_points=num_points, **dict(options or {}))

    def bind(self, dataset: Any, device: torch.device | str = "cpu") -> "Teacher":
        """Check the teacher against ``dataset`` and fix its input columns and output class order (runs it on
        ``PROBE_VIEWS`` evaluation views)."""
        device = torch.device(device)
        self._order = None
        if self.loaded.checkpoint is not None:
            from ..checkpoint import check_checkpoint_data

            check_checkpoint_data(self.loaded.checkpoint, dataset)
            self.class_names = list(self.loaded.checkpoint.class_names)
            self.class_names_from = "teacher"
            return self
        if dataset.task != "cls":
            raise KdpcError(f"a {self.kind} teacher records classification stores only; dataset {dataset.name} is "
                            f"{dataset.task} (part segmentation also records the teacher's features: use a kdpc "
                            "checkpoint)")
        a, ld = self.adapter, self.loaded
        self._columns = channel_columns(dataset.channels, a.channels, f"dataset {dataset.name}")
        wanted_n, wanted_c = a.static_points(ld.input_shape), a.static_channels(ld.input_shape)
        if wanted_n is not None and wanted_n != dataset.num_points:
            raise KdpcError(f"the {self.kind} teacher {ld.source} takes exactly {wanted_n} points per cloud; record "
                            f"with --num-points {wanted_n} (the data gives {dataset.num_points})")
        if wanted_c is not None and wanted_c != len(self._columns):
            raise KdpcError(f"the {self.kind} teacher {ld.source} takes {wanted_c} channels per point but the adapter "
                            f"feeds {len(self._columns)} ({channels_text(a.channels)}); set adapter channels (and "
                            "layout)")
        batch = ld.input_shape[0] if ld.input_shape else None
        self._static_batch = batch if isinstance(batch, int) else None
        probe = torch.from_numpy(np.ascontiguousarray(dataset.points[:PROBE_VIEWS, : dataset.num_points]))
        with torch.inference_mode():  # as it will run: a teacher that fails there fails here, before any store exists
            scores = self._scores(probe.to(device))
        self._fix_class_order(scores.shape[-1], dataset)
        return self

    def _fix_class_order(self, width: int, dataset: Any) -> None:
        own = self.adapter.class_names or self.loaded.class_names
        wanted = list(dataset.class_names)
        if own is None:
            if width != len(wanted):
                raise KdpcError(f"the teacher gives {width} class scores but dataset {dataset.name} has {len(wanted)} "
                                "classes; if that is the right data, name the teacher's classes in output order with "
                                "--adapter class_names=FILE")
            self.class_names, self.class_names_from = wanted, "dataset"
            return
        own = list(own)
        if len(own) != width:
            raise KdpcError(f"the teacher gives {width} class scores but {len(own)} class names")
        self.class_names_from = "adapter" if self.adapter.class_names else "teacher"
        if own != wanted:
            if sorted(own) != sorted(wanted):
                extra = sorted(set(own) - set(wanted))[:3]
                missing = sorted(set(wanted) - set(own))[:3]
                raise KdpcError(f"the teacher's classes are not the classes of dataset {dataset.name} (only the "
                                f"teacher has {extra or 'none'}, only the data has {missing or 'none'})")
            self._order = torch.as_tensor([own.index(name) for name in wanted])  # teacher column of each data class
        self.class_names = wanted

    # ------------------------------------------------------------------------------------------------ call
    def __call__(self, points: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """float32 log-probabilities ``[B, num_classes]`` of the views ``points`` (every channel of the data)."""
        if self.loaded.checkpoint is not None:
            return F.log_softmax(model_forward(self.loaded.module, points, labels).float(), dim=-1)
        if self._columns is None:
            raise RuntimeError("Teacher.bind(dataset) first")
        logprobs = self.adapter.logprobs(self._scores(points))
        if self._order is not None:
            logprobs = logprobs.index_select(-1, self._order.to(logprobs.device))
        return logprobs

    def _scores(self, points: torch.Tensor) -> torch.Tensor:
        x = self.adapter.inputs(points, self._columns or [0, 1, 2])
        size = self._static_batch
        if size is None or size == x.shape[0]:
            return self._run(x)
        chunks = []
        for start in range(0, x.shape[0], size):
            part = x[start : start + size]
            pad = size - part.shape[0]
            if pad:  # a fixed-batch export: fill the last chunk with copies of its last view, drop their outputs
                part = torch.cat([part, part[-1:].expand(pad, *part.shape[1:])])
            chunks.append(self._run(part)[: size - pad])
        return torch.cat(chunks)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        ld = self.loaded
        try:
            out = ld.module(x)
        except KdpcError:
            raise
        except Exception as exc:  # the user's model failed on the input the adapter built: say what it was given
            raise KdpcError(f"the {self.kind} teacher {ld.source} failed on input {list(x.shape)} (adapter layout "
                            f"{self.adapter.layout}, channels {channels_text(self.adapter.channels)}): "
                            f"{exception_line(exc)[:300]}") from None
        scores = self.adapter.pick(out)
        if not torch.is_tensor(scores) or not scores.is_floating_point():
            raise KdpcError(f"the teacher's output is {type(scores).__name__}, not floating class scores")
        if scores.dim() != 2 or scores.shape[0] != x.shape[0] or scores.shape[1] < 2:
            raise KdpcError(f"the teacher's class scores have shape {list(scores.shape)}; expected [batch "
                            f"{x.shape[0]}, classes] (per-point outputs are for part segmentation, which needs a "
                            "kdpc checkpoint)")
        return scores

    def training_module(self) -> torch.nn.Module:
        """The teacher as the ``nn.Module`` a training step calls (``model_forward(teacher, points, labels)``)."""
        return self.loaded.module if self.loaded.checkpoint is not None else _TeacherModule(self)


class _TeacherModule(torch.nn.Module):
    """A bound foreign teacher behind ``model_forward``: returns log-probs (valid logits)."""

    task = "cls"

    def __init__(self, teacher: Teacher) -> None:
        super().__init__()
        self.teacher = teacher
        if isinstance(teacher.module, torch.nn.Module):
            self.inner = teacher.module  # registered, so .to() / .parameters() reach the real model

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.teacher(points)

