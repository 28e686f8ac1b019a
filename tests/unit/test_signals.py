"""CancelOnSignal: a signal that lands while the main thread holds the lock ``cancel`` takes
must not hang the process (the flaky SIGTERM test of ``dockyard run``)."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time

import pytest

from dockyard._signals import SIGNALS, CancelOnSignal


class _Work:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = 0

    def cancel(self) -> None:
        with self.lock:  # as Executor.cancel and Solver.cancel do
            self.cancelled += 1


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_inside_the_cancel_lock_unwinds_and_cancels(sig: int) -> None:
    work = _Work()
    before = {s: signal.getsignal(s) for s in SIGNALS}
    with pytest.raises(KeyboardInterrupt), CancelOnSignal(work.cancel), work.lock:
        os.kill(os.getpid(), sig)  # the handler runs here, with work.lock held
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
        pytest.fail("the signal did not interrupt the main thread")
    assert work.cancelled == 1  # leaving the block waited for the cancel
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


def test_two_signals_cancel_once() -> None:
    work = _Work()
    with pytest.raises(KeyboardInterrupt), CancelOnSignal(work.cancel):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        finally:
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(1000):
                pass
    assert work.cancelled == 1


def test_no_signal_no_cancel_and_no_thread_left() -> None:
    work = _Work()
    with CancelOnSignal(work.cancel):
        pass
    assert work.cancelled == 0
    assert not [t for t in threading.enumerate() if t.name == "cancel-on-signal"]


def test_outside_the_main_thread_it_does_nothing() -> None:
    work = _Work()
    seen: list[object] = []

    def body() -> None:
        with CancelOnSignal(work.cancel):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [before]


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_landing_on_another_thread_cancels_at_once(sig: int) -> None:
    # The kernel may deliver a signal to any thread. When it lands on a worker while the
    # main thread waits on a lock (the scheduler's queue), the Python handler cannot run
    # until that wait ends: the cancel must not depend on it (the flaky SIGTERM test of a
    # RUN step that had just started: the container ran to its end).
    done: queue.SimpleQueue[str] = queue.SimpleQueue()
    cancelled: list[float] = []

    def cancel() -> None:
        cancelled.append(time.monotonic())
        done.put("cancelled")

    ready = threading.Event()
    stop = threading.Event()

    def worker() -> None:
        ready.set()
        stop.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    ready.wait()
    try:
        with pytest.raises(KeyboardInterrupt), CancelOnSignal(cancel):
            t0 = time.monotonic()
            signal.pthread_kill(t.ident or 0, sig)  # the C handler runs on the worker
            got = done.get(timeout=5)  # the main thread sleeps in a lock wait
            waited = time.monotonic() - t0
            for _ in range(1000):  # the Python handler runs now, in the main thread
                pass
            pytest.fail(f"no KeyboardInterrupt ({got}, {waited:.2f} s)")
    finally:
        stop.set()
        t.join()
    assert len(cancelled) == 1
    assert cancelled[0] - t0 < 2  # not after the 5 s wait timed out


def test_the_wakeup_fd_is_restored() -> None:
    r, w = os.pipe2(os.O_NONBLOCK)
    old = signal.set_wakeup_fd(w)
    try:
        with CancelOnSignal(lambda: None):
            ours = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(ours)
            assert ours not in (w, -1)
        assert signal.set_wakeup_fd(w) == w
    finally:
        signal.set_wakeup_fd(old)
        os.close(r)
        os.close(w)
