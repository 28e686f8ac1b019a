"""Cache exports to a registry, without builds: a large cache config, and exports to one
ref at once.

Exports to one registry ref at the same time lose nothing (issue 15, "builds of
different branches on all three at once, with cache exports to the same ref"), with the races
forced rather than hoped for: against Debian's ``docker-registry``, every export reads the
ref before any of them writes; and an export that is slow between its read and its write
(a large config to upload) writes after a faster one has already checked its own write.

A registry has no compare-and-swap; ``export_cache`` merges optimistically (docs/cache.md,
"Exporting to one ref at once"), and these are the interleavings that merge must survive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_registry_support import Registry, needs_registry, registry

from dockyard.registry import buildcache
from dockyard.registry.buildcache import CacheSpec, export_cache, load_cache
from dockyard.store.db import CacheRecord, Store

__all__ = ["registry"]  # fixture

pytestmark = needs_registry


def records(branch: int, count: int = 3) -> list[CacheRecord]:
    """Records of one branch's build (no layers: the merge is what is tested)."""
    return [CacheRecord(key="sha256:" + f"{branch:032x}{n:032x}", diff_id=None, chain_id=None,
                        result={"instruction": "RUN", "branch": branch},
                        description=f"branch {branch} step {n}", created=1.0)
            for n in range(count)]


def run_exports(tmp: Path, ref: str, branches: list[int],
                name: Callable[[int], str] = lambda b: f"export-{b}",
                start: Callable[[int], None] = lambda b: None) -> dict[int, list[str]]:
    """Export each branch's records to ``ref`` from a thread (and store) of its own."""
    said: dict[int, list[str]] = {b: [] for b in branches}
    errors: list[BaseException] = []

    def one(branch: int) -> None:
        try:
            start(branch)
            store = Store.open(tmp / f"store-{branch}")
            try:
                export_cache(store, CacheSpec(type="registry", ref=ref), records(branch),
                             progress=said[branch].append)
            finally:
                store.close()
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=one, args=(b,), name=name(b)) for b in branches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return said


def held(tmp: Path, ref: str) -> set[str]:
    store = Store.open(tmp / "reader")
    try:
        return set(load_cache(store, CacheSpec(type="registry", ref=ref),
                              platform="linux/amd64").records)
    finally:
        store.close()


def test_every_export_reads_before_any_writes(tmp_path: Path, registry: Registry,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ref = f"{registry.host}/race/all-at-once:cache"
    branches = [1, 2, 3, 4, 5]
    barrier = threading.Barrier(len(branches), timeout=60)
    first_read = threading.local()
    real = buildcache._current_registry

    def read_then_wait(*args: Any) -> Any:
        got = real(*args)
        if not getattr(first_read, "done", False):
            first_read.done = True
            barrier.wait()  # every export has read the (empty) ref: now they all write
        return got

    monkeypatch.setattr(buildcache, "_current_registry", read_then_wait)
    said = run_exports(tmp_path, ref, branches)
    want = {r.key for b in branches for r in records(b)}
    assert held(tmp_path, ref) == want
    remerged = sum("merging again" in line for lines in said.values() for line in lines)
    assert remerged >= len(branches) - 1, said  # all but the last writer had to merge


def test_a_slow_export_does_not_overwrite_a_fast_one(tmp_path: Path, registry: Registry,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The slow export reads the ref, then takes 3 s (its config upload) before it writes; the
    fast one reads after it, writes, waits, reads its write back and is done well before.
    Without the check before the write, the slow export wrote what it had read, and the fast
    export's records were gone."""
    ref = f"{registry.host}/race/slow-fast:cache"
    run_exports(tmp_path / "seed", ref, [9])  # the ref already holds a record
    slow_read = threading.Event()
    real = buildcache._current_registry
    calls = {"slow": 0}

    def slow_reader(*args: Any) -> Any:
        got = real(*args)
        if threading.current_thread().name == "slow":
            calls["slow"] += 1
            if calls["slow"] == 1:
                slow_read.set()
                time.sleep(3.0)
        return got

    monkeypatch.setattr(buildcache, "_current_registry", slow_reader)

    def start(branch: int) -> None:
        if branch == 2:
            assert slow_read.wait(30)  # the fast export reads after the slow one

    said = run_exports(tmp_path, ref, [1, 2], name=lambda b: "slow" if b == 1 else "fast",
                       start=start)
    assert held(tmp_path, ref) == {r.key for b in (1, 2, 9) for r in records(b)}
    assert any("changed while merging" in line for line in said[1]), said
    assert not any("merging again" in line for line in said[2]), said


def test_a_cache_config_larger_than_an_image_config(tmp_path: Path, registry: Registry) -> None:
    """Image configs are refused over 8 MiB; a cache config (COPY --from selections with
    many files) may hold up to the export's budget and is read back whole."""
    ref = f"{registry.host}/big/config:cache"
    big = CacheRecord(key="sha256:" + "ab" * 32, diff_id=None, chain_id=None,
                      result={"instruction": "selection", "selection": "sha256:" + "cd" * 32,
                              "files": "f" * (9 << 20)},
                      description="files of /src in a stage or image", created=1.0)
    store = Store.open(tmp_path / "a")
    try:
        export_cache(store, CacheSpec(type="registry", ref=ref), [big])
        export_cache(store, CacheSpec(type="registry", ref=ref), records(1))  # read, merge
    finally:
        store.close()
    store = Store.open(tmp_path / "b")
    try:
        got = load_cache(store, CacheSpec(type="registry", ref=ref), platform="linux/amd64")
    finally:
        store.close()
    assert got.records[big.key].result == big.result
    assert {r.key for r in records(1)} <= set(got.records)
