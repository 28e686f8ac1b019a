"""CancelOnSignal: a signal that lands while the main thread holds the lock ``cancel`` takes
must not hang the process (the flaky SIGTERM test of ``dockyard run``)."""

from __future__ import annotations

import os
import signal
import threading

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
