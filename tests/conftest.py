"""Test layout: tests/unit (pure, no root), tests/integration (root, runtime, servers),
tests/conformance (against BuildKit). Marks come from the directory, as pip does."""

from __future__ import annotations

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
