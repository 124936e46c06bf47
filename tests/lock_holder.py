"""Hold a lock in another thread while a test's body runs."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def held_by_another_thread(lock, timeout: float = 10.0) -> Iterator[None]:
    """Run the body while a helper thread holds ``lock`` (for at most ``timeout`` s);
    the helper lets go and is joined when the body ends, even if it raised."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(timeout)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(timeout)
    try:
        yield
    finally:
        release.set()
        thread.join()
