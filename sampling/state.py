"""Named-key state of a sampler's epoch plan and the checks run before restoring one."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from .base import Selection, index_dtype

__all__ = ["selection_state", "selection_from_state", "check_compatible"]


def selection_state(selection: Selection, epoch: int) -> Dict[str, Any]:
    """A ``Selection`` (the global plan of ``epoch``) under named keys.

    The arrays are shared, not copied: a selection is never modified after it is made.
    """
    return {"epoch": int(epoch), "indices": selection.indices, "tier": selection.tier,
            "kind": selection.kind, "reevaluated": int(selection.reevaluated),
            "probs": selection.probs}


def selection_from_state(state: Dict[str, Any], num_samples: int) -> Selection:
    """Rebuild a ``Selection`` of ``num_samples`` samples from ``selection_state`` output.

    Indices come back as ``index_dtype(num_samples)``, whatever dtype was saved.
    """
    probs: Optional[np.ndarray] = None
    if state["probs"] is not None:
        probs = np.array(state["probs"], dtype=np.float64)
    return Selection(np.array(state["indices"], dtype=index_dtype(num_samples)),
                     np.array(state["tier"], dtype=np.int8), probs, str(state["kind"]),
                     int(state["reevaluated"]))


def check_compatible(state: Dict[str, Any], **mine: Any) -> None:
    """Raise unless ``state[key] == value`` for every ``key=value`` in ``mine``.

    Raises:
        ValueError: names the key, both values and the fix.
    """
    for key, value in mine.items():
        if state.get(key) != value:
            raise ValueError(f"state_dict has {key}={state.get(key)!r} but this sampler has "
                             f"{key}={value!r}; construct the sampler with the same settings "
                             "as the one that saved the state")
