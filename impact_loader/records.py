"""The record format: one sample dict as one self-describing byte string, no pickle.

A record is a valid `safetensors <https://github.com/huggingface/safetensors>`_ file:
an 8-byte little-endian header length, a JSON header naming each field's dtype, shape and
byte range, then the raw little-endian buffers. safetensors was chosen because it is a
small, widely implemented, code-free format built for exactly this (untrusted files of
named arrays); any safetensors reader can open a record. Values that are not arrays ride
in the same container: ``int`` as a 0-d I64, ``float`` as a 0-d F64, ``bool`` as a 0-d
BOOL, ``str`` (UTF-8) and ``bytes`` as U8 vectors; the header's ``__metadata__`` entry
``impact.types`` records which fields those are, so they decode back to the Python type.

Encoding and decoding are implemented here with numpy rather than through the
safetensors package because decoding sits on the hot path of every DataLoader worker:
parsed headers are cached (records of one dataset share a handful of layouts), and
arrays come back as views of the record's buffer, so a writable buffer (``bytearray``,
writable ``memoryview``) yields writable arrays without a copy. The test suite checks
both directions against the safetensors package itself.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np

from .errors import CorruptRecordError, SchemaMismatchError

__all__ = ["encode", "decode", "schema_of", "MAX_HEADER_BYTES"]

MAX_HEADER_BYTES = 1 << 24  # a record header above 16 MiB is treated as corrupt

_DTYPE_TO_ST = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "U8",
    np.dtype(np.int8): "I8",
    np.dtype("<u2"): "U16",
    np.dtype("<i2"): "I16",
    np.dtype("<f2"): "F16",
    np.dtype("<u4"): "U32",
    np.dtype("<i4"): "I32",
    np.dtype("<f4"): "F32",
    np.dtype("<u8"): "U64",
    np.dtype("<i8"): "I64",
    np.dtype("<f8"): "F64",
}
_ST_TO_DTYPE = {v: k for k, v in _DTYPE_TO_ST.items()}
_SCALAR_KINDS = ("int", "float", "bool", "str", "bytes")
_META_KEY = "impact.types"
_LEN = struct.Struct("<Q")


def _normalise(name: str, value: Any) -> Tuple[str, np.dtype, Tuple[int, ...], Any]:
    """Map one field value to (kind, dtype, shape, buffer); kind 'array' or a scalar kind."""
    if not isinstance(name, str):
        raise SchemaMismatchError(f"field name {name!r} must be a str")
    if isinstance(value, (bool, np.bool_)) and not isinstance(value, np.ndarray):
        return "bool", np.dtype(np.bool_), (), struct.pack("<?", bool(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.ndarray):
        if isinstance(value, np.integer):
            value = np.asarray(value)
        else:
            if not -(1 << 63) <= value < (1 << 63):
                raise SchemaMismatchError(
                    f"field {name!r}: int {value} does not fit in int64; store it as str"
                )
            return "int", np.dtype("<i8"), (), struct.pack("<q", value)
    if isinstance(value, float):
        return "float", np.dtype("<f8"), (), struct.pack("<d", value)
    if isinstance(value, str):
        return "str", np.dtype(np.uint8), None, value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes", np.dtype(np.uint8), None, bytes(value)
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dtype not in _DTYPE_TO_ST:
            raise SchemaMismatchError(
                f"field {name!r}: dtype {arr.dtype} is not storable; use one of "
                "bool, (u)int8/16/32/64, float16/32/64"
            )
        arr = arr.astype(dtype, order="C", copy=False)  # (ascontiguousarray drops 0-d)
        return "array", dtype, arr.shape, arr
    raise SchemaMismatchError(
        f"field {name!r}: {type(value).__name__} is not storable; values must be numpy "
        "arrays, int, float, bool, str or bytes"
    )


def schema_of(sample: Mapping[str, Any]) -> Dict[str, Tuple[str, str]]:
    """Return ``{field: (kind, dtype)}``: what every sample of one dataset must share.

    Raises:
        SchemaMismatchError: a field value is of a type that cannot be stored.
    """
    if not isinstance(sample, Mapping) or not sample:
        raise SchemaMismatchError(
            f"a sample must be a non-empty dict of str -> value, got {type(sample).__name__}"
        )
    out = {}
    for name, value in sample.items():
        kind, dtype, _, _ = _normalise(name, value)
        out[name] = (kind, dtype.str)
    return out


def encode(sample: Mapping[str, Any]) -> bytes:
    """Encode one sample dict as a record (a safetensors byte string).

    Args:
        sample: ``str -> numpy array | int | float | bool | str | bytes``.

    Returns:
        The record bytes.

    Raises:
        SchemaMismatchError: a value is of a type or dtype that cannot be stored.
    """
    if not isinstance(sample, Mapping) or not sample:
        raise SchemaMismatchError(
            f"a sample must be a non-empty dict of str -> value, got {type(sample).__name__}"
        )
    fields = []
    kinds = {}
    for name, value in sample.items():
        if name == "__metadata__":
            raise SchemaMismatchError("field name '__metadata__' is reserved by the format")
        kind, dtype, shape, buf = _normalise(name, value)
        if kind != "array":
            kinds[name] = kind
        nbytes = len(buf) if kind != "array" else buf.nbytes
        if shape is None:
            shape = (nbytes,)
        fields.append((dtype.itemsize, name, dtype, shape, buf, nbytes))
    # Widest items first keeps every buffer aligned to its item size.
    fields.sort(key=lambda f: -f[0])
    header: Dict[str, Any] = {}
    if kinds:
        header["__metadata__"] = {_META_KEY: json.dumps(kinds, separators=(",", ":"))}
    offset = 0
    for _, name, dtype, shape, _, nbytes in fields:
        header[name] = {
            "dtype": _DTYPE_TO_ST[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-(len(head) + 8) % 8)
    parts = [_LEN.pack(len(head)), head]
    parts.extend(f[4] if f[5] else b"" for f in fields)
    return b"".join(p if isinstance(p, bytes) else p.tobytes() for p in parts)


_Decoder = Callable[[Any, int], Any]
_layouts: Dict[bytes, Tuple[int, List[Tuple[str, _Decoder]]]] = {}
_MAX_LAYOUTS = 4096


def _scalar(fmt: str) -> _Decoder:
    unpack = struct.Struct(fmt).unpack_from
    return lambda buf, start: unpack(buf, start)[0]


def _field_decoder(kind: str, dtype: np.dtype, shape: Tuple[int, ...],
                   start: int, end: int) -> _Decoder:
    if kind == "int":
        dec = _scalar("<q")
        return lambda buf, base: dec(buf, base + start)
    if kind == "float":
        dec = _scalar("<d")
        return lambda buf, base: dec(buf, base + start)
    if kind == "bool":
        dec = _scalar("<?")
        return lambda buf, base: dec(buf, base + start)
    if kind == "str":
        return lambda buf, base: str(buf[base + start:base + end], "utf-8")
    if kind == "bytes":
        return lambda buf, base: bytes(buf[base + start:base + end])
    count = end - start
    n = count // dtype.itemsize if dtype.itemsize else 0
    return lambda buf, base: np.frombuffer(
        buf, dtype=dtype, count=n, offset=base + start).reshape(shape)


def _parse_header(head: bytes, data_len: int) -> List[Tuple[str, _Decoder]]:
    try:
        header = json.loads(head)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptRecordError(f"record header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CorruptRecordError("record header is not a JSON object")
    kinds: Dict[str, str] = {}
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise CorruptRecordError("record __metadata__ is not a JSON object")
    if _META_KEY in meta:
        try:
            kinds = json.loads(meta[_META_KEY])
        except (TypeError, ValueError):
            raise CorruptRecordError(f"record metadata {_META_KEY!r} is not JSON") from None
    spans = []
    for name, info in header.items():
        try:
            dtype = _ST_TO_DTYPE[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CorruptRecordError(
                f"record field {name!r} has a malformed entry {info!r}") from None
        if any(d < 0 for d in shape) or not 0 <= start <= end <= data_len:
            raise CorruptRecordError(
                f"record field {name!r}: shape {shape} / offsets {start}..{end} do not fit "
                f"the {data_len}-byte payload (truncated record?)")
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != end - start:
            raise CorruptRecordError(
                f"record field {name!r}: {end - start} bytes do not hold shape {shape} "
                f"of {dtype}")
        kind = kinds.get(name, "array")
        if kind not in _SCALAR_KINDS and kind != "array":
            raise CorruptRecordError(f"record field {name!r} has unknown kind {kind!r}")
        spans.append((start, end, name, kind, dtype, shape))
    spans.sort()
    expected = 0
    for start, end, name, *_ in spans:
        if start != expected:
            raise CorruptRecordError(
                f"record field {name!r} starts at byte {start}, expected {expected}: "
                "buffers overlap or leave a gap")
        expected = end
    if expected != data_len:
        raise CorruptRecordError(
            f"record payload is {data_len} bytes but its fields cover {expected} "
            "(truncated or padded record)")
    return [(s[2], _field_decoder(s[3], s[4], s[5], s[0], s[1])) for s in spans]


def decode(raw: Any) -> Dict[str, Any]:
    """Decode a record into a sample dict.

    Arrays are views of ``raw`` (no copy): read-only when ``raw`` is ``bytes``, writable
    when it is a ``bytearray`` or writable ``memoryview``.

    Args:
        raw: the record bytes (``bytes``, ``bytearray`` or ``memoryview``).

    Returns:
        ``{field: value}`` with the types given to :func:`encode`.

    Raises:
        CorruptRecordError: the bytes are truncated, malformed or not a record.
    """
    total = len(raw)
    if total < 8:
        raise CorruptRecordError(f"record of {total} bytes is shorter than its 8-byte header "
                                 "length (truncated record)")
    (hlen,) = _LEN.unpack_from(raw, 0)
    if hlen > MAX_HEADER_BYTES or hlen + 8 > total:
        raise CorruptRecordError(
            f"record header length {hlen} does not fit a {total}-byte record "
            "(truncated or not an impact-loader record)")
    base = 8 + hlen
    head = bytes(raw[8:base])
    cached = _layouts.get(head)
    # The header fixes the payload length, so a cached layout is valid only for a record
    # of the same total size; anything else is a truncated or padded copy.
    if cached is None or cached[0] != total - base:
        cached = (total - base, _parse_header(head, total - base))
        if len(_layouts) >= _MAX_LAYOUTS:
            _layouts.clear()
        _layouts[head] = cached
    return {name: dec(raw, base) for name, dec in cached[1]}
