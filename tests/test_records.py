"""The record format: exact round trips, safetensors compatibility, corrupt input."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.numpy as stn
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from impact_loader import CorruptRecordError, SchemaMismatchError, decode, encode
from source_factories import assert_same_sample as _assert_same

DTYPES = [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.float16, np.uint32,
          np.int32, np.float32, np.uint64, np.int64, np.float64]


values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=40),
    st.binary(max_size=40),
    hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3,
                                                          min_side=0, max_side=5)),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k != "__metadata__"),
                       values, min_size=1, max_size=6))
def test_round_trip_is_exact(sample):
    got = decode(encode(sample))
    for k, v in sample.items():
        if isinstance(v, np.ndarray):
            assert got[k].dtype == v.dtype and got[k].shape == v.shape
            np.testing.assert_array_equal(got[k], v)
        else:
            assert type(got[k]) is type(v)
            assert got[k] == v or (v != v and got[k] != got[k])


def test_nan_and_big_endian_arrays():
    sample = {"a": np.array([np.nan, 1.0]), "b": np.arange(3, dtype=">i4")}
    got = decode(encode(sample))
    assert np.isnan(got["a"][0])
    assert got["b"].dtype == np.dtype("<i4")  # stored little-endian, same values
    np.testing.assert_array_equal(got["b"], [0, 1, 2])


def test_is_a_safetensors_file_both_ways():
    sample = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": 7, "s": "hé"}
    lib = stn.load(encode(sample))
    np.testing.assert_array_equal(lib["x"], sample["x"])
    assert lib["y"].shape == () and int(lib["y"]) == 7
    theirs = stn.save({"w": np.ones((2, 2), np.float64), "v": np.arange(5, dtype=np.int16)})
    _assert_same(decode(theirs), {"w": np.ones((2, 2)), "v": np.arange(5, dtype=np.int16)})


def test_views_are_writable_only_over_writable_buffers():
    raw = encode({"x": np.arange(4, dtype=np.float32)})
    assert not decode(raw)["x"].flags.writeable
    buf = bytearray(raw)
    arr = decode(buf)["x"]
    arr[0] = 9.0  # zero-copy view into buf
    assert decode(bytes(buf))["x"][0] == 9.0


@pytest.mark.parametrize("bad,match", [
    ({"x": np.array(["a"])}, "dtype"),
    ({"x": object()}, "not storable"),
    ({"x": 2**70}, "int64"),
    ({}, "non-empty"),
    ({"__metadata__": 1}, "reserved"),
    ({"x": np.array([1 + 2j])}, "dtype"),
])
def test_unstorable_values_are_refused(bad, match):
    with pytest.raises(SchemaMismatchError, match=match):
        encode(bad)


def test_truncated_and_garbage_records_raise():
    raw = encode({"x": np.arange(100, dtype=np.float64), "y": 1})
    for cut in (0, 5, 8, 20, len(raw) - 1):
        with pytest.raises(CorruptRecordError):
            decode(raw[:cut])
    with pytest.raises(CorruptRecordError):
        decode(raw + b"\0" * 8)
    with pytest.raises(CorruptRecordError):
        decode(b"\xff" * 64)
    head = b'{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}'
    with pytest.raises(CorruptRecordError, match="do not hold"):
        decode(len(head).to_bytes(8, "little") + head + b"\0" * 8)
    head = b'{"x":{"dtype":"PY","shape":[1],"data_offsets":[0,1]}}'
    with pytest.raises(CorruptRecordError, match="malformed"):
        decode(len(head).to_bytes(8, "little") + head + b"\0")


def test_cached_layout_still_checks_length():
    raw = encode({"x": np.arange(10, dtype=np.int32)})
    decode(raw)  # caches the layout
    with pytest.raises(CorruptRecordError):
        decode(raw[:-4])


def test_non_contiguous_arrays_round_trip():
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    for arr in (base.T, base[:, ::2], base[::-1]):
        got = decode(encode({"a": arr}))["a"]
        assert got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
