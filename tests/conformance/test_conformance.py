"""One test per scenario directory: build with BuildKit and the candidate, compare."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

SCENARIOS = harness.discover_scenarios()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(
    scenario: harness.Scenario,
    conformance_env: harness.Environment,
    record_property: Callable[[str, object], None],
) -> None:
    record_property("scenario", scenario.name)
    result = harness.run_scenario(conformance_env, scenario)
    record_property(
        "summary",
        f"{result.summary} [buildkit {result.reference_seconds:.1f}s, "
        f"{conformance_env.candidate.name} {result.candidate_seconds:.1f}s]",
    )
    if not result.passed:
        known = scenario.path / "KNOWN_DIFFERENCE"
        if known.is_file():
            # an open, documented difference (see README.md): reported, not hidden
            pytest.xfail(f"{scenario.name}: {known.read_text().strip()} -- {result.summary}")
        pytest.fail(f"{scenario.name}: {result.summary}\n{result.details}", pytrace=False)
