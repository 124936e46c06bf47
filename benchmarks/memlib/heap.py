"""What costs memory: heap structures reachable from live objects, tracemalloc sites."""

from __future__ import annotations

import inspect
import os
import sys
import threading
from typing import Any, Dict, List

import numpy as np
import torch

__all__ = ["structure_costs", "tracemalloc_top"]


def structure_costs(roots: Dict[str, Any], min_bytes: int = 4096) -> List[dict]:
    """Heap bytes held by the objects reachable from ``roots``, per attribute path.

    Counts numpy arrays once per owning buffer (views of a shared mapping are reported
    as shared, not heap), ``array.array`` buffers, and containers with their elements
    (a list of N objects shows up here). Paths holding less than ``min_bytes`` are
    left out.
    """
    from array import array
    import mmap

    seen, rows = set(), []
    stack = [(name, obj, 0) for name, obj in roots.items()]
    while stack:
        path, obj, depth = stack.pop()
        if obj is None or id(obj) in seen or depth > 8:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) != id(obj) and id(base) in seen:
                continue
            seen.add(id(base))
            shared = isinstance(base.base, (mmap.mmap, memoryview)) or (
                base.base is not None and not isinstance(base.base, bytes))
            rows.append({"path": path, "bytes": int(base.nbytes), "shared": bool(shared),
                         "what": f"ndarray {base.dtype}[{base.size}]"})
        elif isinstance(obj, array):
            rows.append({"path": path, "bytes": obj.buffer_info()[1] * obj.itemsize,
                         "shared": False, "what": f"array('{obj.typecode}')[{len(obj)}]"})
        elif isinstance(obj, (list, tuple, set, frozenset, dict)) and not (
                isinstance(obj, tuple) and len(obj) < 64):
            items = list(obj.values()) if isinstance(obj, dict) else list(obj)
            scalars = [x for x in items if isinstance(x, (int, float, str, bytes))]
            size = sys.getsizeof(obj) + sum(sys.getsizeof(x) for x in scalars)
            if isinstance(obj, dict):
                size += sum(sys.getsizeof(k) for k in obj if not isinstance(k, str))
            rows.append({"path": path, "bytes": size, "shared": False,
                         "what": f"{type(obj).__name__}[{len(obj)}]"})
            for k, x in (obj.items() if isinstance(obj, dict) else enumerate(items)):
                if not isinstance(x, (int, float, str, bytes)):
                    stack.append((f"{path}[{k!r}]", x, depth + 1))
        elif isinstance(obj, tuple):
            for k, x in enumerate(obj):
                stack.append((f"{path}[{k}]", x, depth + 1))
        elif hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
            top = type(obj).__module__.split(".")[0]
            if isinstance(obj, (type, threading.Thread, torch.nn.Module)) \
                    or inspect.isroutine(obj) or top not in ("impact_loader", "torch",
                                                              "builtins", "collections"):
                continue
            attrs = dict(getattr(obj, "__dict__", {}))
            for slot in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, slot):
                    attrs[slot] = getattr(obj, slot)
            for k, x in attrs.items():
                stack.append((f"{path}.{k}", x, depth + 1))
    return sorted((r for r in rows if r["bytes"] >= min_bytes), key=lambda r: -r["bytes"])


def tracemalloc_top(before, after, n: int, limit: int = 12) -> List[dict]:
    """The allocation sites that grew most between two tracemalloc snapshots."""
    stats = after.compare_to(before, "lineno")
    out = []
    for s in stats[:limit]:
        frame = s.traceback[0]
        out.append({"site": f"{os.path.relpath(frame.filename)}:{frame.lineno}",
                    "bytes": s.size_diff, "bytes_per_sample": s.size_diff / n,
                    "blocks": s.count_diff})
    return out
