"""InlineCollate: small batch tensors travel from DataLoader workers inside the message.

A DataLoader worker sends each batch to the training process through a
``multiprocessing`` queue. PyTorch pickles every tensor in it by moving its storage to
a new shared-memory segment and passing the segment's file descriptor over a Unix
socket to the training process, which connects back to the worker once per tensor.
For a large tensor that avoids copying the bytes; for a small one (the features and
labels of a batch of tabular samples, the index tensor ImpactDataset adds) the
segment, the socket round trip and the mapping cost far more than the bytes: on two
cores, a batch of three tensors of at most 32 KiB took ~1.4 ms of the training
process's CPU to receive this way, against ~0.3 ms when the bytes were pickled in line
(``benchmarks/bench_transfer.py``; figures in ``benchmarks/RESULTS.md``).

:class:`InlineCollate` wraps a collate function: in a worker it marks the collated
batch's small CPU tensors (at most ``max_bytes`` each) to be pickled by value; the
training process unpickles them straight into ordinary tensors, so ``pin_memory``,
custom batch handling and everything downstream see plain tensors. Larger tensors,
tensors numpy cannot represent (``bfloat16``, ...), tensors that need gradients and
tensor subclasses keep PyTorch's shared-memory path. In the main process
(``num_workers=0``) the wrapper returns the batch unchanged.

``ImpactLoader`` uses it by default; with a plain ``DataLoader`` pass
``collate_fn=InlineCollate()`` (or ``InlineCollate(your_collate)``).

A worker whose training process was killed must still exit. PyTorch's worker then
leaves its loop and, on the way out, waits for its queue's feeder thread to flush the
batches it already sent; with batches in line those fill the pipe, nobody reads it any
more, and the worker would wait forever. So the first in-line batch of a worker
registers an exit hook that runs before that wait and ends the process at once when
its parent is gone (it never runs while the parent lives), also when that first batch
comes after the training process died.
"""

from __future__ import annotations

import os
from multiprocessing import util as mp_util
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import default_collate

from ._process import once_per_process, orphaned

__all__ = ["InlineCollate", "DEFAULT_INLINE_BYTES", "checked_size"]

DEFAULT_INLINE_BYTES = 128 * 1024
"""Largest tensor (bytes) sent in line by default. On the receiving side, in line costs
about 2.5 ms of CPU per MiB and a shared-memory segment about 0.3-0.4 ms per tensor
whatever its size; they break even near 300-500 KiB per tensor
(``benchmarks/bench_transfer.py``), so 128 KiB keeps a margin."""


class InlineCollate:
    """A collate function whose small output tensors are pickled by value in workers.

    Args:
        collate_fn: the collate function to wrap (default: PyTorch's
            ``default_collate``). Must be picklable for the ``spawn`` start method.
        max_bytes: largest tensor, in bytes, sent in line; 0 sends none in line.

    Raises:
        ValueError: ``max_bytes`` is negative or not an int.
    """

    def __init__(self, collate_fn: Optional[Callable[[Any], Any]] = None,
                 max_bytes: int = DEFAULT_INLINE_BYTES) -> None:
        self.max_bytes = checked_size(max_bytes, "max_bytes")
        self.collate_fn = collate_fn if collate_fn is not None else default_collate

    def __call__(self, items: Any) -> Any:
        batch = self.collate_fn(items)
        if self.max_bytes == 0 or get_worker_info() is None:
            return batch
        _exit_when_orphaned()
        return _mark(batch, self.max_bytes)

    def __repr__(self) -> str:
        return f"InlineCollate({self.collate_fn!r}, max_bytes={self.max_bytes})"


def checked_size(value: Any, name: str) -> int:
    """``value`` if it is an int >= 0 (a tensor size in bytes), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r} must be an int >= 0 (bytes; 0 sends every "
                         "tensor through shared memory)")
    return value


@once_per_process
def _exit_when_orphaned() -> None:
    """Register (once per process) an exit hook that ends this worker at once when
    its parent is gone, before the queue feeder's join (see the module docstring).
    ``multiprocessing`` runs exit hooks of priority >= 0 before the queues' joins
    (priority -5)."""
    mp_util.Finalize(None, _exit_if_orphaned, exitpriority=100)


def _exit_if_orphaned() -> None:
    if orphaned():
        os._exit(0)  # nobody reads the batches still in the pipe


class _Inline:
    """A tensor that unpickles as an ordinary tensor built from its bytes."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self) -> tuple:
        return torch.from_numpy, (self.array,)


def _mark(x: Any, max_bytes: int) -> Any:
    """``x`` with its small CPU tensors wrapped in :class:`_Inline` (containers as
    ``default_collate`` builds them: tuples, named tuples, lists, mappings)."""
    if type(x) is torch.Tensor:
        if x.is_cpu and not x.requires_grad and not x.is_sparse \
                and x.numel() * x.element_size() <= max_bytes:
            try:
                x = _Inline(x.numpy())
            except (TypeError, RuntimeError):  # a dtype numpy lacks, a conjugate view
                pass
        return x
    if isinstance(x, tuple):
        marked = [_mark(v, max_bytes) for v in x]
        return type(x)(*marked) if hasattr(x, "_fields") else type(x)(marked)
    if isinstance(x, list):
        return [_mark(v, max_bytes) for v in x]
    if isinstance(x, Mapping):
        marked = {k: _mark(v, max_bytes) for k, v in x.items()}
        try:
            return type(x)(marked)
        except TypeError:  # a mapping type that cannot be built from a dict
            return marked
    return x
