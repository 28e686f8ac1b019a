"""The crash suite: SIGKILL at random points of COPY, RUN, the commit of a step, an export,
a push and a prune. After each kill, ``store check`` may find leftovers; ``store check
--repair`` must leave a store that ``store check`` calls clean, and the next build (with
SOURCE_DATE_EPOCH) must give the image an uninterrupted build gives; an export or a push
done again must give the same bytes or digest.

Kill points are drawn uniformly within each phase, as measured on an uninterrupted run
(a phase starts and ends at lines of the build's plain progress output). The random seed is
printed, so a failure can be replayed with ``CRASH_SEED``.
"""

from __future__ import annotations

import hashlib
import os
import queue
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_build_support import dockyard_cli, fresh_store, template_store, write_tree
from test_registry_support import REGISTRY_BIN, Registry, start_registry

from bases import need_runtime

SDE = "1700000000"
TAG = "crash:1"
DOCKERFILE = """\
FROM busybox:latest
COPY files/ /data/
RUN echo run-started && mkdir /out && i=0 && while [ $i -lt 120 ]; do \
dd if=/dev/zero of=/out/f$i bs=64k count=4 2>/dev/null; i=$((i+1)); done && echo run-finished
RUN cat /data/f0001 > /x
"""
# phase -> (line that starts it, line that ends it)
PHASES = {
    "copy": ("COPY files/ /data/", "#2 DONE"),
    "run": ("run-started", "run-finished"),
    "commit": ("run-finished", "#3 DONE"),
}
KILLS_PER_BUILD_PHASE = 3
KILLS_PER_OPERATION = 4
# 3 phases x 3 + 3 operations x 4 = 21 kills in all (docs/reliability.md)
SEED = int(os.environ.get("CRASH_SEED", str(int(time.time()))))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = need_runtime()
    if reason:
        pytest.skip(reason)
    template_store()
    root = tmp_path_factory.mktemp("crash-ctx")
    files = {f"files/f{i:04d}": (f"{i}" * 4096)[:4096] for i in range(1200)}
    return write_tree(root, {"Dockerfile": DOCKERFILE, **files})


def _env() -> dict[str, str]:
    return {**os.environ, "SOURCE_DATE_EPOCH": SDE}


def _cli(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*dockyard_cli(), "--root", str(root), *args], capture_output=True,
                          text=True, env=_env(), timeout=600, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


class _Lines:
    """A child's merged output, line by line, each with the time it arrived."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.queue: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self.seen: list[tuple[float, str]] = []
        assert proc.stdout is not None
        out = proc.stdout

        def pump() -> None:
            for raw in out:
                self.queue.put((time.monotonic(), raw.decode("utf-8", "replace")))
            self.queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, text: str, deadline: float) -> float | None:
        """When a line holding ``text`` arrived (None if the output ended first)."""
        for when, line in self.seen:
            if text in line:
                return when
        while time.monotonic() < deadline:
            try:
                item = self.queue.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                return None
            if item is None:
                return None
            self.seen.append(item)
            if text in item[1]:
                return item[0]
        return None


def _spawn(root: Path, *args: str) -> tuple[subprocess.Popen[bytes], _Lines]:
    proc = subprocess.Popen([*dockyard_cli(), "--root", str(root), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(),
                            start_new_session=True)
    return proc, _Lines(proc)


def _kill(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the whole session (dockyard, the runtime, helpers); False if it had ended."""
    if proc.poll() is not None:
        return False
    with _suppress_lookup():
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return proc.returncode == -signal.SIGKILL


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, *rest: object) -> bool:
        return kind is ProcessLookupError


def _recover(root: Path, what: str) -> None:
    """After a kill: check (anything may be found), repair (must succeed), check (clean)."""
    first = _cli(root, "store", "check", check=False)
    assert first.returncode in (0, 1), first.stderr
    repaired = _cli(root, "store", "check", "--repair", check=False)
    assert repaired.returncode == 0, (what, repaired.stdout, repaired.stderr)
    clean = _cli(root, "store", "check", check=False)
    assert clean.returncode == 0, (what, clean.stdout)
    assert "wrong:" not in clean.stdout, (what, clean.stdout)


def _image_id(root: Path, ctx: Path) -> str:
    proc = _cli(root, "build", "-q", "-t", TAG, str(ctx))
    return proc.stdout.strip().splitlines()[-1]


@dataclass
class Reference:
    image_id: str
    phases: dict[str, float]  # phase -> seconds
    built: Path  # a store holding the uninterrupted build


