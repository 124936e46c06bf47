"""StoreReader: the read side of the shared store, for any process.

Layout of the shared region (see ``region.py`` for how it is shared):

* data mapping -- ``n_blocks`` blocks of ``block_bytes``, block ``b`` at byte
  ``b * block_bytes``; its size is exactly the sum of the store's pools.
* metadata mapping -- per entry slot two int64: the *generation* and a packed word
  ``length << 32 | contiguous << 31 | first_block``; then one int32 per block, the
  next block of the same record (the chain of a non-contiguous record).

Seqlock read: the generation is odd while a slot is free or being written and even once
published. :meth:`StoreReader.read` is given the generation the cache directory
promised; it checks it before and after copying, and bounds-checks the length and every
block id, so it returns the exact published bytes or ``None`` -- never torn or foreign
bytes. Ordering relies on stores and loads to the shared mapping being performed in
program order, which holds on x86-64 (TSO); weakly ordered CPUs would need fences
that Python cannot issue.

A pickled store (the dataset sent to ``spawn``/``forkserver`` DataLoader workers)
arrives as a ``StoreReader``: workers read, only the owner writes.
"""

from __future__ import annotations

from typing import Optional

from .region import SharedRegion

__all__ = ["StoreReader"]

_CONTIG = 1 << 31
_LOW31 = _CONTIG - 1


class StoreReader:
    """Read-only view of a :class:`~impact_loader.cache.store.SharedStore`.

    Obtained by unpickling a store (or by inheritance under ``fork``); not built
    directly.
    """

    _region: SharedRegion
    block_bytes: int
    n_blocks: int
    region_bytes: int
    max_entries: int

    def _map(self) -> None:
        meta = memoryview(self._region.meta)
        self._data = memoryview(self._region.data)
        self._slots = meta[:16 * self.max_entries].cast("q")
        self._next = meta[16 * self.max_entries:].cast("i")
        meta.release()

    # ------------------------------------------------------------------ readers
    def read(self, slot: int, generation: int) -> Optional[bytes]:
        """Copy out the bytes of entry ``slot`` if it still carries ``generation``.

        Safe in any process attached to the store, concurrently with the owner.

        Args:
            slot: entry slot from the cache directory's annotation.
            generation: generation the annotation expects (even).

        Returns:
            The record as a new ``bytearray`` (writable, so a decoder can hand out
            writable views without copying again), or None if the entry is absent,
            being written, reused or inconsistent (the caller reads the source instead).
        """
        if not 0 <= slot < self.max_entries:
            return None
        slots = self._slots
        g = slots[2 * slot]
        if g != generation or g & 1:
            return None
        w = slots[2 * slot + 1]
        n = w >> 32
        first = w & _LOW31
        bb = self.block_bytes
        if n < 0 or first >= self.n_blocks:
            return None
        if w & _CONTIG:
            off = first * bb
            if off + n > self.region_bytes:
                return None
            out = bytearray(self._data[off:off + n])
        else:
            out = bytearray(n)
            b, pos, nxt, nb = first, 0, self._next, self.n_blocks
            while pos < n:
                if not 0 <= b < nb:
                    return None
                take = bb if n - pos > bb else n - pos
                out[pos:pos + take] = self._data[b * bb:b * bb + take]
                pos += take
                b = nxt[b]
        if slots[2 * slot] != g:
            return None
        return out

    def entry_blocks(self, slot: int) -> list:
        """Block ids of live or retired ``slot`` in chain order (for checks and tests)."""
        w = self._slots[2 * slot + 1]
        need = self.blocks_for(w >> 32)
        b = w & _LOW31
        if w & _CONTIG:
            return list(range(b, b + need))
        out = []
        for _ in range(need):
            out.append(b)
            b = self._next[b]
        return out

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Unmap the region; the owner also closes its descriptors. Idempotent."""
        for name in ("_data", "_slots", "_next"):
            mv = self.__dict__.pop(name, None)
            if mv is not None:
                mv.release()
        region = self.__dict__.get("_region")
        if region is not None:
            region.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return "_data" not in self.__dict__

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing to report to
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        if self.closed:
            raise ValueError("cannot share a closed store")
        return (_attach, (self._region, self.region_bytes, self.block_bytes,
                          self.n_blocks, self.max_entries))


def _attach(region: SharedRegion, region_bytes: int, block_bytes: int, n_blocks: int,
            max_entries: int) -> StoreReader:
    """Rebuild a read-only view of a store in another process (pickle hook)."""
    store = StoreReader.__new__(StoreReader)
    store._region = region
    store.region_bytes = region_bytes
    store.block_bytes = block_bytes
    store.n_blocks = n_blocks
    store.max_entries = max_entries
    store._map()
    return store
