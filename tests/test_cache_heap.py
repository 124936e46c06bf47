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

    @invariant()
    def agrees(self):
        assert len(self.h) == len(self.model)
        assert self.h.peek()[1] == _model_min(self.model)
        assert sorted(self.h.items()) == sorted(self.model.items())
        assert self.h.entries <= 2 * len(self.model) + 65


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

    @invariant()
    def agrees(self):
        assert set(self.active) == set(self.shadow)
        assert len(self.c) == len(self.active)
        assert self.c.minimum()[1] == _model_min(self.active)
        assert sorted(self.c.shadow.items()) == sorted(self.shadow.items())


TestHeapMachine = HeapMachine.TestCase
TestHeapMachine.settings = settings(max_examples=80, stateful_step_count=60, deadline=None)
TestHCacheMachine = HCacheMachine.TestCase
TestHCacheMachine.settings = settings(max_examples=80, stateful_step_count=60,
                                      deadline=None)
