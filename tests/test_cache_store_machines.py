"""SharedStore and its block allocator against reference models (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from impact_loader.cache.allocator import RunAllocator
from impact_loader.cache.store import LIVE, RETIRED, SharedStore

H, L = 1, 2


class StoreMachine(RuleBasedStateMachine):
    """Random reserve/write/touch/retire/release against a dict model."""

    def __init__(self):
        super().__init__()
        self.s = SharedStore(pools=[(H, 64 * 12), (L, 64 * 5 + 30)], block_bytes=64,
                             max_entries=20)
        self.model = {}     # slot -> (generation, bytes) for live/retired entries
        self.pending = set()
        self.seq = 0

    def teardown(self):
        self.s.close()

    @rule(pool=st.sampled_from([H, L]))
    def reserve(self, pool):
        slot = self.s.reserve(pool)
        if slot >= 0:
            assert slot not in self.model and slot not in self.pending
            self.pending.add(slot)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), n=st.integers(0, 300))
    def write(self, data, n):
        slot = data.draw(st.sampled_from(sorted(self.pending)))
        payload = bytes([slot % 251]) * n
        limit = self.s.pool_blocks(self.s.pool_of(slot)) * 64
        if n > limit:
            with pytest.raises(ValueError):
                self.s.write(slot, payload)
            return
        if self.s.write(slot, payload):
            self.pending.discard(slot)
            self.model[slot] = (self.s.generation(slot), payload)

    @precondition(lambda self: self.model or self.pending)
    @rule(data=st.data(), ahead=st.integers(0, 3))
    def touch_and_retire(self, data, ahead):
        slot = data.draw(st.sampled_from(sorted(set(self.model) | self.pending)))
        self.s.touch(slot, self.seq + ahead)
        self.s.retire(slot)
        self.pending.discard(slot)
        if self.s.state(slot) != RETIRED:
            self.model.pop(slot, None)

    @rule()
    def release(self):
        self.s.release(self.seq)
        self.seq += 1
        for slot in list(self.model):
            if self.s.state(slot) not in (LIVE, RETIRED):
                del self.model[slot]

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), n=st.integers(1, 64))
    def write_singles(self, data, n):  # the bulk path for records of one block
        pool = data.draw(st.sampled_from([H, L]))
        mine = sorted(s for s in self.pending if self.s.pool_of(s) == pool)
        if not mine:
            return
        recs = [bytes([s % 251]) * n for s in mine]
        sizes = np.full(len(mine), n, np.int64)
        if self.s._put_singles(np.array(mine, np.int64), pool, recs, sizes):
            self.s._published(np.array(mine, np.int64), np.full(len(mine), pool), sizes)
            for s, r in zip(mine, recs):
                self.pending.discard(s)
                self.model[s] = (self.s.generation(s), r)

    @invariant()
    def reads_match_and_blocks_disjoint(self):
        seen = set()
        for slot, (g, payload) in self.model.items():
            assert self.s.read(slot, g) == payload
            blocks = self.s.entry_blocks(slot)
            assert not seen & set(blocks), "two entries share a block"
            seen |= set(blocks)
            assert all(self.s._alloc[self.s.pool_of(slot)].owns(b) for b in blocks)
        for pool in (H, L):
            runs = list(self.s._alloc[pool].runs())
            free = {b for first, n in runs for b in range(first, first + n)}
            assert len(free) == sum(n for _, n in runs) == self.s.free_blocks(pool)
            assert not free & seen, "a free run overlaps a live entry"
            assert all(self.s._alloc[pool].owns(b) for b in free)
            used = sum(len(self.s.entry_blocks(sl)) for sl in self.model
                       if self.s.pool_of(sl) == pool)
            assert used + self.s.free_blocks(pool) == self.s.pool_blocks(pool)
            assert self.s.used_bytes(pool) == sum(
                len(p) for sl, (_, p) in self.model.items() if self.s.pool_of(sl) == pool)
            assert self.s.used_bytes(pool) <= self.s.pool_blocks(pool) * 64


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=60, stateful_step_count=40,
                                     deadline=None)


class AllocatorMachine(RuleBasedStateMachine):
    """The free-run stack of one pool against a set of free block ids."""

    def __init__(self):
        super().__init__()
        self.a = RunAllocator(100, 40)
        self.free = set(range(100, 140))
        self.taken = []  # lists of blocks handed out, to give back later

    @rule(k=st.integers(1, 12))
    def take_run(self, k):
        first = self.a.take_run(k)
        if first < 0:
            return
        got = set(range(first, first + k))
        assert got <= self.free
        self.free -= got
        self.taken.append(sorted(got))

    @rule(k=st.integers(0, 45))
    def take_singles(self, k):
        got = self.a.take_singles(k)
        if got is None:
            assert k > len(self.free)
            return
        got = got.tolist()
        assert len(set(got)) == k and set(got) <= self.free
        self.free -= set(got)
        if got:
            self.taken.append(got)

    @precondition(lambda self: self.taken)
    @rule(data=st.data())
    def give_back(self, data):
        some = data.draw(st.lists(st.integers(0, len(self.taken) - 1), min_size=1,
                                  unique=True))
        blocks = [b for i in some for b in self.taken[i]]
        self.taken = [t for i, t in enumerate(self.taken) if i not in some]
        self.a.give_runs(blocks, np.ones(len(blocks), np.int64))
        self.free |= set(blocks)

    @invariant()
    def agrees(self):
        runs = list(self.a.runs())
        listed = [b for first, n in runs for b in range(first, first + n)]
        assert len(listed) == len(set(listed)) and set(listed) == self.free
        assert self.a.free_blocks == len(self.free)


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(max_examples=60, stateful_step_count=40,
                                         deadline=None)
