"""Snapshotters on the real kernel: overlay and native give layers that rebuild the same tree."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bases import busybox_rootfs_tar, need_root, static_busybox
from dockyard.layers.apply import apply_layer
from dockyard.snapshot import (
    NativeSnapshotter,
    OverlaySnapshotter,
    cleanup_stale_mounts,
    mounted,
    open_snapshotter,
    our_mounts,
    overlay_supported,
)
from dockyard.snapshot.base import mount_all

pytestmark = [
    pytest.mark.skipif(need_root() is not None, reason=str(need_root())),
    pytest.mark.skipif(static_busybox() is None, reason="no static busybox"),
]

Snap = OverlaySnapshotter | NativeSnapshotter


@pytest.fixture(params=["overlay", "native"])
def snap(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Snap]:
    kind = request.param
    if kind == "overlay" and not overlay_supported(tmp_path)[0]:
        pytest.skip("overlayfs does not mount here")
    sn = open_snapshotter(tmp_path / "root", kind)
    assert sn.name == kind
    yield sn
    assert our_mounts(tmp_path) == []


def _base(sn: Snap) -> str:
    sn.prepare("base-active", None)
    with open(busybox_rootfs_tar(), "rb") as f:
        sn.apply("base-active", f)
    sn.commit("base", "base-active")
    return "base"


def _entries(data: bytes) -> dict[str, tuple[str, int, int, int, bytes | str]]:
    out: dict[str, tuple[str, int, int, int, bytes | str]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for ti in tf:
            if ti.isfile():
                f = tf.extractfile(ti)
                assert f is not None
                body: bytes | str = f.read()
            else:
                body = ti.linkname
            kind = "f" if ti.isfile() else "d" if ti.isdir() else "l" if ti.issym() else "h" if ti.islnk() else "o"
            out[ti.name.rstrip("/")] = (kind, ti.mode, ti.uid, ti.gid, body)
    return out


def _tree(root: Path) -> dict[str, tuple[int, int, int, bytes | str]]:
    """Everything that matters about a tree for an image: type+mode, owner, content."""
    out: dict[str, tuple[int, int, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISREG(st.st_mode):
                body: bytes | str = Path(p).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            else:
                body = ""
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, body)
    return out


def _step1(r: Path) -> None:
    (r / "data" / "sub").mkdir(parents=True)
    (r / "data" / "sub" / "f").write_text("one")
    (r / "data" / "old").write_text("old")
    (r / "etc" / "motd").write_text("hello")
    os.chown(r / "data" / "sub" / "f", 1000, 1000)


def _step2(r: Path) -> None:
    (r / "etc" / "motd").write_text("changed")           # modify a file of layer 1
    (r / "data" / "old").unlink()                        # delete a file of layer 1
    os.rename(r / "etc" / "group", r / "etc" / "group.bak")  # rename a base file
    os.chmod(r / "etc" / "passwd", 0o600)                # chmod a base file
    (r / "bin" / "vi").unlink()                          # delete a base symlink
    shutil.rmtree(r / "data" / "sub")                    # rm -rf dir && mkdir dir
    (r / "data" / "sub").mkdir()
    (r / "data" / "sub" / "g").write_text("fresh")
    shutil.rmtree(r / "var")                             # delete a whole base dir
    os.link(r / "etc" / "motd", r / "etc" / "motd.hard")  # a hardlink


def test_layers_rebuild_the_tree(snap: Snap, tmp_path: Path) -> None:
    parent = _base(snap)
    layers: list[bytes] = []
    for i, step in enumerate((_step1, _step2)):
        key = f"step{i}-active"
        mounts = snap.prepare(key, parent)
        with mounted(mounts) as r:
            step(r)
            final = _tree(r)
        buf = io.BytesIO()
        stats = snap.diff(key, buf, source_date_epoch=None)
        assert stats.size == len(buf.getvalue())
        layers.append(buf.getvalue())
        snap.commit(f"step{i}", key)
        parent = f"step{i}"

    l1 = _entries(layers[0])
    assert set(l1) == {"data", "data/sub", "data/sub/f", "data/old", "etc", "etc/motd"}
    assert l1["data/sub/f"][2:] == (1000, 1000, b"one")

    l2 = _entries(layers[1])
    assert l2["etc/motd"][4] == b"changed"
    assert l2["etc/passwd"][1] & 0o777 == 0o600
    assert "etc/.wh.group" in l2 and "etc/group.bak" in l2
    assert "bin/.wh.vi" in l2
    assert "data/.wh.old" in l2
    assert ".wh.var" in l2 and not any(n.startswith("var/") for n in l2)
    assert l2["data/sub/g"][4] == b"fresh"
    # rm -rf + mkdir hides the old contents: a whiteout of the old file, on both
    # snapshotters (overlay marks the directory opaque; its diff lists what that hides)
    assert "data/sub/.wh.f" in l2 and "data/sub/.wh..wh..opq" not in l2
    assert l2["etc/motd.hard"][0] == "h" or l2["etc/motd"][0] == "h"
    # Unchanged base content is not in the layer.
    assert "bin/busybox" not in l2 and "etc/hosts" not in l2

    # Base + the two diffs, flattened, is exactly the tree the step saw.
    flat = tmp_path / "flat"
    flat.mkdir()
    with open(busybox_rootfs_tar(), "rb") as f:
        apply_layer(f, flat)
    for data in layers:
        apply_layer(io.BytesIO(data), flat)
    assert _tree(flat) == final


def test_diff_is_reproducible_and_clamped(snap: Snap) -> None:
    parent = _base(snap)
    snap.prepare("a", parent)
    with mounted(snap.mounts("a")) as r:
        (r / "new").write_text("x")
    one, two = io.BytesIO(), io.BytesIO()
    s1 = snap.diff("a", one, source_date_epoch=1000)
    s2 = snap.diff("a", two, source_date_epoch=1000)
    assert s1 == s2 and one.getvalue() == two.getvalue()
    with tarfile.open(fileobj=io.BytesIO(one.getvalue())) as tf:
        assert all(ti.mtime <= 1000 for ti in tf)


def test_view_is_read_only(snap: Snap) -> None:
    parent = _base(snap)
    with mounted(snap.view("v", parent)) as r:
        assert (r / "bin" / "busybox").exists()
        with pytest.raises(OSError):
            (r / "x").write_text("no")
    snap.remove("v")


def test_remove_refuses_parent_and_cleans(snap: Snap) -> None:
    parent = _base(snap)
    snap.prepare("child", parent)
    with pytest.raises(Exception, match="children"):
        snap.remove(parent)
    snap.remove("child")
    snap.remove(parent)
    assert snap.committed() == []


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    return (int(release[0]), int(release[1])) >= (major, minor)


@pytest.mark.parametrize("how", ["layer-by-layer", "shortened"])
def test_overlay_with_130_layers(tmp_path: Path, how: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Options over a page: overlay's ``lowerdir+`` one layer at a time (Linux 6.8+), else
    paths relative to a common directory through mount(8)."""
    import dockyard.snapshot.base as base

    if not overlay_supported(tmp_path)[0]:
        pytest.skip("overlayfs does not mount here")
    used: list[str] = []
    real_run = base.subprocess.run

    def spy_run(*args: object, **kwargs: object) -> object:
        used.append("mount(8)")
        return real_run(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(base.subprocess, "run", spy_run)
    if how == "shortened":
        monkeypatch.setattr(base, "_layers_api", False)
    elif not _kernel_at_least(6, 8):
        pytest.skip("overlay's lowerdir+ needs Linux 6.8")
    sn = OverlaySnapshotter(tmp_path / "a-rather-long-store-root-path-to-push-the-options")
    parent: str | None = None
    for i in range(130):
        key = f"l{i}-active"
        sn.prepare(key, parent)
        (sn.fs_dir(key) / f"file{i}").write_text(str(i))
        sn.commit(f"layer-{i}", key)
        parent = f"layer-{i}"
    mounts = sn.prepare("top", parent)
    assert len(mounts[0].option_string()) > 4096
    with mounted(mounts) as r:
        assert (r / "file0").read_text() == "0"
        assert (r / "file129").read_text() == "129"
        (r / "file5").unlink()
        (r / "top").write_text("t")
    buf = io.BytesIO()
    sn.diff("top", buf, source_date_epoch=None)
    assert set(_entries(buf.getvalue())) == {".wh.file5", "top"}
    # a read-only view of the same stack, with a flag that must stay on the mount
    view = sn.view("top-view", parent)
    with mounted([base.Mount(m.type, m.source, (*m.options, "nodev")) for m in view]) as r:
        assert (r / "file129").read_text() == "129"
        flags = os.statvfs(r).f_flag
        assert flags & os.ST_RDONLY and flags & os.ST_NODEV
        with pytest.raises(OSError):
            (r / "new").write_text("x")
    assert used == (["mount(8)"] * 2 if how == "shortened" else [])
    assert our_mounts(tmp_path) == []


def test_mounted_unmounts_on_error(tmp_path: Path) -> None:
    sn = open_snapshotter(tmp_path, "auto")
    sn.prepare("a", None)
    with pytest.raises(RuntimeError), mounted(sn.mounts("a")) as r:
        assert r.parent == tmp_path / "mnt"
        assert our_mounts(tmp_path) == [r]
        raise RuntimeError("boom")
    assert our_mounts(tmp_path) == []
    assert list((tmp_path / "mnt").iterdir()) == []


def test_cleanup_stale_mounts(tmp_path: Path) -> None:
    sn = open_snapshotter(tmp_path, "auto")
    sn.prepare("a", None)
    target = tmp_path / "mnt" / "left-behind"
    target.mkdir(parents=True)
    mount_all(sn.mounts("a"), target)
    assert our_mounts(tmp_path) == [target]
    assert cleanup_stale_mounts(tmp_path) == 1
    assert our_mounts(tmp_path) == []
    assert not target.exists()


def test_auto_probe_is_cached(tmp_path: Path) -> None:
    first = open_snapshotter(tmp_path, "auto")
    cache = tmp_path / "snapshots" / "overlay-probe.json"
    assert cache.exists()
    before = cache.stat().st_mtime_ns
    t = time.perf_counter()
    second = open_snapshotter(tmp_path, "auto")
    assert time.perf_counter() - t < 0.05
    assert cache.stat().st_mtime_ns == before
    assert first.name == second.name
    assert not (tmp_path / "snapshots" / "probe").exists()
