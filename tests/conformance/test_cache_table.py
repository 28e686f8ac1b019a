"""The cache hit/miss table against BuildKit (issue 12): one test per kind of change.

Each change is built with dockerd's BuildKit and with dockyard (cache_table.py); the test
fails when dockyard is stale, misses where BuildKit hits with the same output, or hits where
BuildKit went stale. ``TABLE_KNOWN`` holds the rows that break a rule because of a known bug
being fixed: strict expected failures (a row that passes fails until its mark is removed).
The rows are written to ``$CONFORMANCE_WORK/run-*/cache-table/`` and printed in the summary.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cache_table
import harness

TABLE_KNOWN: dict[str, str] = {}

_runners: dict[int, cache_table.Runner] = {}


@pytest.mark.parametrize("change", cache_table.CHANGES, ids=[c.name for c in cache_table.CHANGES])
def test_cache_row(
    change: cache_table.Change,
    conformance_env: harness.Environment,
    record_property: Callable[[str, object], None],
) -> None:
    runner = _runners.get(id(conformance_env))
    if runner is None:
        runner = _runners[id(conformance_env)] = cache_table.Runner(conformance_env)
    row = runner.run(change)
    record_property("scenario", f"cache-table/{change.name}")
    record_property("summary", row.line())
    mark = TABLE_KNOWN.get(change.name)
    if mark is not None:
        if row.problems:
            pytest.xfail(f"KNOWN: {mark} -- {'; '.join(row.problems)}")
        pytest.fail(f"cache-table/{change.name} follows the rules now: remove its "
                    f"TABLE_KNOWN mark ({mark})\n{row.line()}", pytrace=False)
    assert not row.problems, row.line()
