"""Loss reports from torch tensors: CPU views, and non-blocking copies off the GPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["on_cuda", "as_numpy", "start_host_copy"]

_HALF = (torch.float16, torch.bfloat16)


def on_cuda(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_cuda


def as_numpy(x: Any) -> Any:
    """A CPU numpy view of a tensor (detached; half precision widened); others as is."""
    if not isinstance(x, torch.Tensor):
        return x
    if x.requires_grad:
        x = x.detach()
    if not x.is_cpu:
        x = x.cpu()
    if x.dtype in _HALF:
        x = x.float()
    return x.numpy()


def start_host_copy(indices: Any, losses: Any) -> tuple:
    """Queue device-to-host copies into pinned buffers and record an event after them.

    The training step is not blocked: the copies run on the current stream and the
    values are read once the event has completed. torch caches pinned host blocks, so
    the small allocations are cheap after the first steps.
    """
    out = []
    for x in (indices, losses):
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        t = t.detach()
        if t.dtype in _HALF:
            t = t.float()
        if t.device.type == "cuda":
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            host.copy_(t, non_blocking=True)
            t = host
        out.append(t)
    event = torch.cuda.Event()
    event.record()
    return out[0], out[1], event
