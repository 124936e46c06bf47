"""SharedStore: round trips, generations, deferred free, allocator properties, errors."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from impact_loader.cache.reader import StoreReader
from impact_loader.cache.store import LIVE, PENDING, RETIRED, SharedStore

H, L = 1, 2


def _store(**kw):
    kw.setdefault("pools", [(H, 64 * 16), (L, 64 * 8)])
    kw.setdefault("block_bytes", 64)
    return SharedStore(**kw)


def test_round_trip_contiguous_and_chained():
    with _store() as s:
        a = s.reserve(H)
        g = s.generation(a)
        assert g % 2 == 0 and s.read(a, g) is None  # pending: a miss
        assert s.write(a, b"a" * 150)
        assert s.read(a, g) == b"a" * 150
        b = s.reserve(H)
        assert s.write(b, b"b" * 64)
        s.retire(a)  # never touched: freed at once, leaves a 3-block hole
        assert s.read(a, g) is None
        c = s.reserve(H)
        big = bytes(range(256)) * 3
        assert s.write(c, big)
        assert s.read(c, s.generation(c)) == big
        assert s.used_bytes(H) == 64 + len(big)


def test_fragmented_pool_chains_records_through_any_free_blocks():
    with _store(pools=[(H, 64 * 8)]) as s:
        slots = [s.reserve(H) for _ in range(8)]
        for i, x in enumerate(slots):
            assert s.write(x, bytes([i]) * 64)
        freed = {b for x in slots[::2] for b in s.entry_blocks(x)}
        for x in slots[::2]:  # every other block free: no two adjacent
            s.retire(x)
        big = bytes(range(180))  # 3 blocks contiguous; chained: 64-4 + 64-4 + 60
        y = s.reserve(H)
        assert s.write(y, big)
        assert s.read(y, s.generation(y)) == big
        blocks = s.entry_blocks(y)
        assert len(blocks) == 3 and set(blocks) < freed
        assert s.free_blocks(H) == 1 and s.used_bytes(H) == 4 * 64 + 180
        s.retire(y)  # its blocks come back and serve a contiguous record again
        assert s.free_blocks(H) == 4
        z = s.reserve(H)
        assert s.write(z, b"z" * 64) and s.read(z, s.generation(z)) == b"z" * 64


def test_generations_wrap_without_reusing_a_promise():
    with _store() as s:
        a = s.reserve(H)
        s._slots[3 * a] = 2**31 - 3  # an odd generation just below the int32 limit
        seen = set()
        for i in range(6):
            g = s.generation(a)
            assert g % 2 == 0 and g != 0 and g not in seen
            seen.add(g)
            if i % 2:  # never published: the next promise must differ
                s.retire(a)
            else:
                assert s.write(a, b"w%d" % i) and s.read(a, g) == b"w%d" % i
                s.retire(a)
                assert s.read(a, g) is None
            a2 = s.reserve(H)
            assert a2 == a


def test_metadata_grows_with_entries_not_with_max_entries():
    with _store(pools=[(H, 64 * 50_000)]) as s:
        assert s.max_entries == 50_000 and s.capacity < 1000
        got = s.reserve_many(H, 3000)
        assert len(got) == 3000 and s.capacity >= 3000
        assert s.capacity < 4000  # grown in small steps, not to max_entries
        assert _meta_rss(s) <= 3000 * 12 + 2 * 4096  # only touched pages are resident


def _meta_rss(store):
    """Resident bytes of the store's shared metadata mapping in this process."""
    import os
    inode = os.fstat(store._region.fds[1]).st_ino
    rss, mine = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                mine = f" {inode} " in line and "impact-loader-meta" in line
            elif mine and line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
    return rss


def test_region_is_exactly_the_pool_bytes():
    with _store(pools=[(H, 1000), (L, 3000), (3, 100)]) as s:
        assert len(s._region.data) == 4100
        assert s.region_bytes == 4100


def test_deferred_free_waits_for_release():
    with _store() as s:
        a = s.reserve(H)
        s.write(a, b"x" * 10)
        g = s.generation(a)
        s.touch(a, 5)
        s.retire(a)
        assert s.state(a) == RETIRED
        assert s.read(a, g) == b"x" * 10  # still readable by batch 5
        s.release(4)
        assert s.read(a, g) == b"x" * 10
        s.release(5)
        assert s.read(a, g) is None
        b = s.reserve(H)
        assert b == a and s.generation(b) != g  # reused slot, new generation


def test_write_fails_softly_when_pool_full_and_raises_when_record_too_large():
    with _store() as s:
        slots = [s.reserve(L) for _ in range(9)]
        for x in slots[:8]:
            assert s.write(x, b"1" * 64)
        assert not s.write(slots[8], b"1")
        assert s.state(slots[8]) == PENDING
        with pytest.raises(ValueError, match=r"record of 600 bytes is larger than pool 2 "
                                             r"\(512 bytes usable\); raise cache_bytes"):
            s.write(slots[8], b"1" * 600)


@pytest.mark.parametrize("kwargs, match", [
    ({"pools": [(H, -1)]}, r"size=-1 bytes must be an int >= 0"),
    ({"block_bytes": 8}, r"block_bytes=8 must be an int >= 64"),
    ({"max_entries": 0}, r"max_entries=0 must be an int >= 1"),
    ({"pools": [(H, 64), (H, 64)]}, r"pool id 1 given twice"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _store(**kwargs)


def _held_by_me(inode):
    import os
    fds = [f for f in os.listdir("/proc/self/fd")
           if _safe_ino(f"/proc/self/fd/{f}") == inode]
    with open("/proc/self/maps") as f:
        maps = [line for line in f if f" {inode} " in line and "memfd:" in line]
    return bool(fds or maps)


def _safe_ino(path):
    import os
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def test_close_is_idempotent_and_releases_the_region():
    import os
    s = _store()
    inode = os.fstat(s._region.fds[0]).st_ino
    assert _held_by_me(inode)
    s.close()
    s.close()
    assert s.closed and not _held_by_me(inode)
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(s)


def test_garbage_collection_releases_the_region():
    import os
    s = _store()
    inode = os.fstat(s._region.fds[0]).st_ino
    del s
    gc.collect()
    assert not _held_by_me(inode)


def test_pickle_in_same_process_attaches_read_only():
    with _store() as s:
        a = s.reserve(H)
        s.write(a, b"hello")
        r = pickle.loads(pickle.dumps(s))
        assert type(r) is StoreReader and not hasattr(r, "reserve")
        assert r.read(a, s.generation(a)) == b"hello"
        with pytest.raises(ValueError, match="only the process that created"):
            pickle.dumps(r)
        r.close()
        assert s.read(a, s.generation(a)) == b"hello"  # the owner's view is unaffected


def test_forked_child_cannot_change_the_store():
    import os
    with _store() as s:
        pid = os.fork()
        if pid == 0:  # child: must refuse to write; exit code reports the outcome
            try:
                s.reserve(H)
                code = 1
            except RuntimeError:
                code = 0
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_read_rejects_bad_slot_and_generation():
    with _store() as s:
        a = s.reserve(H)
        s.write(a, b"z")
        assert s.read(-1, 2) is None
        assert s.read(10 ** 6, 2) is None
        assert s.read(a, s.generation(a) + 2) is None
        assert s.read(a, s.generation(a) - 1) is None


class StoreMachine(RuleBasedStateMachine):
    """Random reserve/write/touch/retire/release against a dict model."""

    def __init__(self):
        super().__init__()
        self.s = _store(pools=[(H, 64 * 12), (L, 64 * 5 + 30)], max_entries=20)
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
