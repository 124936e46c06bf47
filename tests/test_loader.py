"""ImpactLoader: builds the sampler, measures data-wait, keeps DataLoader semantics."""

from __future__ import annotations

import pytest
import torch

import impact_loader as il
from source_factories import make_samples


def _xy(sample):
    return torch.from_numpy(sample["x"]), sample["label"]


@pytest.fixture
def dataset(tmp_path):
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(200))
    ds = il.ImpactDataset(src, transform=_xy, cache_bytes=100 * 500)
    yield ds
    ds.close()


def test_training_loop_with_workers_and_pin_memory(dataset):
    loader = il.ImpactLoader(dataset, batch_size=32, policy="impact", num_workers=2,
                             pin_memory=True, sampler_options={"warmup_epochs": 1})
    assert isinstance(loader.sampler, il.ImportanceSampler)
    assert loader.batch_sampler is loader.sampler
    model = torch.nn.Linear(16, 10)
    for epoch in range(3):
        loader.set_epoch(epoch)
        n = 0
        for (x, y), idx in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
            loader.update(idx, loss.detach())
            n += len(idx)
        assert n == len(loader.sampler.epoch_plan()[0])
        assert len(loader.data_wait) == len(loader)
    stats = loader.stats()
    assert stats["batches"] == len(loader)
    assert 0 <= stats["data_wait_share"]
    assert stats["hits"] + stats["substitutions"] > 0


def test_refuses_its_own_sampler_arguments(dataset):
    with pytest.raises(ValueError, match="sampler="):
        il.ImpactLoader(dataset, batch_size=8, sampler=[1])
    with pytest.raises(ValueError, match="shuffle="):
        il.ImpactLoader(dataset, batch_size=8, shuffle=True)