@pytest.fixture(scope="module")
def reference(ctx: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    print(f"crash suite seed: {SEED} (CRASH_SEED={SEED} replays it)")
    root = fresh_store(tmp_path_factory.mktemp("crash-ref") / "store")
    proc, lines = _spawn(root, "build", "--progress", "plain", "-t", TAG, str(ctx))
    deadline = time.monotonic() + 600
    phases: dict[str, float] = {}
    for name, (start, end) in PHASES.items():
        began = lines.wait_for(start, deadline)
        ended = lines.wait_for(end, deadline)
        assert began is not None and ended is not None, lines.seen
        phases[name] = max(ended - began, 0.05)
    lines.wait_for("\x00never", time.monotonic() + 600)  # drain to the end
    assert proc.wait() == 0, lines.seen
    text = "".join(line for _, line in lines.seen)
    image_id = text.rsplit("writing image ", 1)[1].split()[0]
    return Reference(image_id, phases, root)


def _rng(label: str) -> random.Random:
    return random.Random(f"{SEED}-{label}")


@pytest.mark.parametrize("phase", list(PHASES))
def test_kill_a_build(phase: str, ctx: Path, reference: Reference, tmp_path: Path) -> None:
    rng = _rng(phase)
    start, _ = PHASES[phase]
    landed = 0
    for attempt in range(KILLS_PER_BUILD_PHASE * 3):
        if landed == KILLS_PER_BUILD_PHASE:
            break
        root = fresh_store(tmp_path / f"store{attempt}")
        proc, lines = _spawn(root, "build", "--progress", "plain", "-t", TAG, str(ctx))
        began = lines.wait_for(start, time.monotonic() + 600)
        assert began is not None, lines.seen
        delay = rng.uniform(0, reference.phases[phase])
        time.sleep(max(0.0, began + delay - time.monotonic()))
        if not _kill(proc):
            proc.wait()
            continue
        landed += 1
        _recover(root, f"{phase} kill at +{delay:.2f}s (seed {SEED})")
        assert _image_id(root, ctx) == reference.image_id, f"seed {SEED}, +{delay:.2f}s"
        _cli(root, "store", "check")
        shutil.rmtree(root, ignore_errors=True)
    assert landed == KILLS_PER_BUILD_PHASE, f"only {landed} kills landed in {phase}"


def _copy_store(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def _timed(root: Path, *args: str) -> float:
    t0 = time.monotonic()
    _cli(root, *args)
    return time.monotonic() - t0


class _Window:
    """The span a kill's delay is drawn from: the calibration run's duration, narrowed after
    each kill that came too late (the operation had ended; on a loaded machine the
    calibration run can take much longer than the runs after it), so the kills keep
    landing inside the operation."""

    def __init__(self, duration: float) -> None:
        self.duration = duration


def _kill_at_random(root: Path, rng: random.Random, window: _Window,
                    *args: str) -> float | None:
    proc, _ = _spawn(root, *args)
    delay = rng.uniform(0, window.duration)
    time.sleep(delay)
    if _kill(proc):
        return delay
    window.duration = min(window.duration, delay) * 0.7
    return None


def test_kill_an_export(reference: Reference, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    expected_file = out / "expected.tar"
    # a fresh copy each time, so the layer's tar is written again from its snapshot too
    duration = _timed(_copy_store(reference.built, tmp_path / "calibrate"),
                      "save", "-o", str(expected_file), TAG)
    expected = hashlib.sha256(expected_file.read_bytes()).hexdigest()
    expected_file.unlink()
    rng = _rng("export")
    window = _Window(duration)
    landed = 0
    for attempt in range(KILLS_PER_OPERATION * 3):
        if landed == KILLS_PER_OPERATION:
            break
        root = _copy_store(reference.built, tmp_path / f"store{attempt}")
        target = out / "image.tar"
        delay = _kill_at_random(root, rng, window, "save", "-o", str(target), TAG)
        if delay is None:
            target.unlink(missing_ok=True)
            continue
        landed += 1
        _recover(root, f"export kill at +{delay:.2f}s (seed {SEED})")
        # no temp file; the archive is there only if the kill came after its rename
        left = sorted(p.name for p in out.iterdir())
        assert left in ([], ["image.tar"]), left
        if left:
            assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
        _cli(root, "save", "-o", str(target), TAG)
        assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
        target.unlink()
    assert landed == KILLS_PER_OPERATION


@pytest.fixture(scope="module")
def crash_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry is not installed")
    reg = start_registry(tmp_path_factory.mktemp("crash-registry"))
    yield reg
    reg.stop()


def test_kill_a_push(reference: Reference, crash_registry: Registry, tmp_path: Path) -> None:
    root = _copy_store(reference.built, tmp_path / "store")
    t0 = time.monotonic()
    first = _cli(root, "push", "-q", TAG, f"{crash_registry.host}/crash/ref:1")
    duration = time.monotonic() - t0
    expected = first.stdout.strip().splitlines()[-1]
    rng = _rng("push")
    window = _Window(duration)
    landed = 0
    for attempt in range(KILLS_PER_OPERATION * 3):
        if landed == KILLS_PER_OPERATION:
            break
        # a fresh copy each time, so the compressed layers are made (and killed) again
        root = _copy_store(reference.built, tmp_path / f"store{attempt}")
        dest = f"{crash_registry.host}/crash/try{attempt}:1"
        delay = _kill_at_random(root, rng, window, "push", "-q", TAG, dest)
        if delay is None:
            continue
        landed += 1
        _recover(root, f"push kill at +{delay:.2f}s (seed {SEED})")
        again = _cli(root, "push", "-q", TAG, dest)
        assert again.stdout.strip().splitlines()[-1] == expected
    assert landed == KILLS_PER_OPERATION


def test_kill_a_pull_and_its_first_unpack(reference: Reference, crash_registry: Registry,
                                          tmp_path: Path) -> None:
    """A pull keeps compressed blobs only and checks each diff id when a layer is first
    unpacked (docs/store.md, "Pulled layers"): killed in either, the store recovers and the
    next try gives the same image and the same files."""
    src = f"{crash_registry.host}/crash/pull:1"
    _cli(_copy_store(reference.built, tmp_path / "src"), "push", "-q", TAG, src)
    t0 = time.monotonic()
    _cli(tmp_path / "whole", "pull", "-q", src)
    pull_time = time.monotonic() - t0
    run_time = _timed(tmp_path / "whole", "run", "--rm", src, "cat", "/x")
    expected = _cli(tmp_path / "whole", "run", "--rm", src, "cat", "/x").stdout
    rng = _rng("pull")
    for what, duration, args in (("pull", pull_time, ("pull", "-q", src)),
                                 ("unpack", run_time, ("run", "--rm", src, "cat", "/x"))):
        landed = 0
        window = _Window(duration)
        for attempt in range(KILLS_PER_OPERATION * 3):
            if landed == KILLS_PER_OPERATION:
                break
            root = tmp_path / f"{what}{attempt}"
            if what == "unpack":
                _cli(root, "pull", "-q", src)
            delay = _kill_at_random(root, rng, window, *args)
            if delay is None:
                continue
            landed += 1
            _recover(root, f"{what} kill at +{delay:.2f}s (seed {SEED})")
            _cli(root, "pull", "-q", src)
            assert _cli(root, "inspect", "-f", "{{.Id}}", src).stdout.strip() == \
                reference.image_id
            assert _cli(root, "run", "--rm", src, "cat", "/x").stdout == expected
        assert landed == KILLS_PER_OPERATION, f"only {landed} kills landed in {what}"


def _with_garbage(reference: Reference, tmp_path: Path, name: str) -> Path:
    """A copy of the built store plus garbage to collect: another image of the same steps,
    untagged, with its cache records."""
    root = _copy_store(reference.built, tmp_path / name)
    other = write_tree(tmp_path / f"{name}-ctx", {
        "Dockerfile": DOCKERFILE.replace("count=4", "count=3"),
        **{f"files/f{i:04d}": f"other {i}" for i in range(300)}})
    _cli(root, "build", "-q", "-t", "garbage:1", str(other))
    _cli(root, "rmi", "garbage:1")
    return root


def test_kill_a_prune(reference: Reference, ctx: Path, tmp_path: Path) -> None:
    duration = _timed(_with_garbage(reference, tmp_path, "calibrate"), "prune", "--all")
    rng = _rng("prune")
    window = _Window(duration)
    landed = 0
    for attempt in range(KILLS_PER_OPERATION * 3):
        if landed == KILLS_PER_OPERATION:
            break
        root = _with_garbage(reference, tmp_path, f"store{attempt}")
        delay = _kill_at_random(root, rng, window, "prune", "--all")
        if delay is None:
            continue
        landed += 1
        _recover(root, f"prune kill at +{delay:.2f}s (seed {SEED})")
        assert _image_id(root, ctx) == reference.image_id
        _cli(root, "store", "check")
    assert landed == KILLS_PER_OPERATION
