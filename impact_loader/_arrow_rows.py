"""Random row access into one memory-mapped Arrow record batch, packed as records.

For each field of a batch, :class:`_Column` keeps zero-copy numpy / memoryview views of
the Arrow buffers (list offsets, string offsets, values) taken from the memory map.
Reading rows is then a few vectorised index operations per field plus one slice per
row, never a pyarrow scalar conversion.

:class:`ChunkView.pack` writes the records directly in the safetensors record format of
:mod:`impact_loader.records`, byte for byte what ``records.encode`` produces for the
same sample: the JSON header of a batch is a ``%``-template with the field names,
dtypes and every fixed shape / offset baked in, so a row costs one string format and
one ``bytes.join`` of buffer slices. Rows with a null field take a slower exact path.
"""

from __future__ import annotations

import json
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow_schema import Leaf, arrow_dtype
from .errors import CorruptRecordError, NotADatasetError

__all__ = ["ChunkView"]

_LEN = struct.Struct("<Q")
_PADS = [b" " * i for i in range(8)]
_TEXT_OFFSETS = {pa.string(): np.int32, pa.binary(): np.int32,
                 pa.large_string(): np.int64, pa.large_binary(): np.int64}


def _storage(arr: pa.Array) -> pa.Array:
    return arr.storage if isinstance(arr, pa.ExtensionArray) else arr


def _view(buf: Optional[pa.Buffer], dtype=np.uint8) -> np.ndarray:
    return np.frombuffer(buf, dtype=dtype) if buf is not None else np.zeros(0, dtype)


_PREFIXES: Dict[int, Tuple[bytes, bytes]] = {}


def _prefix(size: int) -> Tuple[bytes, bytes]:
    """(length prefix, space padding) of a header of ``size`` bytes."""
    got = _PREFIXES.get(size)
    if got is None:
        pad = -(size + 8) % 8
        got = _PREFIXES[size] = (_LEN.pack(size + pad), _PADS[pad])
    return got


def _checked(arr: pa.Array, dtype, limit: int, where: str, name: str) -> np.ndarray:
    """The offsets buffer of ``arr``, once checked to stay inside ``limit`` items.

    Checking every offset a batch uses once, when the file is opened, lets reads slice
    the value buffers without bounds checks (validate() does not look at the values).
    """
    offs = _view(arr.buffers()[1], dtype)
    used = offs[arr.offset:arr.offset + len(arr) + 1]
    if len(used) != len(arr) + 1 or (len(arr) and (
            int(used[0]) < 0 or int(used[-1]) > limit or (np.diff(used) < 0).any())):
        raise CorruptRecordError(
            f"{where}: column {name!r} has offsets outside its {limit}-item buffer or "
            "decreasing; the file is corrupt: write it again")
    return offs


def _frame(head: str) -> bytes:
    raw = head.encode("utf-8")
    pre, pad = _prefix(len(raw))
    return pre + raw + pad


