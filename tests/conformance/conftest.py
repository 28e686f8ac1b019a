"""Conformance session: one private dockerd per (xdist) worker, and the summary lines."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

_RESULTS: dict[str, tuple[str, str]] = {}  # scenario -> (outcome, one-line summary)


@pytest.fixture(scope="session")
def conformance_env() -> Iterator[harness.Environment]:
    """Started dockerd + candidate builder with the busybox base loaded into both."""
    why = harness.have_reference()
    if why is not None:
        pytest.skip(f"conformance: reference builder unavailable: {why}")
    harness.WORK.mkdir(parents=True, exist_ok=True)
    env = harness.Environment()
    # SIGTERM (CI timeouts, `kill`) must still stop dockerd: turn it into an interrupt,
    # which pytest answers by running fixture teardown.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        env.start()
        yield env
    finally:
        env.stop()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    name = props.get("scenario")
    if not name:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "passed" if report.passed else ("skipped" if report.skipped else "failed")
        _RESULTS[str(name)] = (outcome, str(props.get("summary", report.longreprtext.splitlines()[-1:] or "")))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("conformance: BuildKit (dockerd 20.10) vs candidate")
    for name in sorted(_RESULTS):
        outcome, summary = _RESULTS[name]
        tr.write_line(f"{outcome.upper():7} {name:40} {summary}")
    passed = sum(1 for o, _ in _RESULTS.values() if o == "passed")
    failed = sum(1 for o, _ in _RESULTS.values() if o == "failed")
    skipped = len(_RESULTS) - passed - failed
    tr.write_line(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
