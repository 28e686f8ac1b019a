"""A snapshot's files are on disk before its commit is: ``MetaTable.commit`` syncs the
snapshots' file system first, and a write-back error keeps the snapshot uncommitted (a
power cut must never leave a committed snapshot with empty files; containerd#8895)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from dockyard import _fs
from dockyard.errors import NoSpaceError, StoreError
from dockyard.snapshot import _meta
from dockyard.snapshot._meta import MetaTable
from dockyard.snapshot.native import NativeSnapshotter


def test_sync_filesystem_syncs_and_reports_a_missing_path(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 4096)
    _fs.sync_filesystem(tmp_path)
    with pytest.raises(FileNotFoundError):
        _fs.sync_filesystem(tmp_path / "missing")


def test_the_sync_comes_before_the_commit_row(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    snap = NativeSnapshotter(tmp_path)
    snap.prepare("step", None)
    (snap.fs_dir("step") / "payload").write_bytes(b"data")
    seen: list[tuple[Path, str]] = []

    def record(path: Path) -> None:
        # what the table says while the sync runs: the snapshot is still active
        seen.append((Path(path), snap._meta.get("step").kind))

    monkeypatch.setattr(_meta, "sync_filesystem", record)
    snap.commit("done", "step")
    assert seen == [(tmp_path / "snapshots", "active")]
    assert snap.is_committed("done")


@pytest.mark.parametrize(("code", "error"), [(errno.EIO, StoreError),
                                             (errno.ENOSPC, NoSpaceError)])
def test_a_write_back_error_leaves_the_snapshot_uncommitted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int,
        error: type[Exception]) -> None:
    table = MetaTable(tmp_path, "overlay")
    table.create("step", "active", None)

    def fail(path: Path) -> None:
        raise OSError(code, "injected", str(path))

    monkeypatch.setattr(_meta, "sync_filesystem", fail)
    with pytest.raises(error) as info:
        table.commit("done", "step")
    if error is StoreError:
        assert "cannot commit snapshot done" in str(info.value)
    assert table.get("step").kind == "active"
    assert table.find("done") is None
