"""InlineCollate: small tensors arrive by value, large ones through shared memory."""

from collections import namedtuple

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import impact_loader as il
from impact_loader.collate import InlineCollate

Pair = namedtuple("Pair", "features label")


class Items(Dataset):
    """Item i: small float features, an int label, a bfloat16 vector, a large tensor,
    a transposed (non-contiguous) matrix, all derived from i."""

    def __len__(self):
        return 24

    def __getitem__(self, i):
        return {"pair": Pair(torch.arange(8, dtype=torch.float32) + i, i % 5),
                "half": torch.full((4,), float(i), dtype=torch.bfloat16),
                "big": torch.full((20_000,), i, dtype=torch.int64),
                "view": (torch.arange(6.0).reshape(2, 3) * i).t(),
                "name": f"s{i}"}


def _expected(indices):
    ds = Items()
    return [ds[i] for i in indices]


def _check_batch(batch, indices):
    want = _expected(indices)
    x, y = batch["pair"]
    assert isinstance(batch["pair"], Pair)
    assert torch.equal(x, torch.stack([w["pair"].features for w in want]))
    assert torch.equal(y, torch.tensor([w["pair"].label for w in want]))
    assert batch["half"].dtype == torch.bfloat16
    assert torch.equal(batch["half"], torch.stack([w["half"] for w in want]))
    assert torch.equal(batch["big"], torch.stack([w["big"] for w in want]))
    assert torch.equal(batch["view"], torch.stack([w["view"] for w in want]))
    assert batch["name"] == [w["name"] for w in want]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_batches_equal_the_data_and_small_tensors_skip_shared_memory(method):
    loader = DataLoader(Items(), batch_size=6, num_workers=2, collate_fn=InlineCollate(),
                        multiprocessing_context=method)
    batches = 0
    for b, batch in enumerate(loader):
        _check_batch(batch, range(6 * b, 6 * b + 6))
        for t in (batch["pair"].features, batch["pair"].label, batch["view"]):
            assert type(t) is torch.Tensor and not t.is_shared()  # came in line
        # 6 x 20,000 int64 = 960 KB > 128 KiB, and bfloat16 has no numpy dtype: both
        # keep PyTorch's shared-memory path.
        assert batch["big"].is_shared() and batch["half"].is_shared()
        batches += 1
    assert batches == 4


def test_max_bytes_zero_keeps_shared_memory_for_every_tensor():
    loader = DataLoader(Items(), batch_size=6, num_workers=1,
                        collate_fn=InlineCollate(max_bytes=0))
    batch = next(iter(loader))
    _check_batch(batch, range(6))
    assert batch["pair"].features.is_shared()


def test_main_process_batches_are_returned_unchanged():
    calls = []

    def collate(items):
        calls.append(len(items))
        return torch.zeros(len(items))

    wrapped = InlineCollate(collate)
    out = wrapped([1, 2, 3])  # not in a worker
    assert type(out) is torch.Tensor and calls == [3]
    loader = DataLoader(Items(), batch_size=6, num_workers=0, collate_fn=InlineCollate())
    _check_batch(next(iter(loader)), range(6))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "64k"])
def test_bad_max_bytes(bad):
    with pytest.raises(ValueError, match="max_bytes"):
        InlineCollate(max_bytes=bad)


class _Source:
    """A tiny in-memory source: record i is 16 bytes of value i."""

    def __len__(self):
        return 40

    def read_many(self, indices):
        return [bytes([i]) * 16 for i in indices]

    def decode(self, raw):
        return torch.from_numpy(np.frombuffer(raw, np.uint8).copy())


def _first_byte_collate(items):
    samples = torch.stack([s for s, _ in items])
    return samples, torch.tensor([i for _, i in items])


def test_impact_loader_wraps_the_users_collate_with_workers():
    ds = il.ImpactDataset(_Source())
    loader = il.ImpactLoader(ds, 8, policy="uniform", num_workers=2,
                             collate_fn=_first_byte_collate)
    assert isinstance(loader.collate_fn, InlineCollate)
    assert loader.collate_fn.collate_fn is _first_byte_collate
    seen = []
    for samples, idx in loader:
        assert not samples.is_shared()  # 8 x 16 bytes: in line
        assert torch.equal(samples[:, 0].long(), idx)  # each record is its own index
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(40))
    plain = il.ImpactLoader(ds, 8, policy="uniform", num_workers=0)
    assert not isinstance(plain.collate_fn, InlineCollate)


def test_impact_loader_rejects_a_negative_inline_size():
    with pytest.raises(ValueError, match="inline_bytes=-5"):
        il.ImpactLoader(il.ImpactDataset(_Source()), 8, inline_bytes=-5, num_workers=1)


_ORPHAN_CHILD = r"""
import json, multiprocessing, os, sys, time
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from impact_loader.collate import InlineCollate


class Big(Dataset):
    def __init__(self, late, mark):
        self.late, self.mark = late, mark

    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        if self.late and get_worker_info().id == 1:
            open(self.mark, "a").close()  # in its loop: torch's watchdog knows the parent
            parent = multiprocessing.parent_process().pid
            deadline = time.monotonic() + 20
            while os.getppid() == parent and time.monotonic() < deadline:
                time.sleep(0.05)  # this worker's first batch comes after the parent died
        return torch.full((1000,), float(i))  # 32 x 4 KB = 128 KB per batch, in line


if __name__ == "__main__":
    method, when, mark = sys.argv[1:]
    loader = DataLoader(Big(when == "late", mark), batch_size=32, num_workers=2,
                        prefetch_factor=4, collate_fn=InlineCollate(),
                        multiprocessing_context=method)
    it = iter(loader)
    if when == "late":
        next(it)  # from worker 0
        while not os.path.exists(mark):
            time.sleep(0.05)
    else:
        next(it), next(it)  # one batch from each worker: both are in their loops
        time.sleep(1.0)  # the workers fill the pipe with batches in line
    print(json.dumps([w.pid for w in it._workers]), flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("when", ["early", "late"])
def test_workers_exit_when_the_training_process_is_killed(method, when, tmp_path):
    """Batches in line fill the queue's pipe; a worker whose parent was killed must
    not wait forever for it to drain on its way out. ``late``: a worker's first batch
    is collated after the parent died (it has been re-parented by then)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "orphan_child.py"  # a file: spawn workers re-import it
    script.write_text(_ORPHAN_CHILD)
    child = subprocess.Popen([sys.executable, str(script), method, when,
                              str(tmp_path / "in_loop")],
                             stdout=subprocess.PIPE, text=True)
    try:
        workers = json.loads(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert len(workers) == 2

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1][0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30  # torch's workers check their parent every 5 s
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in workers if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"
