"""Tensor-parallel group getters. Size 1 until multi-GPU lands; layers ask here, never assume."""
from __future__ import annotations

import torch.distributed as dist


def get_tp_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_tp_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def tp_all_reduce(x):
    """Sum a row-parallel layer's partial output over the TP group (no-op at size 1)."""
    if get_tp_world_size() > 1:
        dist.all_reduce(x)
    return x


def tp_all_gather_last_dim(x):
    """Concatenate column-parallel shards along the last dim (no-op at size 1)."""
    world = get_tp_world_size()
    if world == 1:
        return x
    import torch

    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=-1)
