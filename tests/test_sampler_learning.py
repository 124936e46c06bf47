"""Learning signal: real training makes mislabeled (hard) samples important and selected."""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from impact_loader.sampler import ImportanceSampler

N, FLIPPED, EPOCHS = 600, 60, 8


class Blobs:
    """Two Gaussian blobs in 2-D; the labels of the first FLIPPED samples are wrong."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (N,), generator=g)
        self.x = torch.randn(N, 2, generator=g) * 0.6 + (self.y[:, None] * 2.0 - 1.0)
        self.y[:FLIPPED] = 1 - self.y[:FLIPPED]

    def __len__(self):
        return N

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def test_hard_samples_gain_importance_and_are_selected_more():
    torch.manual_seed(0)
    data = Blobs()
    sampler = ImportanceSampler(data, 32, "impact", seed=0, warmup_epochs=2,
                                refresh_every=0, trained_fraction=0.4, reeval_share=0.1)
    loader = DataLoader(data, batch_sampler=sampler)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    selected = np.zeros(N)
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        if epoch >= 2:
            idx, _ = sampler.epoch_plan()
            selected[idx] += 1
        for x, y, idx in loader:
            loss = F.cross_entropy(model(x), y, reduction="none")
            sampler.update(idx, loss)
            (loss * sampler.weights(idx)).mean().backward()
            opt.step()
            opt.zero_grad()
    imp = sampler.table.importance()
    hard, easy = slice(0, FLIPPED), slice(FLIPPED, N)
    assert imp[hard].mean() > 3 * imp[easy].mean()
    assert np.median(sampler.table.percentiles()[hard]) > 0.8
    # selection epochs train on the hard samples far more often than on the easy ones
    assert selected[hard].mean() > 1.5 * selected[easy].mean()
    assert sampler.stats()["epochs_planned"] == EPOCHS