class _Column:
    """Zero-copy views of one field's buffers in one record batch."""

    def __init__(self, batch: pa.RecordBatch, leaf: Leaf, where: str) -> None:
        self.leaf = leaf
        arr = batch.column(leaf.path[0])
        chain = [arr]
        for p in leaf.path[1:]:
            arr = _storage(arr).field(p)  # struct children come sliced like the parent
            chain.append(arr)
        valid = [pc.is_valid(a).to_numpy(zero_copy_only=False)
                 for a in chain if a.null_count]
        self.valid = np.logical_and.reduce(valid) if valid else None
        arr = _storage(arr)
        self.top, self.levels = arr.offset, []
        while isinstance(arr, (pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray)):
            child = _storage(arr.values)
            if child.null_count:
                raise NotADatasetError(
                    f"{where}: column {leaf.name!r} has null values inside its lists; an "
                    "array cannot hold them: fill them (pyarrow.compute.fill_null)")
            if isinstance(arr, pa.FixedSizeListArray):
                self.levels.append((arr.type.list_size, None, child.offset))
            else:
                off_type = np.int64 if isinstance(arr, pa.LargeListArray) else np.int32
                offs = _checked(arr, off_type, len(child), where, leaf.name)
                self.levels.append((0, offs, child.offset))
            arr = child
        typ = arr.type
        self.offsets, self.bits, self.itemsize = None, None, 1
        text = leaf.kind in ("str", "bytes")
        if pa.types.is_boolean(typ) and leaf.dtype == np.bool_:
            bits = _view(arr.buffers()[1])
            if self.levels:
                self.bits = bits  # bool arrays are unpacked row by row
            else:  # a bool scalar column is small: unpack it once
                unpacked = np.unpackbits(bits, bitorder="little")[arr.offset:]
                self.top, self.data = 0, memoryview(unpacked[:len(arr)].copy())
        elif text and pa.types.is_fixed_size_binary(typ) and not self.levels:
            self.itemsize = typ.byte_width
            self.data = memoryview(arr.buffers()[1] or b"")
        elif text and not self.levels and typ in _TEXT_OFFSETS:
            self.offsets = _checked(arr, _TEXT_OFFSETS[typ],
                                    len(arr.buffers()[2] or b""), where, leaf.name)
            self.data = memoryview(arr.buffers()[2] or b"")
        elif not text and arrow_dtype(typ) == leaf.dtype:
            self.itemsize = leaf.dtype.itemsize
            self.data = memoryview(arr.buffers()[1] or b"")
        else:
            raise CorruptRecordError(
                f"{where}: column {leaf.name!r} holds {batch.schema.field(leaf.path[0]).type}"
                f", which does not match its recorded kind {leaf.kind} / dtype {leaf.dtype};"
                " the file is corrupt: write the dataset again")
        self.shape_views = self.shape_table = None
        if leaf.shape_path is not None:
            sarr = batch.column(leaf.shape_path[0])
            offs = _view(sarr.buffers()[1], np.int32)[sarr.offset:sarr.offset + len(sarr) + 1]
            vals = _view(sarr.buffers()[3], np.int64)[sarr.values.offset:]
            self.shape_views = (offs, vals)
            ndim = np.diff(offs)
            if len(ndim) and (ndim == ndim[0]).all() and ndim[0] > 0:
                # One ndim in the whole batch: shapes form a (rows, ndim) table.
                k = int(ndim[0])
                self.shape_table = vals[offs[0]:offs[0] + k * len(ndim)].reshape(-1, k)
        fixed = all(off is None for _, off, _ in self.levels) and self.offsets is None
        count = int(np.prod([k for k, _, _ in self.levels], dtype=np.int64))
        self.const_size = count * self.itemsize if fixed else None
        self.const_shape = self._const_shape(fixed, where)

    def _const_shape(self, fixed: bool, where: str) -> Optional[str]:
        leaf = self.leaf
        if leaf.kind in ("int", "float", "bool"):
            return ""
        if leaf.kind in ("str", "bytes"):
            return None if self.const_size is None else str(self.const_size)
        if leaf.shape_path is not None:
            return None
        if leaf.shape is not None:
            want = int(np.prod(leaf.shape, dtype=np.int64)) * self.itemsize
            if self.const_size is not None and self.const_size != want:
                raise CorruptRecordError(
                    f"{where}: column {leaf.name!r} holds {self.const_size} bytes per row, "
                    f"its shape {leaf.shape} needs {want}; write the dataset again")
            return ",".join(map(str, leaf.shape))
        return ",".join(str(k) for k, _, _ in self.levels) if fixed else None

    def take(self, rows: np.ndarray) -> Tuple[object, Optional[list], list]:
        """Return (bytes per row: int or array, per-row shape texts or None, slices)."""
        s = rows + self.top if self.top else rows
        e = s + 1
        dims: list = []
        count: Optional[int] = 1
        for k, offs, coff in self.levels:
            if offs is None:
                s, e = s * k + coff, e * k + coff
                dims.append(k)
                count = None if count is None else count * k
                continue
            ns, ne = offs[s].astype(np.int64), offs[e].astype(np.int64)
            dims.append(ne - ns if count == 1 else self._rect_dim(offs, s, e, rows))
            s, e, count = ns + coff, ne + coff, None
        if self.offsets is not None:
            s, e = self.offsets[s].astype(np.int64), self.offsets[e].astype(np.int64)
        bs, be = s * self.itemsize, e * self.itemsize
        if self.bits is not None:
            slices = [self._unpack(a, b) for a, b in zip(s.tolist(), e.tolist())]
        else:
            data = self.data
            slices = [data[a:b] for a, b in zip(bs.tolist(), be.tolist())]
        nbytes = self.const_size if self.const_size is not None else be - bs
        shapes = None
        if self.const_shape is None:
            if self.leaf.kind in ("str", "bytes"):
                shapes = nbytes.tolist()
            elif self.shape_views is not None:
                shapes = self._stored_shapes(rows)
            elif len(dims) == 1:
                shapes = dims[0].tolist()
            else:
                cols = [d.tolist() if isinstance(d, np.ndarray) else [d] * len(rows)
                        for d in dims]
                shapes = [",".join(map(str, t)) for t in zip(*cols)]
        return nbytes, shapes, slices

    def _rect_dim(self, offs: np.ndarray, s: np.ndarray, e: np.ndarray,
                  rows: np.ndarray) -> np.ndarray:
        """Length of the (equal-length) inner lists of each row; refuse ragged ones."""
        out = np.zeros(len(s), np.int64)
        for j, (a, b) in enumerate(zip(s.tolist(), e.tolist())):
            lens = np.diff(offs[a:b + 1])
            if len(lens) and (lens != lens[0]).any():
                if self.valid is None or self.valid[rows[j]]:
                    raise CorruptRecordError(
                        f"column {self.leaf.name!r} row {int(rows[j])} (in its record "
                        f"batch) holds nested lists of lengths {sorted(set(lens.tolist()))};"
                        " only rectangular nesting maps to an array: select other "
                        "columns with columns=[...]")
            out[j] = lens[0] if len(lens) else 0
        return out

    def _unpack(self, a: int, b: int) -> bytes:
        bits = np.unpackbits(self.bits[a >> 3:(b + 7) >> 3], bitorder="little")
        return bits[a & 7:(a & 7) + b - a].tobytes()

    def _stored_shapes(self, rows: np.ndarray) -> list:
        table = self.shape_table
        if table is not None:
            if table.shape[1] == 1:
                return table[rows, 0].tolist()
            return [",".join(map(str, t)) for t in table[rows].tolist()]
        offs, vals = self.shape_views
        return [",".join(map(str, vals[a:b].tolist()))
                for a, b in zip(offs[rows].tolist(), offs[rows + 1].tolist())]


