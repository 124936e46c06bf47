"""A small synthetic training job that exports impact-loader's Prometheus metrics.

Writes a synthetic LMDB, reads it through emulated network storage
(``ThrottledSource``), trains a small classifier with ``ImpactLoader`` and serves the
metrics while it trains. Point Prometheus at it with ``examples/prometheus.yml`` and
import ``examples/grafana-dashboard.json`` into Grafana.

    python examples/metrics_training.py                # 20 epochs, port 9400
    python examples/metrics_training.py --quick        # a few seconds, free port
    python examples/metrics_training.py --linger 60    # keep serving 60 s after training

Under DDP, each rank would call ``metrics.serve(port=9400 + local_rank)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.request
from typing import List, Optional

import torch
import torch.nn.functional as F

import impact_loader as il
from impact_loader import metrics
from impact_loader.synthetic import synthetic_samples


def _xy(sample):
    return torch.from_numpy(sample["x"]), sample["label"]


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny run (2 epochs, 1200 samples, free port), scrape once, exit")
    ap.add_argument("--port", type=int, default=None,
                    help="metrics port (default 9400; 0 with --quick: a free port)")
    ap.add_argument("--addr", default="127.0.0.1", help="address to serve on")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default 20)")
    ap.add_argument("--samples", type=int, default=None, help="samples (default 20000)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    ap.add_argument("--latency-ms", type=float, default=2.0,
                    help="emulated storage latency per request, milliseconds")
    ap.add_argument("--linger", type=float, default=0.0,
                    help="seconds to keep serving after training (for a last scrape)")
    args = ap.parse_args(argv)
    if args.port is None:
        args.port = 0 if args.quick else 9400
    if args.epochs is None:
        args.epochs = 2 if args.quick else 20
    if args.samples is None:
        args.samples = 1200 if args.quick else 20_000
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Run the job; returns the process exit code."""
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="impact-metrics-") as tmp:
        path = os.path.join(tmp, "train.lmdb")
        lmdb = il.write_lmdb(path, synthetic_samples(args.samples, record_bytes=2048))
        source = il.ThrottledSource(lmdb, latency_ms=args.latency_ms, bandwidth_mb_s=200,
                                    max_inflight=8)
        record = len(lmdb.read_many([0])[0])
        dataset = il.ImpactDataset(source, transform=_xy,
                                   cache_bytes=int(0.3 * args.samples * record))
        loader = il.ImpactLoader(dataset, batch_size=64, num_workers=args.workers,
                                 sampler_options={"warmup_epochs": 1})
        metrics.watch(loader, name="train")
        server = metrics.serve(port=args.port, addr=args.addr)
        print(f"serving metrics at {server.url}", flush=True)
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                    torch.nn.Linear(64, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        try:
            for epoch in range(args.epochs):
                loader.set_epoch(epoch)
                for (x, y), idx in loader:
                    losses = F.cross_entropy(model(x), y, reduction="none")
                    (losses * loader.sampler.weights(idx)).mean().backward()
                    opt.step()
                    opt.zero_grad()
                    loader.update(idx, losses.detach())
                s = loader.stats()
                print(f"epoch {epoch}: {s['batches']} batches, data-wait "
                      f"{s['data_wait_share']:.0%}, hits {s['hits']}, substitutions "
                      f"{s['substitutions']}, worker storage reads "
                      f"{s['worker_source_reads']}", flush=True)
            if args.quick:
                text = urllib.request.urlopen(server.url, timeout=10).read().decode()
                lines = [ln for ln in text.splitlines()
                         if ln.startswith("impact_loader_samples_delivered_total")]
                print("\n".join(lines), flush=True)
            if args.linger > 0:
                print(f"training done; serving {args.linger:.0f} s more", flush=True)
                time.sleep(args.linger)
        finally:
            server.close()
            metrics.unwatch("train")
            dataset.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
