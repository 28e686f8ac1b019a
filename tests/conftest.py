"""Test layout: tests/unit (pure, no root), tests/integration (root, runtime, servers),
tests/conformance (against BuildKit). Marks come from the directory, as pip does."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent

# One line per conformance scenario and a final "N passed, M failed" (also under xdist).
pytest_plugins = ["conformance.summary"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).relative_to(HERE)
        if rel.parts[0] == "integration":
            item.add_marker(pytest.mark.integration)
        elif rel.parts[0] == "conformance":
            item.add_marker(pytest.mark.conformance)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """Mounts the tests left below the base temp directory (a test that failed half-way, a
    killed run's) are unmounted, and named here: a full run leaves nothing mounted."""
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller looks below every worker's directory
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return
    base = str(factory.getbasetemp().resolve()).rstrip("/") + "/"
    left = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = line.split(" ")[4].replace("\\040", " ")
            if point.startswith(base):
                left.append(point)
    if not left:
        return
    terminalreporter.write_sep("=", f"{len(left)} mount(s) left by the tests, unmounted now")
    for point in sorted(left, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        terminalreporter.write_line(point)
