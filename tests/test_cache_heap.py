"""LazyMinHeap and HCache (active + shadow heaps) against a sorted-list model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from impact_loader.cache.hcache import HCache
from impact_loader.cache.heap import LazyMinHeap, from_order_bits, order_bits

CAP = 12
BIG = 160
keys = st.floats(width=32, allow_nan=False)
items = st.integers(0, CAP - 1)


def f32(x):
    return float(np.float32(x))


@settings(deadline=None)
@given(st.lists(keys, min_size=2, max_size=50))
def test_order_bits_preserve_order(values):
    for a, b in zip(values, values[1:]):
        if f32(a) < f32(b):
            assert order_bits(a) < order_bits(b)
        assert from_order_bits(order_bits(a)) == f32(a)


def test_nan_key_rejected():
    with pytest.raises(ValueError, match="importance=nan is NaN"):
        LazyMinHeap(2).push(0, math.nan)


def _model_min(model):
    return min(model.values()) if model else math.inf


class HeapMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.h = LazyMinHeap(CAP)
        self.model = {}

    @rule(item=items, key=keys)
    def push(self, item, key):
        self.h.push(item, key)
        self.model[item] = f32(key)

    @rule(item=items)
    def remove(self, item):
        assert self.h.remove(item) == (item in self.model)
        self.model.pop(item, None)

    @rule()
    def pop(self):
        item, key = self.h.pop()
        if not self.model:
            assert item == -1
            return
        assert key == _model_min(self.model)
        assert self.model.pop(item) == key

    @rule()
    def rebuild(self):
        self.h.rebuild()

    @rule(pairs=st.lists(st.tuples(items, keys), max_size=3 * CAP))
    def push_many(self, pairs):
        self.h.push_many(np.array([i for i, _ in pairs], np.int64),
                         np.array([k for _, k in pairs], np.float32))
        for item, key in pairs:  # the last key given for an item wins
            self.model[item] = f32(key)

    @rule(some=st.lists(items, max_size=2 * CAP))
    def remove_many(self, some):
        self.h.remove_many(np.array(some, np.int64))
        for item in some:
            self.model.pop(item, None)

    @rule()
    def compact(self):
        self.h.compact()
        cur = self.h._cur
        assert all(cur[e & 0xFFFFFFFF] == e >> 32 for e in self.h._heap)  # no dead entry

    @invariant()
    def agrees(self):
        assert len(self.h) == len(self.model)
        assert self.h.peek()[1] == _model_min(self.model)
        assert sorted(self.h.items()) == sorted(self.model.items())
        assert self.h.entries <= 2 * len(self.model) + 65
        heap = list(self.h._heap)
        assert all(heap[(i - 1) // 2] <= heap[i] for i in range(1, len(heap)))


class BulkHeapMachine(HeapMachine):
    """The same rules with more items than the bulk threshold: rebuild-merged pushes."""

    def __init__(self):
        super().__init__()
        self.h = LazyMinHeap(4)
        self.h.grow(BIG)  # ids beyond the first capacity need grow()

    @rule(pairs=st.lists(st.tuples(st.integers(0, BIG - 1), keys), min_size=70,
                         max_size=120))
    def push_many_bulk(self, pairs):
        self.push_many(pairs)


class HCacheMachine(RuleBasedStateMachine):
    """Active order frozen during an epoch; shadow absorbs updates; swap installs it."""

    def __init__(self):
        super().__init__()
        self.c = HCache(CAP)
        self.active, self.shadow = {}, {}

    @rule(item=items, key=keys)
    def insert(self, item, key):
        self.c.insert(item, key)
        self.active[item] = self.shadow[item] = f32(key)

    @rule(item=items, key=keys)
    def update(self, item, key):
        self.c.update(item, key)
        if item in self.shadow:
            self.shadow[item] = f32(key)

    @rule(item=items)
    def remove(self, item):
        self.c.remove(item)
        self.active.pop(item, None)
        self.shadow.pop(item, None)

    @rule()
    def evict_min(self):
        item, key = self.c.pop_min()
        if not self.active:
            assert item == -1
            return
        assert key == _model_min(self.active)
        assert self.active.pop(item) == key
        del self.shadow[item]

    @rule(key=keys)
    def admits(self, key):
        assert self.c.admits(key) == (not self.active or f32(key) > _model_min(self.active))

    @rule()
    def swap(self):
        self.c.swap()
        self.active = dict(self.shadow)

    @rule(pairs=st.lists(st.tuples(items, keys), max_size=2 * CAP, unique_by=lambda p: p[0]))
    def insert_many(self, pairs):
        self.c.insert_many(np.array([i for i, _ in pairs], np.int64),
                           np.array([k for _, k in pairs], np.float64))
        for item, key in pairs:
            self.active[item] = self.shadow[item] = f32(key)

    @rule(pairs=st.lists(st.tuples(items, keys), max_size=2 * CAP))
    def update_many(self, pairs):
        self.c.update_many(np.array([i for i, _ in pairs], np.int64),
                           np.array([k for _, k in pairs], np.float64))
        for item, key in pairs:
            if item in self.shadow:
                self.shadow[item] = f32(key)

    @rule(some=st.lists(items, max_size=CAP))
    def remove_many(self, some):
        self.c.remove_many(np.array(some, np.int64))
        for item in some:
            self.active.pop(item, None)
            self.shadow.pop(item, None)

    @rule(incoming=st.lists(keys, max_size=CAP))
    def pop_below(self, incoming):
        incoming = sorted((f32(k) for k in incoming), reverse=True)
        got = self.c.pop_below(np.array(incoming, np.float64)).tolist()
        expect = 0
        for w in incoming:  # the model: evict the minimum while the newcomer beats it
            if not self.active or not w > _model_min(self.active):
                break
            low = _model_min(self.active)
            assert self.active[got[expect]] == low
            del self.active[got[expect]], self.shadow[got[expect]]
            expect += 1
        assert len(got) == expect

    @invariant()
    def agrees(self):
        assert set(self.active) == set(self.shadow)
        assert len(self.c) == len(self.active)
        assert self.c.minimum()[1] == _model_min(self.active)
        assert sorted(self.c.shadow.items()) == sorted(self.shadow.items())


TestHeapMachine = HeapMachine.TestCase
TestHeapMachine.settings = settings(max_examples=80, stateful_step_count=60, deadline=None)
TestBulkHeapMachine = BulkHeapMachine.TestCase
TestBulkHeapMachine.settings = settings(max_examples=30, stateful_step_count=30,
                                        deadline=None)
TestHCacheMachine = HCacheMachine.TestCase
TestHCacheMachine.settings = settings(max_examples=80, stateful_step_count=60,
                                      deadline=None)
