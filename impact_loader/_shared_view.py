"""Lifetime of a numpy view over a :class:`SharedRegion`, shared by small shared tables.

The worker counters and the batch-readiness flags each map one region and read it
through one numpy view. Closing must drop the view before the mapping (a live view
keeps the mapping from closing), must be idempotent, and must also run on garbage
collection.
"""

from __future__ import annotations

__all__ = ["SharedView"]


class SharedView:
    """Mixin: ``close``/``closed``/``__del__`` for a class holding ``_region`` and a view.

    Subclasses set :attr:`_VIEW`, the attribute name of their numpy view, and
    :attr:`_VIEWS`, the names of any further views (of the metadata mapping).
    """

    _VIEW = "_view"
    _VIEWS: tuple = ()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called in this process."""
        return self._VIEW not in self.__dict__

    def close(self) -> None:
        """Unmap the table in this process (idempotent); other processes keep theirs."""
        for name in (self._VIEW, *self._VIEWS):  # views must go before the mapping
            self.__dict__.pop(name, None)
        region = self.__dict__.pop("_region", None)
        if region is not None:
            region.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a view still exported, or interpreter exit
            pass
