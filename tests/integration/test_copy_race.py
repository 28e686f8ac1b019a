"""Issue 12, item 6: a COPY source rewritten while builds run never poisons the cache.

A writer thread keeps rewriting a 16 MiB file in place, alternating two versions of the
same size, while builds of ``COPY big.bin`` run in one store. A build may fail (the file
never holds still) but no layer may ever hold bytes its key does not describe: every image
built holds one whole version, and once the writer stops, a build of each version gives
that version, cached or not, as a --no-cache build in a fresh store does. Before the fix the
key was the digest of one read and the layer the bytes of another: a key for version A with
the bytes of version B (or a mix) was kept for good."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from test_build_support import BASE, build, flatten, fresh_store, needs_runtime, write_tree

from dockyard.errors import SourceChangedError
from dockyard.progress.events import VertexLog

pytestmark = needs_runtime

SIZE = 16 << 20
BUILDS = 10


def _version(tag: bytes) -> bytes:
    block = hashlib.sha256(tag).digest() * 32  # 1 KiB
    return block * (SIZE // len(block))


def test_a_file_rewritten_during_builds_never_poisons_the_cache(tmp_path: Path) -> None:
    versions = [_version(b"A"), _version(b"B")]
    names = {hashlib.sha256(v).hexdigest(): tag for v, tag in zip(versions, "AB", strict=True)}
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {BASE}\nCOPY big.bin /big.bin\n",
                                        "big.bin": versions[0]})
    build(ctx, root, tags=["warm"])  # the base snapshot exists: builds below are quick
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        i = 1
        while not stop.is_set():
            with open(ctx / "big.bin", "r+b") as f:
                f.write(versions[i % 2])
            i += 1
            writes += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    seen: dict[str, str] = {}  # step key -> the version its layer holds
    failures = retries = 0
    try:
        for n in range(BUILDS):
            try:
                done = build(ctx, root, tags=[f"race{n}"])
            except SourceChangedError as err:
                assert "changed while the step was copying it" in str(err)
                failures += 1
                continue
            retries += sum(1 for e in done.events if isinstance(e, VertexLog)
                           and b"keying the step again" in e.data)
            data = (flatten(root, f"race{n}", tmp_path / f"fs{n}") / "big.bin").read_bytes()
            content = names.get(hashlib.sha256(data).hexdigest(), "a mix of both")
            assert content in ("A", "B"), f"the layer of build {n} holds {content}"
            key = done.step(2).key
            assert key is not None
            assert seen.setdefault(key, content) == content, "one key, two contents"
    finally:
        stop.set()
        thread.join()
    assert writes > BUILDS  # the writer really ran during the builds
    assert failures + retries > 0, "no build ever saw the file change: the test did not race"
    time.sleep(0.05)  # past the racy window
    for i, version in enumerate(versions):
        (ctx / "big.bin").write_bytes(version)
        time.sleep(0.05)
        done = build(ctx, root, tags=[f"after{i}"])
        got = (flatten(root, f"after{i}", tmp_path / f"after{i}") / "big.bin").read_bytes()
        assert names.get(hashlib.sha256(got).hexdigest()) == "AB"[i], (
            f"version {'AB'[i]} built from the cache holds other bytes")
        fresh = build(ctx, fresh_store(tmp_path / f"fresh{i}"), no_cache=True)
        assert fresh.step(2).key == done.step(2).key
        if done.step(2).key in seen:
            assert seen[done.step(2).key] == "AB"[i]
