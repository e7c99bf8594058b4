"""Sources of the self-target ``q_self`` for negative-weight self-distillation (NWSD).

Three sources, all returning **detached** log-probabilities with the class dimension last:

* ``"ema"`` (:class:`EmaModel`): an exponential-moving-average copy of the student (``torch.optim.swa_utils``'
  ``AveragedModel``), run in eval mode on the same input as the student.
* ``"past"`` (:class:`PastPredictionBank`): the student's own log-probabilities for the same record at its
  previous visit (previous epoch), with a mask for records not visited yet.
* ``"sharpen"`` (:func:`sharpen_targets`): the student's current logits re-tempered at a second temperature.

:func:`make_self_target` wraps each in a :class:`SelfTarget` with one interface for the trainer::

    src = make_self_target(cfg.source, model=student, num_records=len(dataset), num_classes=C)
    ...
    logits = student(x)
    q_self, mask = src.targets(logits, inputs=x, record_ids=ids)     # before the optimizer step
    nwsd, frac_capped = nwsd_loss(logits, q_self, T, max_kl, mask=mask)
    ...
    optimizer.step()
    src.update(model=student, student_logits=logits, record_ids=ids)  # after the optimizer step
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..errors import KdpcError
from ..models import unwrap_model
from .losses import check_temperature

__all__ = [
    "SELF_TARGET_SOURCES",
    "EmaModel",
    "PastPredictionBank",
    "sharpen_targets",
    "SelfTarget",
    "EmaSelfTarget",
    "PastSelfTarget",
    "SharpenSelfTarget",
    "make_self_target",
]

SELF_TARGET_SOURCES = ("ema", "past", "sharpen")


def _logits_of(output: Any) -> Tensor:
    """The logits in a model's output: the tensor itself, the first element of a tuple/list, or ``out["logits"]``."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, Mapping) and isinstance(output.get("logits"), Tensor):
        return output["logits"]
    raise KdpcError(
        f"cannot find logits in a model output of type {type(output).__name__}: "
        "expected a tensor, a tuple whose first element is the logits, or a dict with a 'logits' key"
    )


# ----------------------------------------------------------------------------------------------------- EMA


