"""StoreReader: the read side of the shared store, for any process.

Layout of the shared region (see ``region.py`` for how it is shared):

* data mapping -- ``n_blocks`` blocks of ``block_bytes``, block ``b`` at byte
  ``b * block_bytes``; its size is exactly the sum of the store's pools. A record is
  *contiguous* (adjacent blocks, one slice) or *chained* (every block but the last ends
  with the 4-byte little-endian id of the next block; see ``allocator.py``).
* metadata mapping -- per entry slot three int32: the *generation*, the record length
  in bytes, and the *head*: the first block of a contiguous record, or ``~first`` (a
  negative number) for a chained one. Nothing is stored per block.

Seqlock read: the generation is odd (or 0, never used) while a slot is free or being
written and even once published. :meth:`StoreReader.read` is given the generation the
cache directory promised; it checks it before and after copying, and bounds-checks the
length and every block id, so it returns the exact published bytes or ``None`` --
never torn or foreign bytes. Ordering relies on stores and loads to the shared mapping
being performed in program order, which holds on x86-64 (TSO); weakly ordered CPUs
would need fences that Python cannot issue.

A pickled store (the dataset sent to ``spawn``/``forkserver`` DataLoader workers)
arrives as a ``StoreReader``: workers read, only the owner writes.
"""

from __future__ import annotations

from typing import List, Optional

from .layout import chain_of, contiguous_blocks
from .region import SharedRegion

__all__ = ["StoreReader", "SLOT_BYTES"]

SLOT_BYTES = 12  # shared metadata per entry slot: generation, length, head (int32 each)


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
        self._slots = meta[:SLOT_BYTES * self.max_entries].cast("i")
        meta.release()

    # ------------------------------------------------------------------ readers
    def read(self, slot: int, generation: int) -> Optional[bytearray]:
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
        t = self._slots
        i = 3 * slot
        g = t[i]
        if g != generation or g & 1 or not g:
            return None
        n = t[i + 1]
        head = t[i + 2]
        if head >= 0:
            off = head * self.block_bytes
            if n < 0 or off + n > self.region_bytes:
                return None
            out = bytearray(self._data[off:off + n])
        else:
            out = self._read_chain(~head, n)
            if out is None:
                return None
        if t[i] != g:
            return None
        return out

    def _read_chain(self, b: int, n: int) -> Optional[bytearray]:
        if n < 0:
            return None
        bb, data, nb = self.block_bytes, self._data, self.n_blocks
        pay = bb - 4
        out = bytearray(n)
        pos = 0
        while n - pos > bb:
            if not 0 <= b < nb:
                return None
            off = b * bb
            out[pos:pos + pay] = data[off:off + pay]
            pos += pay
            b = int.from_bytes(data[off + pay:off + bb], "little", signed=True)
        if not 0 <= b < nb:
            return None
        off = b * bb
        out[pos:n] = data[off:off + n - pos]
        return out

    def entry_blocks(self, slot: int) -> List[int]:
        """Block ids of a published ``slot`` in record order (for checks and tests)."""
        t = self._slots
        n, head = t[3 * slot + 1], t[3 * slot + 2]
        if head >= 0:
            return list(range(head, head + contiguous_blocks(n, self.block_bytes)))
        return chain_of(self._data, self.block_bytes, ~head, n)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Unmap the region; the owner also closes its descriptors. Idempotent."""
        self._drop_views()
        for name in ("_data", "_slots"):
            mv = self.__dict__.pop(name, None)
            if mv is not None:
                mv.release()
        region = self.__dict__.get("_region")
        if region is not None:
            region.close()

    def _drop_views(self) -> None:
        """Drop owner-side views of the mappings (none on the read side)."""

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
