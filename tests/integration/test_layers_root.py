"""Layers with root: ownership, file capabilities, device nodes, and the overlay round trip
(upperdir -> OCI layer -> overlay lower dir, checked through a real overlay mount)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dockyard.layers.apply import apply_layer, iter_layer_entries
from dockyard.layers.tarwriter import write_layer_from_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# A v2 file capability blob granting cap_net_raw (as `setcap cap_net_raw+ep` writes it).
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")


def view(root: Path) -> dict[str, tuple[object, ...]]:
    """What a tree shows: types, modes, owners, contents, link targets, devices, xattrs."""
    result: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            s = os.lstat(path)
            content: object = None
            if stat.S_ISREG(s.st_mode):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(s.st_mode):
                content = os.readlink(path)
            xattrs: tuple[tuple[str, bytes], ...] = ()
            if not stat.S_ISLNK(s.st_mode):
                xattrs = tuple(sorted(
                    (k, os.getxattr(path, k)) for k in os.listxattr(path)
                    if k.startswith("user.") or k == "security.capability"))
            result[os.path.relpath(path, root)] = (
                stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, content,
                s.st_rdev if stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode) else 0, xattrs)
    return result


@contextmanager
def overlay(target: Path, lowers: list[Path], upper: Path | None = None,
            work: Path | None = None) -> Iterator[Path]:
    target.mkdir(exist_ok=True)
    options = "lowerdir=" + ":".join(str(p) for p in lowers)
    if upper is not None and work is not None:
        options += f",upperdir={upper},workdir={work}"
    proc = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"overlayfs cannot be mounted here: {proc.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_owners_capabilities_devices_and_special_modes_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ping").write_bytes(b"\x7fELF fake")
    os.chown(src / "ping", 0, 0)
    os.chmod(src / "ping", 0o755)
    os.setxattr(src / "ping", "security.capability", CAP_NET_RAW)
    (src / "home").mkdir()
    os.chown(src / "home", 1000, 1000)
    (src / "home" / "owned").write_text("mine")
    os.lchown(src / "home" / "owned", 1234, 5678)
    os.symlink("owned", src / "home" / "link")
    os.lchown(src / "home" / "link", 42, 43)
    (src / "tmp").mkdir()
    os.chmod(src / "tmp", 0o1777)
    (src / "sgid").write_text("s")
    os.chown(src / "sgid", 0, 50)
    os.chmod(src / "sgid", 0o2755)
    (src / "dev").mkdir()
    os.mknod(src / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(src / "dev" / "loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
    os.mkfifo(src / "dev" / "pipe", 0o600)

    out = io.BytesIO()
    write_layer_from_dir(src, out)
    entries = {e.name: e for e in iter_layer_entries(io.BytesIO(out.getvalue()))}
    assert dict(entries["ping"].xattrs) == {"security.capability": CAP_NET_RAW}
    assert (entries["home/owned"].uid, entries["home/owned"].gid) == (1234, 5678)
    assert (entries["dev/loop9"].type, entries["dev/loop9"].devmajor,
            entries["dev/loop9"].devminor) == ("block", 7, 9)

    dst = tmp_path / "dst"
    apply_layer(io.BytesIO(out.getvalue()), dst)
    assert view(dst) == view(src)
    assert os.getxattr(dst / "ping", "security.capability") == CAP_NET_RAW


def _populate_lower(lower: Path) -> None:
    (lower / "a").mkdir(parents=True)
    (lower / "a" / "keep").write_text("keep")
    (lower / "a" / "del").write_text("delete me")
    (lower / "b" / "deep").mkdir(parents=True)
    (lower / "b" / "x").write_text("hidden by opaque")
    (lower / "b" / "deep" / "y").write_text("hidden too")
    (lower / "r1").write_text("renamed")
    (lower / "gone-dir" / "sub").mkdir(parents=True)
    (lower / "gone-dir" / "sub" / "f").write_text("f")


def _change(merged: Path) -> None:
    os.unlink(merged / "a" / "del")
    os.chmod(merged / "a" / "keep", 0o600)
    subprocess.run(["rm", "-rf", str(merged / "b")], check=True)
    (merged / "b").mkdir()
    (merged / "b" / "new").write_text("new in b")
    os.rename(merged / "r1", merged / "r2")
    subprocess.run(["rm", "-rf", str(merged / "gone-dir")], check=True)
    (merged / "created").write_text("created")
    os.setxattr(merged / "created", "user.kept", b"1")


def test_overlay_upperdir_to_layer_and_back_to_an_overlay_lower(tmp_path: Path) -> None:
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    lower.mkdir()
    upper.mkdir()
    work.mkdir()
    _populate_lower(lower)
    with overlay(tmp_path / "merged", [lower], upper, work) as merged:
        _change(merged)
        expected = view(merged)

    layer = io.BytesIO()
    write_layer_from_dir(upper, layer, overlay_whiteouts=True)
    data = layer.getvalue()
    entries = list(iter_layer_entries(io.BytesIO(data)))
    names = [e.name for e in entries]
    assert "a/.wh.del" in names and ".wh.r1" in names and ".wh.gone-dir" in names
    assert names.index("b/.wh..wh..opq") == names.index("b") + 1
    assert {"b/new", "r2", "created", "a/keep"} <= set(names)
    for e in entries:
        assert not any(k.startswith(("trusted.overlay.", "user.overlay.")) for k, _ in e.xattrs)
        if e.name.rpartition("/")[2].startswith(".wh."):
            assert e.type == "file" and e.size == 0
    assert dict(next(e for e in entries if e.name == "created").xattrs) == {"user.kept": b"1"}

    # The layer as an overlay lower dir: whiteouts become 0:0 devices, opaque an xattr.
    fresh = tmp_path / "fresh"
    apply_layer(io.BytesIO(data), fresh, overlay_whiteouts=True)
    wh = os.lstat(fresh / "a" / "del")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(fresh / "b", "trusted.overlay.opaque") == b"y"
    with overlay(tmp_path / "check", [fresh, lower]) as check:
        assert view(check) == expected

    # And flattened: the lower as a layer, then this layer, in a plain directory.
    base_layer = io.BytesIO()
    write_layer_from_dir(lower, base_layer)
    flat = tmp_path / "flat"
    apply_layer(io.BytesIO(base_layer.getvalue()), flat)
    apply_layer(io.BytesIO(data), flat)
    assert view(flat) == expected