class EmaModel:
    """An exponential-moving-average copy of a student: ``AveragedModel`` with ``get_ema_multi_avg_fn(decay)``.

    After each optimizer step, :meth:`update` sets every parameter to ``ema = decay * ema + (1 - decay) * param``;
    buffers (BatchNorm running mean/var and ``num_batches_tracked``) are copied verbatim, not averaged
    (``use_buffers=False``). The copy is always run in eval mode, with no gradient.

    Args:
        model: the student (a DDP/DataParallel/torch.compile wrapper is unwrapped). It is deep-copied, so the EMA
            lives on the student's device and starts equal to it.
        decay: in ``[0, 1)``; 0.999 by default (an averaging horizon of about 1000 steps).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = _check_decay(decay)
        self.averaged = AveragedModel(unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(self.decay),
                                      use_buffers=False)
        # AveragedModel's first update copies the model; the deep copy already is that first average.
        self.averaged.n_averaged.fill_(1)
        self.module.eval()
        self.module.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged copy of the student."""
        return self.averaged.module

    @property
    def num_updates(self) -> int:
        return int(self.averaged.n_averaged) - 1

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the EMA one step toward ``model`` (call after each optimizer step)."""
        src = unwrap_model(model)
        # AveragedModel pairs parameters by position: check that they are the same ones.
        if [n for n, _ in self.module.named_parameters()] != [n for n, _ in src.named_parameters()]:
            raise ValueError("EmaModel.update: the model's parameters do not match the EMA copy's")
        self.averaged.update_parameters(src)

    @torch.no_grad()
    def logprobs(self, *inputs: Any, **kwargs: Any) -> Tensor:
        """``log_softmax`` (float32, last dim) of the EMA copy's output on the given inputs; detached.

        The forward runs in eval mode under whatever autocast the caller has; only the log-softmax is forced to
        float32. The output may be a tensor, a tuple whose first element is the logits, or ``{"logits": ...}``.
        """
        self.module.eval()
        out = _logits_of(self.module(*inputs, **kwargs))  # under the caller's autocast, like the student
        with torch.autocast(device_type=out.device.type, enabled=False):
            return F.log_softmax(out.float(), dim=-1).detach()

    def to(self, device: torch.device | str) -> "EmaModel":
        # The step counter ``n_averaged`` stays on the CPU: AveragedModel branches on it every update, which on a
        # GPU would be a device sync per step.
        self.module.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            self.module.load_state_dict(state["module"])
        except (KeyError, RuntimeError) as e:
            raise KdpcError(f"cannot resume the EMA model from this checkpoint (different student?): {e}") from e
        self.decay = _check_decay(state.get("decay", self.decay))
        self.averaged.multi_avg_fn = get_ema_multi_avg_fn(self.decay)
        self.averaged.n_averaged.fill_(int(state.get("num_updates", 0)) + 1)


def _check_decay(decay: float) -> float:
    d = float(decay)
    if not 0.0 <= d < 1.0:
        raise KdpcError(f"ema decay must be in [0, 1), got {decay!r}")
    return d


# -------------------------------------------------------------------------------------- past predictions


class PastPredictionBank:
    """The student's log-probabilities for each record at its previous visit.

    Storage is ``[num_records, *shape]`` in ``dtype`` (float16 by default: log-probabilities down to about -65000
    and ``-inf`` are representable, with a relative error of about 5e-4) on ``device`` (CPU by default), plus a
    bool "seen" flag per record. Look up **before** storing the current visit's prediction.

    Args:
        num_records: number of records (views) in the training set; ids are ``0 .. num_records - 1``.
        num_classes: classes per record, or a shape tuple (e.g. ``(N, P)`` for per-point predictions).
        dtype: storage dtype.
        device: storage device.
    """

    def __init__(
        self,
        num_records: int,
        num_classes: int | Sequence[int],
        dtype: torch.dtype = torch.float16,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (int(num_classes),) if isinstance(num_classes, int) else tuple(int(c) for c in num_classes)
        if num_records <= 0 or not shape or any(c <= 0 for c in shape):
            raise KdpcError(f"past-prediction bank needs num_records > 0 and positive class shape, got {num_records}, {shape}")
        if not dtype.is_floating_point:
            raise KdpcError(f"past-prediction bank dtype must be floating point, got {dtype}")
        self.num_records = int(num_records)
        self.shape = shape
        self.logprobs = torch.zeros((self.num_records, *shape), dtype=dtype, device=device)
        self.seen = torch.zeros(self.num_records, dtype=torch.bool, device=device)

    def _index(self, record_ids: Tensor) -> Tensor:
        ids = record_ids.reshape(-1).long().to(self.seen.device)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_records):
            raise KdpcError(f"record ids must lie in [0, {self.num_records}); is the bank sized for this store?")
        return ids

    @torch.no_grad()
    def lookup(self, record_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(logprobs, has_past)`` for ``record_ids`` ``[B]``: float32 ``[B, *shape]`` and bool ``[B]``, on
        ``record_ids``' device. Rows with ``has_past == False`` are zeros and must be masked out of the loss."""
        ids = self._index(record_ids)
        out = self.logprobs.index_select(0, ids).float()
        has = self.seen.index_select(0, ids)
        return out.to(record_ids.device), has.to(record_ids.device)

    @torch.no_grad()
    def update(self, record_ids: Tensor, logprobs: Tensor) -> None:
        """Store ``logprobs`` ``[B, *shape]`` (detached, cast to the storage dtype) for ``record_ids`` ``[B]``."""
        ids = self._index(record_ids)
        if tuple(logprobs.shape) != (ids.numel(), *self.shape):
            raise KdpcError(
                f"bank update got logprobs {tuple(logprobs.shape)}, expected {(ids.numel(), *self.shape)}"
            )
        self.logprobs.index_copy_(0, ids, logprobs.detach().to(device=self.logprobs.device, dtype=self.logprobs.dtype))
        self.seen[ids] = True

    def state_dict(self) -> dict[str, Tensor]:
        return {"logprobs": self.logprobs, "seen": self.seen}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        lp, seen = state.get("logprobs"), state.get("seen")
        if not isinstance(lp, Tensor) or not isinstance(seen, Tensor):
            raise KdpcError("past-prediction bank state needs 'logprobs' and 'seen' tensors")
        if tuple(lp.shape) != tuple(self.logprobs.shape) or tuple(seen.shape) != tuple(self.seen.shape):
            raise KdpcError(
                f"cannot resume the past-prediction bank: checkpoint holds {tuple(lp.shape)}, "
                f"this run needs {tuple(self.logprobs.shape)} (different store or number of classes?)"
            )
        self.logprobs.copy_(lp.to(dtype=self.logprobs.dtype))
        self.seen.copy_(seen.to(dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- sharpen


def sharpen_targets(student_logits: Tensor, sharpen_temperature: float) -> Tensor:
    """``log_softmax(student_logits / sharpen_temperature)`` in float32, detached (class dim last).

    A temperature below 1 sharpens, above 1 softens. Note that :func:`~kdpc.distill.losses.nwsd_loss` then divides
    by its own ``T``, so the target distribution is ``softmax(logits / (sharpen_temperature * T))``.
    """
    ts = check_temperature(sharpen_temperature, "sharpen temperature")
    with torch.no_grad(), torch.autocast(device_type=student_logits.device.type, enabled=False):
        return F.log_softmax(student_logits.detach().float() / ts, dim=-1)


# -------------------------------------------------------------------------------------- one interface


class SelfTarget:
    """A source of NWSD self-targets with one interface for the trainer.

    * :meth:`targets` (before the optimizer step) -> ``(q_self_logprobs, mask)``: detached float32 log-probs with
      the student logits' shape, and a bool mask over records (``student_logits.shape[:-1]``) or ``None`` (all).
    * :meth:`update` (after the optimizer step) advances the source's state.
    * :meth:`state_dict` / :meth:`load_state_dict` for resume.
    """

    name: str = ""

    def targets(
        self, student_logits: Tensor, *, inputs: Any = None, record_ids: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def update(
        self,
        *,
        model: nn.Module | None = None,
        student_logits: Tensor | None = None,
        record_ids: Tensor | None = None,
    ) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class EmaSelfTarget(SelfTarget):
    """``q_self`` = the EMA copy's log-probabilities on the same inputs (a tensor, or a tuple of positional args)."""

    name = "ema"

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.ema = EmaModel(model, decay=decay)

    def targets(self, student_logits, *, inputs=None, record_ids=None):
        if inputs is None:
            raise KdpcError("the 'ema' self-target needs the student's inputs")
        args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        q = self.ema.logprobs(*args)
        if q.shape != student_logits.shape:
            raise KdpcError(f"EMA output {tuple(q.shape)} does not match the student's {tuple(student_logits.shape)}")
        return q, None

    def update(self, *, model=None, student_logits=None, record_ids=None):
        if model is None:
            raise KdpcError("the 'ema' self-target update needs the student model")
        self.ema.update(model)

    def state_dict(self):
        return self.ema.state_dict()

    def load_state_dict(self, state):
        self.ema.load_state_dict(state)


class PastSelfTarget(SelfTarget):
    """``q_self`` = the student's log-probabilities for the record at its previous visit; unseen records masked."""

    name = "past"

    def __init__(
        self,
        num_records: int,
        num_classes: int | Sequence[int],
        dtype: torch.dtype = torch.float16,
        device: torch.device | str = "cpu",
    ) -> None:
        self.bank = PastPredictionBank(num_records, num_classes, dtype=dtype, device=device)

    def targets(self, student_logits, *, inputs=None, record_ids=None):
        if record_ids is None:
            raise KdpcError("the 'past' self-target needs record ids")
        q, has = self.bank.lookup(record_ids)
        q = q.to(student_logits.device)
        if q.shape != student_logits.shape:
            raise KdpcError(f"past predictions {tuple(q.shape)} do not match the student's {tuple(student_logits.shape)}")
        mask = has.to(student_logits.device)
        if student_logits.dim() > 2:  # per-point logits: a record's mask covers all of its points
            mask = mask.reshape(-1, *([1] * (student_logits.dim() - 2))).expand(student_logits.shape[:-1])
        return q, mask

    def update(self, *, model=None, student_logits=None, record_ids=None):
        if student_logits is None or record_ids is None:
            raise KdpcError("the 'past' self-target update needs the student logits and record ids")
        with torch.no_grad(), torch.autocast(device_type=student_logits.device.type, enabled=False):
            lp = F.log_softmax(student_logits.detach().float(), dim=-1)
        self.bank.update(record_ids, lp)

    def state_dict(self):
        return self.bank.state_dict()

    def load_state_dict(self, state):
        self.bank.load_state_dict(state)


class SharpenSelfTarget(SelfTarget):
    """``q_self`` = the student's current logits at a second temperature (stateless)."""

    name = "sharpen"

    def __init__(self, sharpen_temperature: float = 0.5) -> None:
        self.sharpen_temperature = check_temperature(sharpen_temperature, "sharpen temperature")

    def targets(self, student_logits, *, inputs=None, record_ids=None):
        return sharpen_targets(student_logits, self.sharpen_temperature), None


def make_self_target(
    source: str,
    *,
    model: nn.Module | None = None,
    decay: float = 0.999,
    num_records: int | None = None,
    num_classes: int | Sequence[int] | None = None,
    bank_dtype: torch.dtype = torch.float16,
    bank_device: torch.device | str = "cpu",
    sharpen_temperature: float = 0.5,
) -> SelfTarget:
    """Build the self-target source named ``source`` (``"ema"``, ``"past"`` or ``"sharpen"``).

    ``"ema"`` needs ``model`` (and uses ``decay``); ``"past"`` needs ``num_records`` and ``num_classes`` (and uses
    ``bank_dtype``/``bank_device``); ``"sharpen"`` uses ``sharpen_temperature``. Other arguments are ignored.
    An unknown source or a missing argument raises ``KdpcError``.
    """
    if source == "ema":
        if model is None:
            raise KdpcError("self-target source 'ema' needs the student model")
        return EmaSelfTarget(model, decay=decay)
    if source == "past":
        if num_records is None or num_classes is None:
            raise KdpcError("self-target source 'past' needs num_records and num_classes")
        return PastSelfTarget(num_records, num_classes, dtype=bank_dtype, device=bank_device)
    if source == "sharpen":
        return SharpenSelfTarget(sharpen_temperature)
    raise KdpcError(f"unknown self-target source {source!r}; choose one of {SELF_TARGET_SOURCES}")
