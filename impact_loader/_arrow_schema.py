"""Which record fields an Arrow schema yields, and from which columns.

A *leaf* is one field of the records an :class:`~impact_loader.ArrowSource` returns.
Files written by :func:`~impact_loader.write_arrow` describe their leaves in the schema
metadata key ``b"impact_loader"``; any other Arrow data (for example a HuggingFace
``datasets`` cache file) is mapped by column type:

===================================================  =====================================
Arrow column type                                    record field
===================================================  =====================================
int64 / float64 / bool                               Python ``int`` / ``float`` / ``bool``
other int, uint and float widths (incl. float16)     0-d numpy array of that dtype (exact)
string, large_string                                 ``str``
binary, large_binary, fixed_size_binary              ``bytes``
(large_/fixed_size_)list nested over a numeric or    numpy array; one dimension per list
bool type, fixed_shape_tensor                        level (nested lists must be rectangular)
struct                                               one field per child, ``"parent.child"``
null type                                            no field
anything else (timestamps, dictionaries, ...)        error; skip it with ``columns=``
===================================================  =====================================

A null value is not storable in a record, so a null field is *omitted* from that row's
record (a row whose every field is null decodes to ``{}``); a null struct omits all its
children. Nulls *inside* a list cannot be represented by an array and are refused.
"""

from __future__ import annotations

import json
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from .errors import CorruptRecordError, NotADatasetError
from .records import _DTYPE_TO_ST

__all__ = ["Leaf", "plan_leaves", "META_KEY", "FORMAT", "arrow_dtype"]

META_KEY = b"impact_loader"
FORMAT = "impact-loader-arrow"
_SCALAR_SIZE = {"int": 8, "float": 8, "bool": 1, "str": 1, "bytes": 1}


class Leaf:
    """One record field: its name, kind, dtype and where it sits in a record batch.

    Attributes:
        name: field name in the record (struct children as ``"parent.child"``).
        kind: ``"int" | "float" | "bool" | "str" | "bytes" | "array"``.
        dtype: numpy dtype of the field's bytes in the record.
        path: column index in the batch, then struct child indices.
        shape: fixed array shape recorded by write_arrow, or None.
        shape_path: path of the write_arrow column holding per-row shapes, or None.
        order: position of the field in the sample dict (key order).
    """

    __slots__ = ("name", "kind", "dtype", "path", "shape", "shape_path", "order")

    def __init__(self, name: str, kind: str, dtype: np.dtype, path: Tuple[int, ...],
                 shape: Optional[Tuple[int, ...]] = None,
                 shape_path: Optional[Tuple[int, ...]] = None) -> None:
        self.name, self.kind, self.dtype, self.path = name, kind, dtype, path
        self.shape, self.shape_path, self.order = shape, shape_path, 0

    @property
    def itemsize(self) -> int:
        """Bytes per element, the key records.encode sorts fields by."""
        return _SCALAR_SIZE.get(self.kind, self.dtype.itemsize)

    @property
    def st_dtype(self) -> str:
        """The safetensors dtype name of the field."""
        return _DTYPE_TO_ST[self.dtype]

    def key(self) -> Tuple[str, str, str]:
        """What two files of one dataset must agree on for this field."""
        return (self.name, self.kind, self.dtype.str)


def arrow_dtype(typ: pa.DataType) -> Optional[np.dtype]:
    """The storable numpy dtype of a numeric or bool Arrow type, else None."""
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ)
            or pa.types.is_boolean(typ)):
        return None
    dtype = np.dtype(typ.to_pandas_dtype())
    return dtype if dtype in _DTYPE_TO_ST else None


def _is_list(typ: pa.DataType) -> bool:
    return (pa.types.is_list(typ) or pa.types.is_large_list(typ)
            or pa.types.is_fixed_size_list(typ))


