"""SharedStore: round trips, layouts, generations, deferred free, lifetime, errors.

The property-based state machines (store and allocator) are in
``test_cache_store_machines.py``.
"""

from __future__ import annotations

import gc
import pickle

import pytest
from impact_loader.cache.reader import StoreReader
from impact_loader.cache.slots import GEN_LIMIT
from impact_loader.cache.store import PENDING, RETIRED, SharedStore

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


def test_generations_never_repeat_and_a_worn_out_slot_is_not_reused():
    with _store() as s:
        a = s.reserve(H)
        s._slots[3 * a] = GEN_LIMIT - 9  # odd: a few reuses left before the limit
        seen, i = set(), 0
        while True:
            g = s.generation(a)
            assert g % 2 == 0 and g > 0 and g not in seen
            seen.add(g)
            if i % 2 == 0:  # published, then freed
                assert s.write(a, b"w%d" % i) and s.read(a, g) == b"w%d" % i
            s.retire(a)  # odd i: never published, its promise must not come back
            assert s.read(a, g) is None
            assert s._slots[3 * a] % 2 == 1 and s._slots[3 * a] > g  # free: odd, past g
            i += 1
            b = s.reserve(H)
            if b != a:
                break
        assert len(seen) >= 3 and s._slots[3 * a] >= GEN_LIMIT
        others = [s.reserve(H) for _ in range(s.free_slot_count())]
        assert a not in others  # retired for good: generations never wrap


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
