"""SIGTERM, SIGINT and SIGHUP during a build or a ``run``: stop the work, unwind as Ctrl-C.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread
is: possibly inside a ``with lock:`` block of the very object the handler wants to cancel.
A handler that takes that (non-reentrant) lock never returns: the process hangs with its
container still running. And the kernel may deliver a process-directed signal to any thread:
when it lands on another one (a stage thread, a copy worker) while the main thread sleeps in
a lock wait (the scheduler's queue), nothing wakes the main thread, and the Python handler
runs only when that wait ends on its own: after the container has run to its end.

So ``cancel`` does not wait for the Python handler. The C-level handler, on whatever thread
the signal landed, writes the signal's number to a wakeup pipe (:func:`signal.set_wakeup_fd`);
a thread started beforehand reads it and calls ``cancel`` (kill the containers), taking no
lock the main thread can hold. The Python handler only raises KeyboardInterrupt, so the main
thread unwinds through its ``finally`` blocks (mounts undone, nothing partial stored) as for
Ctrl-C, once the cancelled work lets it run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP: a closed terminal
_NUMBERS = frozenset(int(s) for s in SIGNALS)
_STOP = b"\0"  # written by __exit__: no signal has the number 0


class CancelOnSignal:
    """Within the block (main thread only; elsewhere it does nothing), the first of
    :data:`SIGNALS` calls ``cancel`` on a thread of its own, whichever thread the signal
    landed on, and raises KeyboardInterrupt in the main thread. Leaving the block waits for
    a ``cancel`` that was started.

    While the block runs, the process's wakeup fd (:func:`signal.set_wakeup_fd`) is this
    object's pipe; the previous one is restored on leaving."""

    def __init__(self, cancel: Callable[[], object]) -> None:
        self._cancel = cancel
        self._thread: threading.Thread | None = None
        self._pipe: tuple[int, int] | None = None
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1

    def _watch(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 64)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            if any(b in _NUMBERS for b in data):
                self._cancel()
                return
            if not data or _STOP in data:
                return

    @staticmethod
    def _handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def __enter__(self) -> CancelOnSignal:
        if threading.current_thread() is threading.main_thread():
            r, w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(w, False)  # the C handler must never block on a full pipe
            self._pipe = (r, w)
            self._thread = threading.Thread(target=self._watch, args=(r,),
                                            name="cancel-on-signal", daemon=True)
            self._thread.start()
            self._previous_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()
        if self._pipe is None:
            return
        signal.set_wakeup_fd(self._previous_wakeup)  # before the pipe is closed
        r, w = self._pipe
        self._pipe = None
        # ends the watcher at once when no signal came (a pipe full of signal numbers: it
        # has read one already)
        with contextlib.suppress(BlockingIOError):
            os.write(w, _STOP)
        assert self._thread is not None
        self._thread.join()
        self._thread = None
        os.close(r)
        os.close(w)
