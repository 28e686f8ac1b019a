"""Conformance session: one private dockerd per (xdist) worker, and the summary lines."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness

SUMMARY_PLUGIN = "conformance.summary"


def pytest_configure(config: pytest.Config) -> None:
    """Register the summary plugin unless tests/conftest.py already did (by that name)."""
    if not config.pluginmanager.has_plugin(SUMMARY_PLUGIN):
        import importlib

        config.pluginmanager.register(importlib.import_module(SUMMARY_PLUGIN), SUMMARY_PLUGIN)


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
