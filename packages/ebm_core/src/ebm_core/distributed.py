"""Process-group-agnostic gradient all-reduce for the trainer's ``grad_reduce`` hook.

Works with any initialised ``torch.distributed`` group (gloo on CPU, NCCL on GPU), however it was
started (torchrun, Ray Train, ...): the core never imports the launcher.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def all_reduce_mean(grads: list[Tensor]) -> None:
    """Average gradients in place across all ranks, with one flat all-reduce (as DDP buckets do)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_from_rank0(*modules: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, in place: all workers start from the same weights
    whatever their seeds or initialisation order (as DDP does at construction)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for module in modules:
        for t in module.state_dict().values():
            if torch.is_tensor(t):
                dist.broadcast(t, src=0)
