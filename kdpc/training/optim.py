"""The optimiser and schedule every training command uses: AdamW without weight decay on biases and norms, linear
warm-up then cosine decay to 1 % of the peak (torch's own schedulers)."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)



def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                   min_ratio: float = 0.01) -> LRScheduler:
    """Per-step schedule: ``lr * (s + 1) / warmup`` for the first ``warmup_steps`` steps, then a cosine from ``lr``
    to ``min_ratio * lr`` at ``total_steps``."""
    base = optimizer.param_groups[0]["lr"]
    decay_steps = max(1, total_steps - warmup_steps)
    cosine = CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=min_ratio * base)
    if warmup_steps < 1:
        return cosine
    if warmup_steps == 1:
        warmup: LRScheduler = ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        warmup = LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=warmup_steps - 1)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
