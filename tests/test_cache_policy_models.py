"""The LRU stamps and the L-cache ring against simple reference models (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from impact_loader.cache import CacheConfig
from impact_loader.cache.codes import LOC_H
from impact_loader.cache.lcache import LCache
from impact_loader.cache.lru import LRUCache

CAP = 40
slots = st.integers(0, CAP - 1)


def _arr(values):
    return np.array(sorted(set(values)), np.int64)


class LRUMachine(RuleBasedStateMachine):
    """Model: slot -> number of the call that last inserted or hit it.

    Each ``inserted``/``hit`` call is one batch; slots of a batch are equally recent,
    so victims must be a set of least recent slots, handed out oldest batch first.
    """

    def __init__(self):
        super().__init__()
        self.p = LRUCache(CacheConfig(cache_bytes=1 << 20, policy="lru"), 8, 1000)
        self.p.grow(CAP)  # starts small, like the store's slot table
        self.model = {}
        self.calls = 0

    @rule(batch=st.lists(slots, max_size=12))
    def insert(self, batch):
        new = [s for s in set(batch) if s not in self.model]
        self.p.inserted(_arr(new), LOC_H, np.zeros(len(new)), np.zeros(len(new), np.int64))
        self.calls += 1
        self.model.update(dict.fromkeys(new, self.calls))

    @rule(batch=st.lists(slots, max_size=12))
    def hit(self, batch):  # may name slots the policy does not hold (staging)
        self.p.hit(np.array(batch, np.int64), np.zeros(len(batch)), np.zeros(len(batch)))
        self.calls += 1
        for s in batch:
            if s in self.model:
                self.model[s] = self.calls

    @rule(batch=st.lists(slots, max_size=6))
    def remove(self, batch):
        self.p.removed(_arr(batch))
        for s in batch:
            self.model.pop(s, None)

    @rule(n=st.integers(0, 15))
    def victims(self, n):
        got = self.p.victims(LOC_H, np.zeros(n), n).tolist()
        assert len(got) == len(set(got)) == min(n, len(self.model))
        ages = [self.model[s] for s in got]
        assert ages == sorted(ages)  # oldest batch first
        rest = [a for s, a in self.model.items() if s not in got]
        assert not ages or not rest or max(ages) <= min(rest)
        for s in got:  # committed: the policy forgot them
            del self.model[s]

    @invariant()
    def held(self):
        assert set(np.flatnonzero(self.p.stamps() >= 0).tolist()) == set(self.model)


class LCacheMachine(RuleBasedStateMachine):
    """Model: a list of [slot, loaded epoch, used this epoch] in load order."""

    def __init__(self):
        super().__init__()
        self.c = LCache(4)
        self.c.grow(CAP)
        self.ring = []
        self.epoch = 0

    def _free_slots(self):
        held = {e[0] for e in self.ring}
        return [s for s in range(CAP) if s not in held]

    @precondition(lambda self: len(self.ring) < CAP)
    @rule(data=st.data(), k=st.integers(1, 10))
    def add_package(self, data, k):
        free = self._free_slots()
        new = data.draw(st.lists(st.sampled_from(free), min_size=1, max_size=k,
                                 unique=True))
        used = data.draw(st.lists(st.booleans(), min_size=len(new), max_size=len(new)))
        self.c.add(np.array(new, np.int64), np.array(used, bool))
        self.ring += [[s, self.epoch, u] for s, u in zip(new, used)]

    @rule(batch=st.lists(slots, max_size=8))
    def use(self, batch):
        mine = [s for s in set(batch) if any(e[0] == s for e in self.ring)]
        self.c.use(np.array(mine, np.int64))
        for e in self.ring:
            if e[0] in mine:
                e[2] = True

    @rule(batch=st.lists(slots, max_size=6))
    def remove(self, batch):
        self.c.remove(_arr(batch))
        self.ring = [e for e in self.ring if e[0] not in batch]

    @rule(n=st.integers(0, 12))
    def take_substitutes(self, n):
        got = self.c.take_substitutes(n).tolist()
        expect = [e for e in self.ring if not e[2]][:n]
        assert got == [e[0] for e in expect]
        for e in expect:
            e[2] = True

    @rule(n=st.integers(0, 12))
    def victims(self, n):
        got = self.c.victims(n).tolist()
        expect = []
        for e in self.ring:  # oldest first, while it was used or is from an old epoch
            if len(expect) == n or not (e[2] or e[1] != self.epoch):
                break
            expect.append(e[0])
        assert got == expect
        self.ring = [e for e in self.ring if e[0] not in got]

    @rule()
    def new_epoch(self):
        self.c.new_epoch()
        self.epoch += 1
        for e in self.ring:
            e[2] = False

    @invariant()
    def agrees(self):
        assert len(self.c) == len(self.ring)
        assert self.c.unused == sum(not e[2] for e in self.ring)
        held = self.c.contains(np.arange(CAP))
        assert set(np.flatnonzero(held).tolist()) == {e[0] for e in self.ring}


TestLRUMachine = LRUMachine.TestCase
TestLRUMachine.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)
TestLCacheMachine = LCacheMachine.TestCase
TestLCacheMachine.settings = settings(max_examples=60, stateful_step_count=50,
                                      deadline=None)
