"""CacheConfig validation: every bad value names itself, its limit and the fix."""

from __future__ import annotations

import dataclasses

import pytest

from impact_loader.cache import CacheConfig


@pytest.mark.parametrize("kwargs, match", [
    ({"cache_bytes": -1}, r"cache_bytes=-1 must be >= 0; pass 0 to disable the cache"),
    ({"cache_bytes": 1.5}, r"cache_bytes=1.5 must be an int >= 0"),
    ({"staging_bytes": -5}, r"staging_bytes=-5 must be >= 0"),
    ({"policy": "fifo"}, r"policy='fifo' is not a cache policy; choose one of"),
    ({"h_fraction": 1.5}, r"h_fraction=1.5 must be a number in \[0, 1\]"),
    ({"package_size": 0}, r"package_size=0 must be >= 1"),
    ({"block_bytes": 10}, r"block_bytes=10 must be >= 64"),
    ({"cache_bytes": 100}, r"cache_bytes=100 is smaller than one block \(block_bytes=4096\)"),
    ({"max_entries": 0}, r"max_entries=0 must be >= 1"),
    ({"substitution": "yes"}, r"substitution='yes' must be True or False"),
])
def test_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CacheConfig(**kwargs)


def test_defaults_frozen_and_keyword_only():
    cfg = CacheConfig(cache_bytes=1 << 20)
    assert cfg.policy == "importance" and cfg.package_size == 64 and cfg.h_fraction == 0.5
    assert cfg.h_bytes + cfg.l_bytes == cfg.cache_bytes
    assert cfg.region_bytes == 1 << 20
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.cache_bytes = 0
    with pytest.raises(TypeError):
        CacheConfig(1 << 20)  # positional arguments are refused
