"""Coarse file-system timestamps (issue 12, item 9): a time that is a whole multiple of a
coarse tick is treated as coming from a file system that coarse, and an observation made
within that tick of it is racy, in the stat cache and in the up-to-date check alike.

The real file-system test (a loop-mounted ext4 with 128-byte inodes) is in
tests/integration/test_coarse_timestamps.py; these inject the times."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard import _timestamps, quick
from dockyard._timestamps import granularity_ns, settled_after
from dockyard.context import hashing
from dockyard.context.hashing import StatCache

S = 1_700_000_000 * 1_000_000_000  # an even second, in ns


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        (S, 2_000_000_000),  # FAT's mtime
        (S + 1_000_000_000, 1_000_000_000),  # ext4 with 128-byte inodes
        (S + 300_000_000, 100_000_000),
        (S + 10_000_000, 10_000_000),  # FAT's ctime, exFAT
        (S + 123_456_789, 0),
        (S + 1_000, 0),
    ],
)
def test_granularity_read_off_a_time(stamp: int, expected: int) -> None:
    assert granularity_ns(stamp) == expected


@given(st.integers(min_value=0, max_value=2**62), st.sampled_from([10**7, 10**8, 10**9, 2 * 10**9]))
def test_a_coarse_time_is_never_taken_for_a_finer_one(seconds: int, tick: int) -> None:
    stamp = seconds - seconds % tick  # what a file system with that tick stores
    assert granularity_ns(stamp) >= tick
    # every write within the tick gets the same stamp: until its end it proves nothing
    assert settled_after(stamp, 0) >= stamp + tick


def _stat_with(path: Path, ctime_ns: int) -> os.stat_result:
    real = os.lstat(path)
    fields = list(real)
    # the float fields of a stat_result come after the 10 integer ones; only *_ns are read
    values = (*fields[:10], real.st_atime, real.st_mtime, float(ctime_ns) / 1e9)
    result = os.stat_result(
        values, {"st_atime_ns": real.st_atime_ns, "st_mtime_ns": real.st_mtime_ns,
                 "st_ctime_ns": ctime_ns})
    assert result.st_ctime_ns == ctime_ns
    return result


@pytest.mark.parametrize(
    ("ctime_offset", "hashed_offset", "trusted"),
    [
        # an odd whole second (1-second file system), hashed within that second: racy
        (1_000_000_000, 1_500_000_000, False),
        (1_000_000_000, 2_100_000_000, True),  # the second is over: a change would show
        (0, 1_100_000_000, False),  # an even second may be FAT's 2-second tick
        (0, 2_100_000_000, True),
        (123_456_789, 500_000_000, True),  # a fine ctime: only the 20 ms window applies
        (123_456_789, 130_000_000, False),
    ],
)
def test_stat_cache_trusts_an_entry_only_after_its_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctime_offset: int, hashed_offset: int,
    trusted: bool,
) -> None:
    path = tmp_path / "f"
    path.write_text("same size\n")
    stat_result = _stat_with(path, S + ctime_offset)
    monkeypatch.setattr(hashing.time, "time_ns", lambda: S + hashed_offset)
    reads: list[Path] = []
    with StatCache(None, on_read=reads.append) as cache:
        first = cache.digests([(path, stat_result)])
        assert cache.digests([(path, stat_result)]) == first
    assert len(reads) == (1 if trusted else 2)


def test_up_to_date_check_records_nothing_within_a_coarse_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (ctx / "f").write_text("x\n")
    inv = quick.scan([str(ctx)], str(tmp_path / "store"))
    assert inv is not None
    real_lstat = os.lstat

    def coarse(stamp_ns: int):  # type: ignore[no-untyped-def]
        def lstat(name, *, dir_fd=None):  # type: ignore[no-untyped-def]
            st = real_lstat(name, dir_fd=dir_fd) if dir_fd is not None else real_lstat(name)
            fields = list(st)[:10] + [float(stamp_ns) / 1e9] * 3
            return os.stat_result(fields, {"st_atime_ns": stamp_ns, "st_mtime_ns": stamp_ns,
                                           "st_ctime_ns": stamp_ns})
        return lstat

    # a whole-second stamp: the file may change until the second is over
    monkeypatch.setattr(quick.os, "lstat", coarse(S))
    monkeypatch.setattr(quick.os, "stat", coarse(S))
    _, newest = quick.signature(inv)
    assert newest >= S + 1_000_000_000
    # a fine stamp counts as itself
    monkeypatch.setattr(quick.os, "lstat", coarse(S + 123_456_789))
    monkeypatch.setattr(quick.os, "stat", coarse(S + 123_456_789))
    _, newest = quick.signature(inv)
    assert newest < S + 200_000_000
    assert _timestamps.granularity_ns(S + 123_456_789) == 0
