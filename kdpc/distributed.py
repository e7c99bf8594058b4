"""torchrun support: one process per rank, gloo on CPU and nccl on GPUs; a plain run is a world of one."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import KdpcError


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


def init_world(device: torch.device) -> World:
    """Join the process group torchrun set up (env:// rendezvous); a no-op outside torchrun."""
    if not launched_by_torchrun():
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend=backend)
    return world


def rank_device(device: torch.device, world: World) -> torch.device:
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


def shutdown(world: World) -> None:
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()
