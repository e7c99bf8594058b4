"""torchrun support: one process per rank, gloo on CPU and nccl on GPUs; a plain run is a world of one.

Everything here is a no-op (or the identity) in a world of one, so the commands call it unconditionally.
``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; the process group is
joined with ``env://`` (single- and multi-node alike).
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .errors import KdpcError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """True outside torchrun and on global rank 0 (for output that only one process should print)."""
    return int(os.environ.get("RANK", "0")) == 0


def main_log(world: "World", log: Callable[..., None]) -> Callable[..., None]:
    """``log`` on rank 0, a no-op elsewhere: one copy of every log line per job."""
    return log if world.is_main else (lambda *_args, **_kwargs: None)


def init_world(device: torch.device, backend: str | None = None, timeout: timedelta | None = None) -> World:
    """Join the process group torchrun set up (env:// rendezvous); a no-op outside torchrun.

    The backend is nccl for a CUDA device and gloo otherwise, unless ``backend`` says (``kdpc record`` moves no
    tensors between ranks and uses gloo with a long ``timeout`` even on GPUs). On CUDA the rank's device is
    ``cuda:LOCAL_RANK``."""
    if not launched_by_torchrun():
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"init_method": "env://"}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if device.type == "cuda":
            if world.local_rank >= torch.cuda.device_count():
                raise KdpcError(f"local rank {world.local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                                "start at most that many processes per node (--nproc-per-node)")
            torch.cuda.set_device(world.local_rank)
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        if backend == "nccl":
            kwargs["device_id"] = torch.device("cuda", world.local_rank)
        dist.init_process_group(backend=backend, **kwargs)
    return world


@contextlib.contextmanager
def distributed(device: torch.device, backend: str | None = None, timeout: timedelta | None = None) -> Iterator[World]:
    """``init_world`` for the duration of a command; destroys the process group on the way out if it made it."""
    created = launched_by_torchrun() and not dist.is_initialized()
    world = init_world(device, backend, timeout)
    try:
        yield world
    except BaseException:
        if created:  # a failing rank leaves at once (torchrun stops the others), never waiting for them
            shutdown(world, wait_for_peers=False)
        raise
    if created:
        shutdown(world)


def rank_device(device: torch.device, world: World) -> torch.device:
    """Under torchrun every rank drives the GPU of its LOCAL_RANK (whatever cuda index was asked for)."""
    if device.type == "cuda" and world.enabled:
        return torch.device("cuda", world.local_rank)
    return device


def barrier(world: World) -> None:
    if world.enabled:
        dist.barrier()


def broadcast_error(world: World, message: str | None) -> None:
    """Every rank raises the same KdpcError when any rank failed a shared step (e.g. rank 0 creating the store)."""
    if not world.enabled:
        if message:
            raise KdpcError(message)
        return
    box = [message]
    dist.broadcast_object_list(box, src=0)
    if box[0]:
        raise KdpcError(box[0])


def raise_if_any(world: World, message: str | None) -> None:
    """A collective check: when any rank has an error message, every rank raises the first one (rank order).

    Acts as a barrier too. Use after a step every rank runs (each catching its own ``KdpcError``)."""
    if not world.enabled:
        if message:
            raise KdpcError(message)
        return
    messages: list[Any] = [None] * world.size
    dist.all_gather_object(messages, message)
    first = next((m for m in messages if m), None)
    if first:
        raise KdpcError(first)


def everywhere(world: World, fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank; if it raises ``KdpcError`` on any rank, every rank raises that message."""
    result: Any = None
    message = None
    try:
        result = fn()
    except KdpcError as exc:
        message = str(exc)
    raise_if_any(world, message)
    return result


def on_main(world: World, fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only and broadcast its result; its ``KdpcError`` is raised on every rank."""
    result: Any = None
    message = None
    if world.is_main:
        try:
            result = fn()
        except KdpcError as exc:
            message = str(exc)
    if not world.enabled:
        if message:
            raise KdpcError(message)
        return result
    box = [(message, result)]
    dist.broadcast_object_list(box, src=0)
    message, result = box[0]
    if message:
        raise KdpcError(message)
    return result


def broadcast_object(world: World, obj: T, src: int = 0) -> T:
    if not world.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(world: World, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not world.enabled:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate equally-shaped tensors from all ranks along dim 0 (rank order)."""
    if not world.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world.size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_gather_cat_with_grad(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """As :func:`all_gather_cat`, differentiable: the backward sums every rank's gradient for this rank's slice, so a
    loss every rank computes over the gathered batch, averaged by DDP, has the single process's gradient."""
    if not world.enabled:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()))


def shutdown(world: World, wait_for_peers: bool = True) -> None:
    if world.enabled and dist.is_initialized():
        if wait_for_peers:
            # every rank gets here before any tears the group down: a rank that destroys it while another still
            # has gloo work in flight aborts that process ("terminate called without an active exception")
            dist.barrier()
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------- randomness
def decorrelate_rng(world: World, seed: int) -> None:
    """Give ranks > 0 their own torch/numpy/python streams (dropout masks differ per rank); rank 0 keeps the stream
    a single process would have. Parameters are unaffected: DDP broadcasts rank 0's weights at wrap time."""
    if world.rank:
        s = (int(seed) * 1_000_003 + 7919 * world.rank) % (2**63 - 1)
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s % 2**32)


# ----------------------------------------------------------------------------------------- BatchNorm
class _AllReduceSum(torch.autograd.Function):
    """A differentiable sum over ranks: the gradient of each rank's input is the sum of every rank's gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span every rank (for gloo/CPU, which ``nn.SyncBatchNorm`` refuses).

    In training with a process group of more than one rank the mean and (biased) variance are computed over the
    whole global batch with two differentiable all-reduces, so a DDP step equals the single-process step on the same
    global batch; running statistics are updated from the global statistics, as ``F.batch_norm`` would. Otherwise
    (eval, a world of one) it is a plain BatchNorm. State dict keys are those of ``nn.BatchNorm*d``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        view = [1, channels] + [1] * (input.dim() - 2)
        local_count = input.numel() // max(channels, 1)
        sums = _AllReduceSum.apply(torch.cat([input.sum(dims), input.new_full((1,), float(local_count))]))
        count = sums[-1].detach()
        mean = sums[:channels] / count
        centred = input - mean.view(view)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(view)
        if self.affine:
            out = out * self.weight.view(view) + self.bias.view(view)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                n = float(count)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return out


def _convert_cpu_sync_bn(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:  # the same Parameter and buffer objects: nothing is copied
            out.weight = module.weight
            out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu_sync_bn(child))
    return out


def sync_batchnorm(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """Global-batch BatchNorm under torchrun: ``nn.SyncBatchNorm`` on GPUs, :class:`CpuSyncBatchNorm` on CPU.
    The identity in a world of one. Call before wrapping the model in DDP."""
    if not world.enabled:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu_sync_bn(model)


def wrap_ddp(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` under torchrun (rank 0's weights are broadcast to all)."""
    if not world.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(model)
