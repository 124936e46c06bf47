"""ImportanceSampler: the public batch sampler that learns which samples matter.

It wires the numpy algorithms of ``impact_loader.sampling`` (importance table, selection
policies, epoch plans) to torch: tensors in ``update``/``weights``, the ``Sampler``
protocol, torch.distributed. It yields one ``BatchPlan`` per batch.
"""

from __future__ import annotations

from collections import deque
from numbers import Integral
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Sampler

from ._tensors import as_numpy, on_cuda, start_host_copy
from .plan import BatchPlan
from .sampling import distributed as _dist
from .sampling.base import epoch_rng
from .sampling.config import SamplingConfig
from .sampling.cursor import EpochCursor
from .sampling.planner import RankPlan
from .sampling.registry import make_policy
from .sampling.reports import ReportRouter
from .sampling.state import check_compatible, selection_from_state, selection_state
from .sampling.stats import SamplerStats
from .sampling.table import ImportanceTable
from .sampling.trim import release_free_heap

__all__ = ["ImportanceSampler"]

_STATE_VERSION = 1


class ImportanceSampler(Sampler):
    """Batch sampler that plans each epoch from per-sample importance.

    Use it as ``DataLoader(dataset, batch_sampler=sampler)``; report per-sample losses
    with ``update(indices, losses)``. Each epoch's plan is a pure function of
    ``(seed, epoch, importance table)``, frozen at the first ``__iter__``, ``__len__``,
    ``weights`` or ``epoch_plan`` call of the epoch. ``__iter__`` yields a ``BatchPlan``
    per batch (``indices``, ``tier``, ``epoch``, ``position`` filled), passed through
    ``annotator`` if one is set.

    Epochs: ``set_epoch(e)`` selects epoch ``e``; without it, an ``__iter__`` after a
    complete pass moves on to the next epoch (a new ``__iter__`` after a partial pass
    restarts the same epoch, as ``torch.utils.data`` samplers do).

    Memory: an epoch's plan holds int32 indices (int64 only for N > 2**31) and int8
    tiers. Each pass calls glibc's ``malloc_trim(0)`` once, after its first batch has
    gone through ``annotator`` (so after the plan is built and the cache layer has
    started the epoch): it hands their freed temporaries (N-sized numpy arrays the C
    heap would otherwise keep resident all epoch) back to the OS. About a millisecond
    per epoch; a no-op off glibc (see ``sampling.trim``).

    Distributed: with torch.distributed initialised (or ``num_replicas``/``rank`` given)
    every rank builds the same global plan and takes an equal share, padded like
    ``DistributedSampler``. Reported losses are merged across ranks (all-gather) when the
    epoch changes and every ``sync_every`` updates, so every table stays identical; these
    calls (``set_epoch``, auto-advancing ``__iter__``, ``update``) are then collectives.
    With explicit ``num_replicas`` but no process group, nothing is merged: feed every
    rank the same updates, or plans will differ between ranks.

    Args:
        dataset: anything with ``len()``; its length is the number of samples N.
        batch_size: samples per batch, >= 1.
        policy: ``"impact"`` (default), ``"uniform"``, ``"importance"`` or ``"selective"``.
        seed: seed of every epoch's random choices, int >= 0.
        drop_last: drop each rank's final short batch.
        num_replicas: ranks sharing an epoch (None: torch.distributed world size or 1).
        rank: this rank (None: torch.distributed rank or 0).
        config: a ``SamplingConfig``; ``config_overrides`` replace single fields of it.

    Attributes:
        annotator: optional callable ``BatchPlan -> object`` applied to each plan before
            it is yielded (the cache layer's hook). Default None.
        batches_yielded: batches yielded since construction (kept across ``state_dict``).
        table: the ``ImportanceTable``.

    Raises:
        ValueError: a bad argument or option value (message names value, limit and fix);
            an unknown ``policy`` (message lists the valid names).
        TypeError: wrong argument types, unknown option names, or a dataset without len().
    """

    def __init__(self, dataset: Any, batch_size: int, policy: str = "impact", seed: int = 0,
                 *, drop_last: bool = False, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, config: Optional[SamplingConfig] = None,
                 **config_overrides: Any) -> None:
        super().__init__()
        try:
            n = len(dataset)
        except TypeError:
            raise TypeError(f"dataset of type {type(dataset).__name__} has no len(); the "
                            "sampler needs the number of samples") from None
        if n < 1:
            raise ValueError(f"dataset has {n} samples; the sampler needs at least 1")
        _check_int("batch_size", batch_size, 1, "use e.g. 32")
        _check_int("seed", seed, 0, "use any non-negative int, e.g. 0")
        if not isinstance(drop_last, bool):
            raise TypeError(f"drop_last={drop_last!r} must be True or False")
        if config is None:
            config = SamplingConfig()
        elif not isinstance(config, SamplingConfig):
            raise TypeError(f"config must be a SamplingConfig, got {type(config).__name__}")
        self.config = config.replace(**config_overrides) if config_overrides else config
        self.policy_name = policy
        self._policy = make_policy(policy, self.config)
        self.num_replicas, self.rank = _dist.resolve_world(num_replicas, rank)
        self.num_samples = int(n)
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.seed = int(seed)
        self.table = ImportanceTable(n, ema_weight=self.config.ema_weight,
                                     prior=self.config.prior, window=self.config.window)
        self.annotator = None
        self.batches_yielded = 0
        self._cursor = EpochCursor()
        self._plan: Optional[RankPlan] = None
        self._inflight: deque = deque()  # CUDA reports still being copied to the host
        self._stats = SamplerStats()
        self._reports = ReportRouter(self.table, self._stats, self.config.nonfinite)
        # An ImpactDataset with a cache wires its pipeline in as this sampler's annotator.
        attach = getattr(dataset, "_attach_sampler", None)
        if callable(attach):
            attach(self)

    # ------------------------------------------------------------------ epochs
    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch``; merges pending distributed updates when the epoch changes.

        Calling it with the current epoch keeps a position restored by
        ``load_state_dict`` (so ``set_epoch`` after resuming is harmless) and otherwise
        replays the epoch's plan from its start.

        Raises:
            ValueError: ``epoch`` < 0. TypeError: not an int.
        """
        _check_int("epoch", epoch, 0, "epochs count from 0")
        if int(epoch) != self._cursor.epoch:
            self._sync()
        self._cursor.select(int(epoch))

    def _ensure_plan(self) -> RankPlan:
        epoch = self._cursor.epoch
        if self._plan is None or self._plan.epoch != epoch:
            self._drain(block=True)
            sel = self._policy.select(self.table, epoch, epoch_rng(self.seed, epoch))
            self._plan = self._rank_plan(epoch, sel)
            self._stats.record_plan(sel, self._plan.indices.size)
        return self._plan

    def _rank_plan(self, epoch: int, selection) -> RankPlan:
        return RankPlan(epoch, selection, num_replicas=self.num_replicas, rank=self.rank,
                        batch_size=self.batch_size, drop_last=self.drop_last)

    def epoch_plan(self) -> Tuple[np.ndarray, np.ndarray]:
        """This rank's ``(indices, tier int8)`` for the current epoch, in order.

        Exactly the concatenation of the batches ``__iter__`` yields for the epoch
        (padding included, ``drop_last`` applied). Read-only arrays; indices are int32
        (int64 only for N > 2**31), the batches' ``BatchPlan.indices`` int64.
        """
        plan = self._ensure_plan()
        return plan.indices, plan.tier

    def __len__(self) -> int:
        """Number of batches of the current epoch on this rank."""
        return self._ensure_plan().num_batches

    def __iter__(self) -> Iterator[Any]:
        # State changes happen here, not lazily in the generator, so an iterator that is
        # created and dropped (StatefulDataLoader does this on restore) still counts.
        if self._cursor.needs_advance:
            self._sync()
            self._cursor.start(self._cursor.epoch + 1)
        plan = self._ensure_plan()
        start, token = self._cursor.begin(plan.num_batches)
        return self._batches(plan, start, token)

    def _batches(self, plan: RankPlan, start: int, token: int) -> Iterator[Any]:
        for b in range(start, plan.num_batches):
            if not self._cursor.step(token, b, plan.num_batches):
                return  # a newer pass took over
            idx, tier = plan.batch(b)
            # Copies (astype always copies): the cache layer may rewrite a plan's arrays
            # (substitution); batches carry int64 indices whatever the plan's dtype.
            batch = BatchPlan(idx.astype(np.int64), tier=tier.copy(), epoch=plan.epoch,
                              position=b)
            self.batches_yielded += 1
            out = batch if self.annotator is None else self.annotator(batch)
            if b == start:  # planned, and the cache layer has started the epoch
                release_free_heap()  # their temporaries (see the class docstring)
            yield out

    # ------------------------------------------------------------------ losses
    def update(self, indices: Any, losses: Any) -> None:
        """Report per-sample losses of delivered samples.

        Args:
            indices: sample indices (torch tensor on any device, numpy array or list).
            losses: one loss >= 0 per index (tensor on any device or numpy); detached.
                CUDA tensors are copied into pinned memory without blocking and applied
                at the next call (an error in them is then raised by that call).

        Duplicate indices within one call are averaged. Losses are stamped with the
        current epoch (their staleness clock).

        Raises:
            ValueError: lengths differ, a loss is negative, or NaN/inf losses while
                ``nonfinite="raise"`` (the message names the sample indices).
            IndexError: an index is outside [0, N). TypeError: non-integer indices.
        """
        self._drain(block=False)
        if on_cuda(indices) or on_cuda(losses):
            self._inflight.append(start_host_copy(indices, losses))
        else:
            self._ingest(as_numpy(indices), as_numpy(losses))
        self._reports.calls_since_merge += 1
        every = self.config.sync_every
        if every and self._reports.calls_since_merge >= every:
            self._sync()

    def _ingest(self, indices: Any, losses: Any) -> None:
        self._reports.report(indices, losses, epoch=self._cursor.epoch,
                             hold=_dist.group_size() > 1)

    def _drain(self, *, block: bool) -> None:
        while self._inflight:
            idx_host, loss_host, event = self._inflight[0]
            if block:
                event.synchronize()
            elif not event.query():
                return
            self._inflight.popleft()
            self._ingest(idx_host.numpy(), loss_host.numpy())

    def _sync(self) -> None:
        """Merge every rank's pending reports into every rank's table (a collective)."""
        self._drain(block=True)
        gather = _dist.all_gather_reports if _dist.group_size() > 1 else None
        self._reports.merge(epoch=self._cursor.epoch, gather=gather)

    def weights(self, indices: Any) -> Any:
        """Loss weights ``1 / (N p_i)`` that make the weighted mean loss unbiased.

        All ones except under ``importance`` (the other policies select on purpose).

        Args:
            indices: sample indices of the current epoch (tensor or numpy).

        Returns:
            float32 tensor on the indices' device for a tensor, float64 numpy otherwise.

        Raises:
            IndexError: an index outside [0, N) (checked for CPU inputs).
            TypeError: CPU indices that are not integers.
        """
        plan = self._ensure_plan()
        probs = plan.selection.probs
        if isinstance(indices, torch.Tensor) and indices.is_cpu:
            # numpy in, torch.from_numpy out: no torch operator runs, so the training
            # thread never lets go of the GIL here. Each operator does (and each took up
            # to the interpreter's 5 ms switch interval to get it back while a prefetch
            # thread held it: benchmarks/RESULTS.md, session 10).
            idx = self.table.check_indices(as_numpy(indices))
            if probs is None:
                w = np.ones(idx.size, np.float32)
            else:
                w32 = plan.cache.get("numpy")
                if w32 is None:
                    w32 = plan.cache["numpy"] = (1.0 / (self.num_samples * probs)).astype(
                        np.float32)
                w = w32[idx]
            return torch.from_numpy(w.reshape(indices.shape))
        if isinstance(indices, torch.Tensor):  # on an accelerator: the weights go there
            if probs is None:
                return torch.ones(indices.shape, dtype=torch.float32, device=indices.device)
            w = plan.cache.get(indices.device)
            if w is None:
                w = torch.from_numpy(1.0 / (self.num_samples * probs)).to(
                    device=indices.device, dtype=torch.float32)
                plan.cache[indices.device] = w
            return w[indices.detach().long()]
        idx = self.table.check_indices(indices)
        if probs is None:
            return np.ones(idx.size)
        return 1.0 / (self.num_samples * probs[idx])

    # ------------------------------------------------------------------ state
    def stats(self) -> Dict[str, int]:
        """Counters: planning (per plan built), updates, tiers, refreshes, syncs.

        ``samples_selected``/``tier_h``/``tier_l`` count the global plans,
        ``samples_planned`` this rank's shares; ``nonfinite`` counts skipped losses.
        """
        self._drain(block=False)
        out = self._stats.state_dict()
        out.update(epoch=self._cursor.epoch, batches_yielded=self.batches_yielded,
                   scored=self.table.num_scored, pending=self._reports.num_held)
        return out

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume exactly, under named keys.

        Keys: ``version``, ``policy``, ``seed``, ``num_samples``, ``batch_size``,
        ``drop_last``, ``num_replicas``, ``config``, ``epoch``, ``position`` (batches of
        the epoch already yielded on this rank), ``completed``, ``batches_yielded``,
        ``rng`` (the seed and how per-epoch generators derive from it: no generator
        state is carried between epochs), ``table``, ``plan`` (the current epoch's global
        plan, None if not built yet), ``pending`` (this rank's unmerged reports), ``stats``.
        Cheap (no O(N) copy): like ``nn.Module.state_dict``, the table's arrays are the
        live ones, so a state serialised later holds every loss reported until then.
        That is what ``StatefulDataLoader`` with workers needs: it snapshots the sampler
        when a batch is requested but saves it after the training loop has reported the
        losses of the batches in flight. ``copy.deepcopy`` freezes a state in memory.
        """
        self._drain(block=True)
        cur = self._cursor
        plan = None if self._plan is None else selection_state(self._plan.selection,
                                                               self._plan.epoch)
        pending = self._reports.held()
        return {"version": _STATE_VERSION, "policy": self.policy_name, "seed": self.seed,
                "num_samples": self.num_samples, "batch_size": self.batch_size,
                "drop_last": self.drop_last, "num_replicas": self.num_replicas,
                "config": self.config.to_dict(), "epoch": cur.epoch,
                "position": cur.saved_position(), "completed": cur.completed,
                "batches_yielded": self.batches_yielded,
                "rng": {"seed": self.seed, "scheme": "numpy PCG64(SeedSequence([seed, epoch, 0]))"},
                "table": self.table.state_dict(), "plan": plan,
                "pending": {"indices": pending[0], "losses": pending[1]},
                "stats": self._stats.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a ``state_dict``; the next ``__iter__`` continues where it stopped.

        Raises:
            ValueError: the state was made for another data set size, policy, batch
                size, ``drop_last`` or number of replicas (message names both values).
        """
        check_compatible(state, version=_STATE_VERSION, num_samples=self.num_samples,
                         policy=self.policy_name, batch_size=self.batch_size,
                         drop_last=self.drop_last, num_replicas=self.num_replicas)
        self.table.load_state_dict(state["table"])
        self.seed = int(state["seed"])
        epoch = int(state["epoch"])
        self._cursor.restore(epoch, int(state["position"]), bool(state["completed"]))
        saved = state["plan"]
        self._plan = None
        if saved is not None and int(saved["epoch"]) == epoch:
            self._plan = self._rank_plan(epoch, selection_from_state(saved, self.num_samples))
        self._reports.restore(state["pending"]["indices"], state["pending"]["losses"])
        self._inflight.clear()
        self.batches_yielded = int(state["batches_yielded"])
        self._stats.load_state_dict(state["stats"])


def _check_int(name: str, value: Any, low: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}={value!r} must be an int; {fix}")
    if value < low:
        raise ValueError(f"{name}={value!r} must be >= {low}; {fix}")
