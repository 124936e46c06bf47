"""Distributed helpers: which rank we are, and merging loss reports across ranks.

The one module of ``impact_loader.sampling`` that imports torch: ``torch.distributed``
is the point. Every other module is numpy-only. Importing it does no work.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["resolve_world", "group_size", "all_gather_reports"]


def group_size() -> int:
    """World size of the default process group, 1 if torch.distributed is not running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def resolve_world(num_replicas: Optional[int], rank: Optional[int]) -> Tuple[int, int]:
    """Return ``(num_replicas, rank)``: the explicit values, else the process group's.

    Args:
        num_replicas: number of ranks sharing each epoch, or None to ask torch.distributed
            (1 when it is not initialised).
        rank: this rank, or None to ask torch.distributed (0 when not initialised).

    Raises:
        ValueError: ``num_replicas`` < 1 or ``rank`` outside [0, num_replicas).
        TypeError: either is not an int.
    """
    running = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if running else 1
    if rank is None:
        rank = dist.get_rank() if running else 0
    for name, value in (("num_replicas", num_replicas), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name}={value!r} must be an int")
    if num_replicas < 1:
        raise ValueError(f"num_replicas={num_replicas} must be >= 1; pass None to use the "
                         "torch.distributed world size")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank={rank} must be in [0, {num_replicas}); pass None to use "
                         "torch.distributed's rank")
    return int(num_replicas), int(rank)


def _device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo and mpi move CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_reports(indices: np.ndarray, losses: np.ndarray
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """Gather every rank's pending loss reports, concatenated in rank order.

    A collective: every rank of the default group must call it, in the same order. The
    ranks' reports have different lengths, so each is padded to the longest before the
    ``all_gather`` and trimmed afterwards.

    Args:
        indices: int64 sample indices reported on this rank.
        losses: float64 losses, same length.

    Returns:
        ``(indices, losses)`` of all ranks, identical on every rank.
    """
    world = group_size()
    if world == 1:
        return indices, losses
    dev = _device()
    size = torch.tensor([indices.size], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    if longest == 0:
        return indices[:0], losses[:0]
    # Pack both arrays into one int64 tensor (losses by bit pattern) for one collective.
    packed = np.zeros((2, longest), dtype=np.int64)
    packed[0, :indices.size] = indices
    packed[1, :losses.size] = np.ascontiguousarray(losses, dtype=np.float64).view(np.int64)
    mine = torch.from_numpy(packed).to(dev)
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine)
    got = [p.cpu().numpy()[:, :c] for p, c in zip(parts, counts)]
    all_idx = np.concatenate([g[0] for g in got])
    all_loss = np.concatenate([np.ascontiguousarray(g[1]).view(np.float64) for g in got])
    return all_idx, all_loss
