"""L-cache service for one batch: substitutes and package loads, in plan order.

Applies to policies with an L-cache (``policy.has_l_cache``). For the batch's missed
L-tier samples, in plan order, the rule is the per-sample one of the design: a miss
takes a substitute (a cached L entry not yet used this epoch, reported by its real
index) if one is left; then, when fewer than ``package_size`` substitutes remain (or
on every miss with substitution off), the package holding the missed index is loaded
into the L pool; a miss without a substitute is served from that package if it is in
it, and otherwise falls through to admission/staging like any other miss.

It runs in *phases*, not per sample: one numpy call hands out substitutes to every
miss up to the one that brings the count below ``package_size`` (or finds none left),
then that miss's package is loaded. So a batch costs about one phase per package
loaded. Once a package load is cut short for lack of room, no further loads are tried
in this batch (nothing frees room before the next ``release``): the remaining misses
take what substitutes are left in one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .admission import admit
from .codes import LOC_L, TIER_L

if TYPE_CHECKING:  # pragma: no cover
    from .annotation import BatchBuilder
    from .directory import CacheDirectory

__all__ = ["serve_l"]

_NONE = np.empty(0, np.int64)


def serve_l(d: "CacheDirectory", b: "BatchBuilder") -> None:
    """Answer the batch's L-tier misses with substitutes and package loads."""
    pol = d.policy
    pos = (~b.hit & (b.tier == TIER_L)).nonzero()[0]
    if not len(pos):
        return
    subst = bool(pol.substitutable(b.tier[pos[:1]])[0])
    i, room, loaded = 0, True, False
    while i < len(pos):
        if loaded:  # misses whose sample came with the package just loaded
            loaded = False
            rest = pos[i:]
            got = d._slot_of[b.idx[rest]].astype(np.int64)
            if np.count_nonzero(got >= 0):
                _serve(d, b, rest[got >= 0], got[got >= 0], substitute=False)
                pos = np.concatenate([pos[:i], rest[got < 0]])
                continue
        m = len(pos) - i
        u = pol.substitutes_left() if subst else 0
        if not room:  # no package can load before release(): substitutes are all
            if u:
                s = pol.take_substitutes(m)
                _serve(d, b, pos[i:i + len(s)], s, substitute=True)
            return
        # Misses i .. i+t-1 take substitutes and leave at least refill_below() behind;
        # miss i+t takes one too (if any is left) and is due to load a package.
        t = max(0, u - pol.refill_below()) if subst else 0
        if t >= m:
            s = pol.take_substitutes(m)
            _serve(d, b, pos[i:i + len(s)], s, substitute=True)
            return
        s = pol.take_substitutes(t + 1) if u else _NONE
        if len(s):
            _serve(d, b, pos[i:i + len(s)], s, substitute=True)
        p = int(pos[i + t])
        run = pol.package(int(b.idx[p]), TIER_L)
        if run is not None:
            room = _load_package(d, b, p, run)
            loaded = True
        if len(s) <= t:  # miss p got no substitute: its own package may hold it
            own = int(d._slot_of[b.idx[p]])
            if own >= 0:
                _serve(d, b, pos[i + t:i + t + 1], np.array([own], np.int64),
                       substitute=False)
        i += t + 1


def _serve(d: "CacheDirectory", b: "BatchBuilder", positions: np.ndarray,
           slots: np.ndarray, *, substitute: bool) -> None:
    """Deliver ``slots`` at ``positions`` (a substitute reports its real index)."""
    d.store._touch_latest(slots, b.seq)  # at once: a package loaded later must not reuse them
    b.slot[positions] = slots
    if substitute:
        delivered = d._index_of[slots].astype(np.int64)
        b.substitute(positions, delivered)
        unknown = np.empty(len(slots))
        unknown.fill(np.nan)  # a substitute's importance is not the planned one
        d.policy.hit(slots, unknown, delivered)
    else:
        d.policy.hit(slots, b.imp[positions], b.idx[positions])


def _load_package(d: "CacheDirectory", b: "BatchBuilder", p: int, run) -> bool:
    """Admit the uncached samples of ``run`` to the L pool; False if room ran out."""
    r = np.arange(run[0], run[1])
    cand = r[d._slot_of[r] < 0]
    if not len(cand):
        return True
    low = np.empty(len(cand))
    low.fill(-np.inf)  # L entries have no importance order
    ok = admit(d, LOC_L, cand, low, b.seq)
    if np.count_nonzero(ok):
        got = cand[ok]
        b.add_reads(np.array([p]), got[:1], got[-1:] + 1, LOC_L)
    return np.count_nonzero(ok) == len(ok)