def _header(cols: Sequence[_Column], shapes: list, offsets: list, escape: bool) -> str:
    """The record JSON header; values are strings, or None for a ``%s`` slot."""
    esc = (lambda t: t.replace("%", "%%")) if escape else (lambda t: t)
    slot = lambda v: "%s" if v is None else v  # noqa: E731
    kinds = {c.leaf.name: c.leaf.kind for c in sorted(cols, key=lambda c: c.leaf.order)
             if c.leaf.kind != "array"}
    parts = []
    if kinds:
        inner = json.dumps(kinds, separators=(",", ":"))
        parts.append(esc('"__metadata__":{"impact.types":' + json.dumps(inner) + "}"))
    for c, shape, (start, end) in zip(cols, shapes, offsets):
        parts.append(esc(json.dumps(c.leaf.name) + ':{"dtype":"' + c.leaf.st_dtype)
                     + '","shape":[' + slot(shape) + '],"data_offsets":['
                     + slot(start) + "," + slot(end) + "]}")
    return "{" + ",".join(parts) + "}"


class ChunkView:
    """Reads rows of one record batch as records (see module docstring)."""

    def __init__(self, batch: pa.RecordBatch, leaves: Sequence[Leaf], where: str) -> None:
        self.rows = batch.num_rows
        # records.encode orders fields widest item first, stable in sample-key order.
        ordered = sorted(leaves, key=lambda leaf: (-leaf.itemsize, leaf.order))
        self.cols = [_Column(batch, leaf, where) for leaf in ordered]
        self.nullable = any(c.valid is not None for c in self.cols)
        offsets, acc, self.dyn_offsets = [], 0, []
        for c in self.cols:
            dyn = acc is None or c.const_size is None
            self.dyn_offsets.append(dyn)
            if dyn:
                offsets.append((None, None))
                acc = None
            else:
                offsets.append((str(acc), str(acc + c.const_size)))
                acc += c.const_size
        shapes = [c.const_shape for c in self.cols]
        fmt = _header(self.cols, shapes, offsets, escape=True)
        self.fmt = fmt
        self.const_head = _frame(fmt % ()) if not any(self.dyn_offsets) and all(
            s is not None for s in shapes) else None

    def pack(self, rows: np.ndarray) -> List[bytes]:
        """Return the records of ``rows`` (indices within this batch), in order."""
        n = len(rows)
        taken = [c.take(rows) for c in self.cols]
        if self.const_head is not None:
            heads = [self.const_head] * n
        else:
            slots: list = []
            acc = 0
            for c, dyn, (nbytes, shapes, _) in zip(self.cols, self.dyn_offsets, taken):
                if shapes is not None:
                    slots.append(shapes)
                end = acc + nbytes
                if dyn:
                    slots.append(acc.tolist() if isinstance(acc, np.ndarray) else [acc] * n)
                    slots.append(end.tolist() if isinstance(end, np.ndarray) else [end] * n)
                acc = end
            fmt = self.fmt
            raws = [(fmt % t).encode() for t in zip(*slots)]
            pres = [_PREFIXES.get(len(h)) or _prefix(len(h)) for h in raws]
            heads = [pre + h + pad for (pre, pad), h in zip(pres, raws)]
        out = [b"".join(p) for p in zip(heads, *(t[2] for t in taken))]
        if self.nullable:
            self._repack_nulls(rows, taken, out)
        return out

    def _repack_nulls(self, rows: np.ndarray, taken: list, out: List[bytes]) -> None:
        """Rewrite the records of rows with null fields, leaving those fields out."""
        ok = np.ones(len(rows), bool)
        for c in self.cols:
            if c.valid is not None:
                ok &= c.valid[rows]
        for j in np.flatnonzero(~ok).tolist():
            r = int(rows[j])
            cols, shapes, offsets, parts, acc = [], [], [], [], 0
            for c, (nbytes, shp, slices) in zip(self.cols, taken):
                if c.valid is not None and not c.valid[r]:
                    continue
                size = int(nbytes if isinstance(nbytes, int) else nbytes[j])
                cols.append(c)
                shapes.append(c.const_shape if shp is None else str(shp[j]))
                offsets.append((str(acc), str(acc + size)))
                parts.append(slices[j])
                acc += size
            out[j] = b"".join([_frame(_header(cols, shapes, offsets, escape=False))] + parts)
