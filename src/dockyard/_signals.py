"""SIGTERM, SIGINT and SIGHUP during a build or a ``run``: stop the work, unwind as Ctrl-C.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread
is: possibly inside a ``with lock:`` block of the very object the handler wants to cancel.
A handler that takes that (non-reentrant) lock never returns: the process hangs with its
container still running. So the handler here does only two things that take no lock the
main thread can hold: it wakes a thread started beforehand, which calls ``cancel`` (kill the
containers), and it raises KeyboardInterrupt, so the main thread unwinds through its
``finally`` blocks (mounts undone, nothing partial stored) as for Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP: a closed terminal


class CancelOnSignal:
    """Within the block (main thread only; elsewhere it does nothing), the first of
    :data:`SIGNALS` calls ``cancel`` on a thread of its own and raises KeyboardInterrupt in
    the main thread. Leaving the block waits for a ``cancel`` that was started."""

    def __init__(self, cancel: Callable[[], object]) -> None:
        self._cancel = cancel
        self._wake = threading.Event()
        self._signalled = False
        self._thread: threading.Thread | None = None
        self._previous: dict[int, Any] = {}

    def _watch(self) -> None:
        self._wake.wait()
        if self._signalled:
            self._cancel()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if not self._signalled:
            self._signalled = True
            self._wake.set()  # the event's own lock: never held by the main thread
        raise KeyboardInterrupt(f"signal {signum}")

    def __enter__(self) -> CancelOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._thread = threading.Thread(target=self._watch, name="cancel-on-signal",
                                            daemon=True)
            self._thread.start()
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()
        if self._thread is not None:
            self._wake.set()  # ends the watcher at once when no signal came
            self._thread.join()
            self._thread = None
