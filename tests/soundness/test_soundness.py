"""The soundness test of issue 12 (root, an OCI runtime): random mutation sequences over the
corpus with fixed seeds, each build compared with a fresh ``--no-cache`` build of the same
inputs; and one probe per mutation kind, strict expected failures for the known bugs.

CI runs ``CHUNKS`` sequences of ``STEPS`` steps (seeds ``SEED + chunk``), each in its own
store, so pytest-xdist can spread them. ``bench/soundness.sh`` runs longer ones with a random
seed and replays a seed (tests/soundness/run.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bases import need_runtime

from . import engine, known, probes

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(need_runtime() is not None, reason=need_runtime() or ""),
]

SEED = 12
# CI: 4 chunks of 80 steps, 320 mutation steps in all (fewer for a quick local look:
# SOUNDNESS_CHUNKS=1 SOUNDNESS_STEPS=20)
CHUNKS = int(os.environ.get("SOUNDNESS_CHUNKS", "4"))
STEPS = int(os.environ.get("SOUNDNESS_STEPS", "80"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("soundness")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _report(runner: engine.Runner) -> str:
    return "\n".join(f.render() for f in runner.failures)


@pytest.mark.parametrize("name", list(probes.PROBES))
def test_probe(name: str, work: Path) -> None:
    """The probe of one kind passes; for a KNOWN bug it must fail (strict)."""
    if name == "coarse-timestamps" and shutil.which("mkfs.ext4") is None:
        pytest.skip("no mkfs.ext4 (apt-get install e2fsprogs)")
    runner = engine.Runner(work / f"probe-{name}", {})
    try:
        probes.run_probe(runner, name)
    finally:
        runner.close()
    mark = known.KNOWN.get(name)
    if mark is not None:
        if runner.failures:
            pytest.xfail(f"KNOWN: {mark}")
        pytest.fail(f"the probe of {name!r} no longer fails: remove KNOWN[{name!r}] from "
                    f"tests/soundness/known.py ({mark})", pytrace=False)
    assert not runner.failures, _report(runner)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_sequence(chunk: int, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """STEPS random mutation steps from seed SEED + chunk, in one store: zero differences."""
    runner = engine.Runner(work / f"random-{chunk}", known.KNOWN)
    try:
        engine.random_run(runner, SEED + chunk, STEPS)
    finally:
        runner.close()
    with capsys.disabled():
        print(f"\nsoundness seed {SEED + chunk}: {runner.stats.line()}")
    assert not runner.failures, (
        f"{len(runner.failures)} failure(s); replay: bench/soundness.sh --seed {SEED + chunk} "
        f"--steps {STEPS}\n" + _report(runner))
