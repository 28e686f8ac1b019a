"""The file-tree comparison for ownership cases, with dockyard rootless (docs/rootless.md).

The scenarios where ids, modes and overlay markers matter are built again by dockyard as an
ordinary user (in its user namespace, subordinate ids mapped, overlayfs with user xattrs)
and compared with the same BuildKit reference: files must carry the ids the Dockerfile asked
for, never the host's mapped ones, and whiteouts and opaque directories must come out as
BuildKit's.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness

from rootless_support import ordinary_user, readable_venv, rootless_skip_reason

OWNERSHIP_SCENARIOS = (
    "add-chown-files", "copy-chown", "copy-from-stage-owners", "copy-modes-from-context",
    "mount-cache", "run-opaque-dir", "run-ownership", "run-special-modes", "run-whiteouts",
    "user-name", "user-uid-gid", "workdir-create",
)
SCENARIOS = [s for s in harness.discover_scenarios() if s.name in OWNERSHIP_SCENARIOS]


@pytest.fixture(scope="session")
def rootless_env(conformance_env: harness.Environment) -> Iterator[harness.Environment]:
    """The session's reference daemon with a rootless dockyard as the candidate."""
    why = rootless_skip_reason()
    if why is not None:
        pytest.skip(f"rootless: {why}")
    if conformance_env.candidate_name != "dockyard":
        pytest.skip("the rootless comparison is for the dockyard candidate")
    user = ordinary_user("dyconf")
    try:
        env = copy.copy(conformance_env)
        env.candidate = harness.RootlessDockyardBuilder(user, readable_venv())
        env._loaded = set()
        env.session_dir = conformance_env.session_dir / "rootless"
        env.session_dir.mkdir(exist_ok=True)
        env.ensure_base(harness.BUSYBOX_REF)
        yield env
    finally:
        user.remove()


def test_scenarios_are_there() -> None:
    assert sorted(s.name for s in SCENARIOS) == sorted(OWNERSHIP_SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"rootless-{s.name}" for s in SCENARIOS])
def test_rootless_scenario(
    scenario: harness.Scenario,
    rootless_env: harness.Environment,
    record_property: Callable[[str, object], None],
) -> None:
    record_property("scenario", f"rootless-{scenario.name}")
    result = harness.run_scenario(rootless_env, scenario)
    record_property("summary", f"{result.summary} [buildkit {result.reference_seconds:.1f}s, "
                               f"rootless {result.candidate_seconds:.1f}s]")
    if not result.passed:
        pytest.fail(f"rootless {scenario.name}: {result.summary}\n{result.details}",
                    pytrace=False)