def _walk(typ: pa.DataType, name: str, path: Tuple[int, ...], out: list) -> None:
    """Append the leaves (or ``(name, type)`` for unsupported ones) of one column."""
    shape = None
    if isinstance(typ, pa.FixedShapeTensorType):
        perm = typ.permutation
        if perm is None or list(perm) == list(range(len(typ.shape))):
            shape = tuple(typ.shape)
    if isinstance(typ, pa.BaseExtensionType):
        typ = typ.storage_type
    if pa.types.is_struct(typ):
        for i in range(typ.num_fields):
            child = typ.field(i)
            _walk(child.type, f"{name}.{child.name}", path + (i,), out)
        return
    if pa.types.is_null(typ):
        return
    scalar = {pa.int64(): "int", pa.float64(): "float", pa.bool_(): "bool"}.get(typ)
    if scalar is not None:
        out.append(Leaf(name, scalar, arrow_dtype(typ), path))
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        out.append(Leaf(name, "str", np.dtype(np.uint8), path))
    elif (pa.types.is_binary(typ) or pa.types.is_large_binary(typ)
          or pa.types.is_fixed_size_binary(typ)):
        out.append(Leaf(name, "bytes", np.dtype(np.uint8), path))
    else:
        inner = typ
        while _is_list(inner):
            inner = inner.value_type
        dtype = arrow_dtype(inner)
        if dtype is None:
            out.append((name, typ))
        else:
            out.append(Leaf(name, "array", dtype, path, shape=shape))


def _from_metadata(schema: pa.Schema, raw: bytes, where: str) -> List[Leaf]:
    try:
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        leaves = []
        for f in meta["fields"]:
            col = schema.get_field_index(f["name"])
            shape_col = f.get("shape_column")
            shape_path = None
            if shape_col is not None:
                shape_path = (schema.get_field_index(shape_col),)
                if shape_path[0] < 0:
                    raise ValueError(f"missing shape column {shape_col!r}")
            if col < 0:
                raise ValueError(f"missing column {f['name']!r}")
            shape = None if f.get("shape") is None else tuple(int(d) for d in f["shape"])
            leaf = Leaf(f["name"], f["kind"], np.dtype(f["dtype"]), (col,), shape, shape_path)
            if leaf.kind not in _SCALAR_SIZE and leaf.kind != "array":
                raise ValueError(f"unknown kind {leaf.kind!r}")
            leaf.st_dtype  # noqa: B018 - raises KeyError for an unstorable dtype
            leaves.append(leaf)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptRecordError(
            f"{where}: its write_arrow schema metadata is malformed ({exc!r}); the file "
            "is corrupt: write the dataset again") from None
    return leaves


def _selected(name: str, wanted: Sequence[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in wanted for i in range(1, len(parts) + 1))


def plan_leaves(schema: pa.Schema, where: str,
                columns: Optional[Sequence[str]] = None) -> List[Leaf]:
    """Return the record fields of ``schema`` in sample-key order.

    Args:
        schema: the Arrow schema of one file.
        where: the file's path, for messages.
        columns: keep only these fields (a struct's name keeps all its children);
            None keeps every field.

    Raises:
        NotADatasetError: a selected column has a type no record field can hold, or
            ``columns`` names nothing in the file.
        CorruptRecordError: write_arrow metadata is present but malformed.
    """
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is not None:
        found: list = _from_metadata(schema, raw, where)
    else:
        found = []
        for i, field in enumerate(schema):
            _walk(field.type, field.name, (i,), found)
    if columns is not None:
        names = [x.name if isinstance(x, Leaf) else x[0] for x in found]
        unknown = [c for c in columns if not any(_selected(n, [c]) for n in names)]
        if unknown:
            raise NotADatasetError(
                f"{where}: columns={list(columns)!r} names {unknown} which the file does "
                f"not hold; available fields: {names}")
        found = [x for x, n in zip(found, names) if _selected(n, columns)]
    bad = [x for x in found if not isinstance(x, Leaf)]
    if bad:
        name, typ = bad[0]
        raise NotADatasetError(
            f"{where}: column {name!r} has Arrow type {typ}, which no record field can "
            "hold (supported: numeric, bool, string, binary, lists of numbers, structs "
            "of those); pass columns=[...] without it to skip it")
    if not found:
        raise NotADatasetError(f"{where}: no column to read (columns={columns!r}); pass "
                               "columns=None or name at least one field")
    for i, leaf in enumerate(found):
        leaf.order = i
    return found
