"""Pure parts of the snapshot room: the stat-tree differ, redundant copied-up directories,
overlay option compaction, and the snapshot table."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dockyard.errors import NotFoundError, StoreError
from dockyard.snapshot._meta import MetaTable
from dockyard.snapshot.base import MOUNT_OPTIONS_LIMIT, Mount, _compact_overlay
from dockyard.snapshot.native import Change, compute_changes, stat_tree
from dockyard.snapshot.overlay import redundant_dirs


def _tree(root: Path) -> None:
    for d in ("a/b", "keep", "gone/deep", "swap"):
        (root / d).mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("one")
    (root / "a" / "x").write_text("x")
    (root / "keep" / "k").write_text("k")
    (root / "gone" / "deep" / "g").write_text("g")
    (root / "swap" / "old").write_text("o")
    (root / "file2dir").write_text("f")
    os.symlink("a/x", root / "link")


def _diff(tmp_path: Path, change: object) -> list[Change]:
    root = tmp_path / "r"
    root.mkdir()
    _tree(root)
    before = stat_tree(root)
    change(root)  # type: ignore[operator]
    return compute_changes(before, stat_tree(root))


def test_no_change_is_empty(tmp_path: Path) -> None:
    assert _diff(tmp_path, lambda r: None) == []


def test_modify_add_delete(tmp_path: Path) -> None:
    def change(r: Path) -> None:
        (r / "a" / "b" / "f").write_text("two")
        (r / "a" / "new").write_text("n")
        shutil.rmtree(r / "gone")
        (r / "link").unlink()

    assert _diff(tmp_path, change) == [
        Change("add", "a"),
        Change("add", "a/b"),
        Change("add", "a/b/f"),
        Change("add", "a/new"),
        Change("delete", "gone"),
        Change("delete", "link"),
    ]


def test_chmod_and_rename(tmp_path: Path) -> None:
    def change(r: Path) -> None:
        os.chmod(r / "keep" / "k", 0o600)
        os.rename(r / "a" / "x", r / "a" / "y")

    assert _diff(tmp_path, change) == [
        Change("add", "a"),
        Change("delete", "a/x"),
        Change("add", "a/y"),
        Change("add", "keep"),
        Change("add", "keep/k"),
    ]


def test_replaced_directory_is_compared_entry_by_entry(tmp_path: Path) -> None:
    def change(r: Path) -> None:
        shutil.rmtree(r / "swap")
        (r / "swap").mkdir()
        (r / "swap" / "new").write_text("n")

    # What went is whited out, as BuildKit writes it: the same changes whether or not the
    # file system handed the old inode number back (it often does at once).
    assert _diff(tmp_path, change) == [
        Change("add", "swap"), Change("add", "swap/new"), Change("delete", "swap/old")]


def test_type_changes(tmp_path: Path) -> None:
    def change(r: Path) -> None:
        (r / "file2dir").unlink()
        (r / "file2dir").mkdir()
        shutil.rmtree(r / "keep")
        (r / "keep").write_text("now a file")

    assert _diff(tmp_path, change) == [
        Change("add", "file2dir"),
        Change("add", "keep"),
    ]


def test_ctime_only_dir_change_is_ignored(tmp_path: Path) -> None:
    def change(r: Path) -> None:
        st = os.stat(r / "a")
        (r / "a" / "stub").touch()
        (r / "a" / "stub").unlink()
        os.utime(r / "a", ns=(st.st_atime_ns, st.st_mtime_ns))

    assert _diff(tmp_path, change) == []


def test_same_size_rewrite_with_old_mtime_is_seen(tmp_path: Path) -> None:
    def change(r: Path) -> None:
        st = os.stat(r / "a" / "x")
        (r / "a" / "x").write_text("y")
        os.utime(r / "a" / "x", ns=(st.st_atime_ns, st.st_mtime_ns))

    assert Change("add", "a/x") in _diff(tmp_path, change)


def test_redundant_dirs(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    upper = tmp_path / "upper"
    for d in ("etc", "usr/lib", "var"):
        (lower / d).mkdir(parents=True)
    (upper / "usr" / "lib").mkdir(parents=True)
    (upper / "etc").mkdir()
    (upper / "var").mkdir()
    (upper / "var" / "log").write_text("new")
    (upper / "new").mkdir()
    for d in ("etc", "usr/lib", "usr", "var"):
        st = os.stat(lower / d)
        os.chmod(upper / d, st.st_mode & 0o7777)
        os.utime(upper / d, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(upper / "etc", 0o700)  # a real change
    assert redundant_dirs(upper, [lower]) == {"usr", "usr/lib"}
    asked: list[int] = []

    def lowers() -> list[Path]:
        asked.append(1)
        return [lower]

    assert redundant_dirs(upper, lowers) == {"usr", "usr/lib"}
    assert asked == [1]  # asked once, when the first empty directory is checked
    full = tmp_path / "full"
    (full / "l").mkdir(parents=True)
    (full / "l" / "file").write_text("x")
    assert redundant_dirs(full, lowers) == set()
    assert asked == [1]  # no empty directory: the lowers are never needed


def test_compact_overlay_options() -> None:
    base = "/var/lib/dockyard/snapshots"
    lowers = [f"{base}/{n}/fs" for n in range(1000, 1130)]
    m = Mount("overlay", "overlay", (
        "lowerdir=" + ":".join(lowers), f"upperdir={base}/9999/fs", f"workdir={base}/9999/work",
        "index=off",
    ))
    assert len(m.option_string()) > MOUNT_OPTIONS_LIMIT
    compact = _compact_overlay(m)
    assert compact is not None
    cm, cwd = compact
    assert cwd == base
    assert cm.options[0].startswith("lowerdir=1000/fs:1001/fs:")
    assert cm.options[1:] == ("upperdir=9999/fs", "workdir=9999/work", "index=off")
    assert len(cm.option_string()) <= MOUNT_OPTIONS_LIMIT


def test_mount_option_string_drops_flags() -> None:
    assert Mount("bind", "/x", ("rbind", "ro")).option_string() == ""
    assert Mount("overlay", "overlay", ("ro", "lowerdir=/a:/b")).option_string() == (
        "lowerdir=/a:/b"
    )


def test_meta_table(tmp_path: Path) -> None:
    t = MetaTable(tmp_path)
    a = t.create("a-active", "active", None)
    assert a.id == 1
    t.commit("a", "a-active")
    b = t.create("b-active", "active", "a")
    assert b.id == 2
    t.commit("b", "b-active")
    assert [r.id for r in t.chain("b")] == [2, 1]
    with pytest.raises(NotFoundError):
        t.create("c", "active", "missing")
    with pytest.raises(NotFoundError):
        t.create("c", "active", "nope")
    with pytest.raises(StoreError, match="already exists"):
        t.create("a", "active", None)
    with pytest.raises(StoreError, match="has children"):
        t.remove("a")
    t.remove("b")
    assert not (tmp_path / "snapshots" / "2").exists()
    t.remove("a")
    assert t.all() == {}
    # Ids are never reused, so a stale directory can never be mistaken for a new snapshot.
    assert MetaTable(tmp_path).create("d", "active", None).id == 3


def test_meta_table_refuses_mixing_snapshotters(tmp_path: Path) -> None:
    MetaTable(tmp_path, "native").create("a", "active", None)
    assert MetaTable(tmp_path).recorded_driver() == "native"
    with pytest.raises(StoreError, match="native snapshotter"):
        MetaTable(tmp_path, "overlay").create("b", "active", None)


def test_an_overlay_work_dir_goes_with_or_without_leftovers(tmp_path: Path) -> None:
    from dockyard.snapshot.overlay import _remove_work_dir

    clean = tmp_path / "clean"
    (clean / "work").mkdir(parents=True)
    os.chmod(clean / "work", 0)  # as overlayfs leaves it
    _remove_work_dir(clean)
    assert not clean.exists()
    left = tmp_path / "left"
    (left / "index" / "sub").mkdir(parents=True)
    (left / "work").mkdir()
    (left / "work" / "#1").write_text("x")
    _remove_work_dir(left)
    assert not left.exists()
    _remove_work_dir(tmp_path / "missing")  # already gone: nothing to do
