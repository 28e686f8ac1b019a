"""The store lock: many builds at once (shared), or one prune alone (exclusive).

``<root>/lock`` is an ``flock(2)`` lock file. Every process that writes blobs or snapshots
holds the shared lock from its first write until the database rows that reference what it
wrote are committed (``with store.build_lock(): ...``); ``prune`` takes the exclusive lock,
so it never sees a blob that is written but not yet referenced. Locks belong to an open file
description, so each ``with`` opens the file anew and threads of one process can hold shared
locks side by side; the kernel drops them when a process dies, so a crashed build never
leaves the store locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from dockyard.errors import StoreError

__all__ = ["StoreLockTimeout", "hold_lock"]

_POLL = 0.05


class StoreLockTimeout(StoreError):
    """The store lock could not be taken within the timeout."""


@contextlib.contextmanager
def hold_lock(
    path: Path, *, exclusive: bool, timeout: float | None = None, purpose: str = ""
) -> Iterator[None]:
    """Hold ``path``'s flock, shared or exclusive, for the ``with`` block.

    ``timeout=None`` waits as long as it takes; otherwise StoreLockTimeout after ``timeout``
    seconds (0: fail at once if the lock is taken).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        if timeout is None:
            fcntl.flock(fd, mode)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        what = f" for {purpose}" if purpose else ""
                        other = "a build is using" if exclusive else "a prune is running on"
                        raise StoreLockTimeout(
                            f"could not lock the store at {path.parent}{what} within "
                            f"{timeout:g}s: {other} it; try again when it has finished"
                        ) from None
                    time.sleep(_POLL)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
