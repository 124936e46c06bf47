"""Two ranks on gloo (CPU): same global plan, disjoint equal shares, identical tables.

About 5 s (two spawned interpreters importing torch), so it runs by default.
"""

import pickle
import socket

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from impact_loader.sampler import ImportanceSampler

N, BATCH, EPOCHS, WORLD = 101, 8, 5, 2
CASES = {
    "impact": ("impact", dict(warmup_epochs=1, refresh_every=3)),
    "impact_sync_every": ("impact", dict(warmup_epochs=1, sync_every=2)),
    "importance": ("importance", dict()),
}


def _loss(idx, epoch):
    idx = np.asarray(idx)
    return ((idx * 2654435761 + epoch * 97) % 1000) / 100.0


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        results = {}
        for case, (policy, opts) in CASES.items():
            s = ImportanceSampler(range(N), BATCH, policy, seed=11, **opts)
            shares, tables = [], []
            for e in range(EPOCHS):
                s.set_epoch(e)
                flat = []
                for plan in s:
                    flat.extend(plan.indices.tolist())
                    s.update(plan.indices, _loss(plan.indices, e))
                shares.append(flat)
                tables.append(s.table.score.copy())
            s.set_epoch(EPOCHS)  # merge the last epoch's reports
            results[case] = dict(shares=shares, tables=tables, final=s.table.state_dict(),
                                 stats=s.stats(), world=(s.num_replicas, s.rank))
        with open(f"{out_dir}/rank{rank}.pkl", "wb") as f:
            pickle.dump(results, f)
    finally:
        dist.destroy_process_group()


def _emulate(policy, opts):
    """Single process: two explicit-rank samplers fed the merged reports at epoch ends."""
    ranks = [ImportanceSampler(range(N), BATCH, policy, seed=11, num_replicas=WORLD, rank=r,
                               **opts) for r in range(WORLD)]
    shares = []
    for e in range(EPOCHS):
        for s in ranks:
            s.set_epoch(e)
        per_rank = [np.concatenate([p.indices for p in s]) for s in ranks]
        shares.append([x.tolist() for x in per_rank])
        merged = np.concatenate(per_rank)
        for s in ranks:
            s.update(merged, _loss(merged, e))  # one merge = one update of all reports
    return shares, ranks[0].table


def test_two_ranks_share_one_plan_and_one_table(tmp_path):
    mp.spawn(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    res = []
    for r in range(WORLD):
        with open(tmp_path / f"rank{r}.pkl", "rb") as f:
            res.append(pickle.load(f))
    for case, (policy, opts) in CASES.items():
        r0, r1 = res[0][case], res[1][case]
        assert r0["world"] == (2, 0) and r1["world"] == (2, 1)
        for e in range(EPOCHS):
            a, b = r0["shares"][e], r1["shares"][e]
            assert len(a) == len(b) > 0  # equal-length shares
            np.testing.assert_array_equal(r0["tables"][e], r1["tables"][e])
        for key in ("score", "last_epoch"):
            np.testing.assert_array_equal(r0["final"][key], r1["final"][key])
        assert r0["stats"]["syncs"] >= EPOCHS
        assert r0["stats"]["losses_received"] + r1["stats"]["losses_received"] == sum(
            len(r0["shares"][e]) + len(r1["shares"][e]) for e in range(EPOCHS))
        if case == "impact":
            shares, table = _emulate(policy, opts)
            for e in range(EPOCHS):
                assert [r0["shares"][e], r1["shares"][e]] == shares[e]
                union = set(shares[e][0]) | set(shares[e][1])
                assert len(shares[e][0]) + len(shares[e][1]) - len(union) <= 1  # padding
            np.testing.assert_allclose(r0["final"]["score"], table.score)
        if case == "impact_sync_every":
            assert r0["stats"]["syncs"] > EPOCHS + 1  # also merged mid-epoch
