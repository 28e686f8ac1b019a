"""Crafted and random archives: nothing is ever written outside the root, and every unsafe
entry is refused with a LayerError that names it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.errors import LayerError
from dockyard.layers.apply import apply_layer


def snapshot(path: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Everything observable about a tree: names, modes, times, contents, link targets."""
    result: dict[str, tuple[int, int, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            content: bytes | str | None = None
            if os.path.islink(p):
                content = os.readlink(p)
            elif os.path.isfile(p):
                content = Path(p).read_bytes()
            result[os.path.relpath(p, path)] = (s.st_mode, s.st_mtime_ns, content)
    return result


class Sandbox:
    """tmp/root (the target) next to tmp/sentinel (must never change)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.sentinel = base / "sentinel"
        self.root.mkdir()
        self.sentinel.mkdir()
        (self.sentinel / "x").write_text("precious")
        (self.sentinel / "sub").mkdir()
        (self.sentinel / "sub" / "y").write_text("precious too")
        self.before = snapshot(self.sentinel)
        self.siblings = sorted(os.listdir(base))
        self.passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()

    def untouched(self) -> None:
        assert snapshot(self.sentinel) == self.before
        assert sorted(os.listdir(self.base)) == self.siblings
        assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == self.passwd


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "",
          **kw: int) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data)
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for k, v in kw.items():
        setattr(info, k, v)
    return info, data


def archive(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


CRAFTED: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes]], str]] = {
    "dotdot": ([entry("../x", data=b"evil")], "../x"),
    "dotdot-deep": ([entry("../sentinel/x", data=b"evil")], "../sentinel/x"),
    "absolute": ([entry("/abs", data=b"evil")], "/abs"),
    "inner-dotdot": ([entry("a/../../x", data=b"evil")], "a/../../x"),
    "symlink-escape": ([entry("link", tarfile.SYMTYPE, linkname="../sentinel"),
                        entry("link/x", data=b"evil")], "link/x"),
    "symlink-escape-dir": ([entry("link", tarfile.SYMTYPE, linkname="../sentinel/sub"),
                            entry("link/new", tarfile.DIRTYPE)], "link/new"),
    "symlink-chain": ([entry("a", tarfile.SYMTYPE, linkname="b/c"),
                       entry("b", tarfile.SYMTYPE, linkname="."),
                       entry("c", tarfile.SYMTYPE, linkname="d/../.."),
                       entry("d", tarfile.DIRTYPE),
                       entry("a/sentinel/x", data=b"evil")], "a/sentinel/x"),
    "symlink-chain-abs": ([entry("l1", tarfile.SYMTYPE, linkname="/l2"),
                           entry("l2", tarfile.SYMTYPE, linkname="../../.."),
                           entry("l1/sentinel/x", data=b"evil")], "l1/sentinel/x"),
    "symlink-loop": ([entry("l1", tarfile.SYMTYPE, linkname="l2"),
                      entry("l2", tarfile.SYMTYPE, linkname="l1"),
                      entry("l1/x", data=b"evil")], "l1/x"),
    "hardlink-absolute": ([entry("h", tarfile.LNKTYPE, linkname="/etc/passwd")], "/etc/passwd"),
    "hardlink-dotdot": ([entry("h", tarfile.LNKTYPE, linkname="../sentinel/x")],
                        "../sentinel/x"),
    "hardlink-via-symlink": ([entry("l", tarfile.SYMTYPE, linkname="../sentinel"),
                              entry("h", tarfile.LNKTYPE, linkname="l/x")], "'h'"),
    "hardlink-via-abs-symlink": ([entry("l", tarfile.SYMTYPE, linkname="/etc"),
                                  entry("h", tarfile.LNKTYPE, linkname="l/passwd")], "l/passwd"),
    "hardlink-missing": ([entry("h", tarfile.LNKTYPE, linkname="nope")], "nope"),
    "hardlink-dir": ([entry("d", tarfile.DIRTYPE),
                      entry("h", tarfile.LNKTYPE, linkname="d")], "'h'"),
    "whiteout-dotdot": ([entry(".wh...")], ".wh..."),
    "whiteout-dot": ([entry("a/.wh..")], "a/.wh.."),
    "whiteout-empty": ([entry(".wh.")], ".wh."),
    "whiteout-dir": ([entry(".wh.x", tarfile.DIRTYPE)], ".wh.x"),
    "whiteout-as-parent": ([entry(".wh.x/y", data=b"y")], ".wh.x/y"),
    "opaque-root": ([entry(".wh..wh..opq")], ".wh..wh..opq"),
    "opaque-in-file": ([entry("f", data=b"f"), entry("f/.wh..wh..opq")], "f/.wh..wh..opq"),
    "opaque-as-dir": ([entry("d", tarfile.DIRTYPE), entry("d/.wh..wh..opq", tarfile.DIRTYPE)],
                      "d/.wh..wh..opq"),
    "opaque-as-symlink": ([entry("d", tarfile.DIRTYPE),
                           entry("d/.wh..wh..opq", tarfile.SYMTYPE, linkname="/")],
                          "d/.wh..wh..opq"),
    "file-as-root": ([entry("./", tarfile.REGTYPE, data=b"x")], "'./'"),
    "parent-is-file": ([entry("f", data=b"f"), entry("f/g", data=b"g")], "f/g"),
    "sparse-unknown-type": ([entry("weird", b"Z", data=b"")], "weird"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_archive_is_refused_and_contained(tmp_path: Path, case: str) -> None:
    members, named = CRAFTED[case]
    box = Sandbox(tmp_path)
    with pytest.raises(LayerError) as info:
        apply_layer(io.BytesIO(archive(*members)), box.root)
    assert named in str(info.value), str(info.value)
    box.untouched()


def test_absolute_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    """`etc -> /etc` then `etc/passwd`: written to root/etc/passwd, as the container sees it
    (images rely on this: var/run -> /run), never to the host's /etc."""
    box = Sandbox(tmp_path)
    apply_layer(io.BytesIO(archive(
        entry("link", tarfile.SYMTYPE, linkname="/etc"),
        entry("link/passwd", data=b"root::0:0::/:/bin/sh\n"),
        entry("up", tarfile.SYMTYPE, linkname="/sentinel"),
        entry("up/x", data=b"inside"),
    )), box.root)
    assert (box.root / "etc" / "passwd").read_bytes() == b"root::0:0::/:/bin/sh\n"
    assert (box.root / "sentinel" / "x").read_bytes() == b"inside"
    box.untouched()


def test_an_entry_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    outside = str(box.sentinel / "x")
    apply_layer(io.BytesIO(archive(
        entry("x", tarfile.SYMTYPE, linkname=outside),
        entry("x", data=b"replaced"),
        entry("d", tarfile.SYMTYPE, linkname="../sentinel/sub"),
        entry("d", tarfile.DIRTYPE, mtime=5),
        entry("d/f", data=b"in root"),
    )), box.root)
    assert (box.root / "x").read_bytes() == b"replaced" and not (box.root / "x").is_symlink()
    assert (box.root / "d" / "f").read_bytes() == b"in root"
    box.untouched()


def test_directory_metadata_is_not_applied_through_a_later_symlink(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    os.chmod(box.sentinel / "sub", 0o755)
    box.before = snapshot(box.sentinel)
    apply_layer(io.BytesIO(archive(
        entry("a", tarfile.DIRTYPE),
        entry("a/sub", tarfile.DIRTYPE, mode=0o700, mtime=1),
        entry("a", tarfile.SYMTYPE, linkname="../sentinel"),
    )), box.root)
    assert os.stat(box.sentinel / "sub").st_mode & 0o777 == 0o755
    box.untouched()


def test_whiteout_through_symlink_does_not_delete_outside(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    with pytest.raises(LayerError, match=r"l/\.wh\.x"):
        apply_layer(io.BytesIO(archive(
            entry("l", tarfile.SYMTYPE, linkname="../sentinel"),
            entry("l/.wh.x"),
        )), box.root)
    # a whiteout reached through a symlink that stays inside the root is refused too (one
    # view of a layer: overlayfs would not follow it, a flattened tree would)
    for marker in ("m/.wh.x", "m/sub/.wh..wh..opq"):
        with pytest.raises(LayerError, match="through the symlink 'm'"):
            apply_layer(io.BytesIO(archive(
                entry("m", tarfile.SYMTYPE, linkname="/sentinel"),
                entry(marker),
            )), box.root)
    box.untouched()


def test_corrupt_and_truncated_archives(tmp_path: Path) -> None:
    box = Sandbox(tmp_path)
    good = archive(entry("f", data=b"x" * 5000))
    for bad in (good[:700], b"\x1f\x8b\x08garbage", b"(\xb5/\xfd" + b"\xff" * 40,
                b"x" * 512, good[:512] + b"\xff" * 1000):
        with pytest.raises(LayerError):
            apply_layer(io.BytesIO(bad), box.root)
    box.untouched()


NON_ROOT_SCRIPT = """
import io, sys, tarfile
from pathlib import Path
from dockyard.errors import LayerError
from dockyard.layers.apply import apply_layer
info = tarfile.TarInfo("dev/null2"); info.type = tarfile.CHRTYPE
info.devmajor, info.devminor = 1, 3
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
    tf.addfile(info)
try:
    apply_layer(io.BytesIO(out.getvalue()), Path(sys.argv[1]))
except LayerError as err:
    print("LayerError:", err)
"""


def _apply_as_nobody(data: bytes, target: Path) -> str:
    """Apply ``data`` in a forked child that has dropped root; return what it reports."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                apply_layer(io.BytesIO(data), target)
                message = "applied"
            except LayerError as err:
                message = f"LayerError: {err}"
            except BaseException as err:
                message = f"{type(err).__name__}: {err}"
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        report = f.read().decode()
    os.waitpid(pid, 0)
    return report


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    # pytest's own temp dirs are 0700, closed to the unprivileged child.
    base = Path(tempfile.mkdtemp(prefix="dockyard-nobody-"))
    os.chmod(base, 0o755)
    target = base / "root"
    target.mkdir()
    if os.geteuid() == 0:
        os.chown(target, 65534, 65534)
    yield target
    shutil.rmtree(base)


def test_device_nodes_without_root_are_a_clear_error(nobody_dir: Path) -> None:
    data = archive(entry("dev", tarfile.DIRTYPE),
                   entry("dev/null2", tarfile.CHRTYPE, devmajor=1, devminor=3))
    target = nobody_dir
    report = _apply_as_nobody(data, target)
    assert report.startswith("LayerError:"), report
    assert "dev/null2" in report and "device nodes need root" in report
    assert not (target / "dev" / "null2").exists()


def test_non_root_apply_ignores_denied_xattrs_and_ownership(nobody_dir: Path) -> None:
    info, data = entry("f", data=b"x", uid=0, gid=0)
    info.pax_headers = {"SCHILY.xattr.trusted.thing": "v", "SCHILY.xattr.user.ok": "yes"}
    target = nobody_dir
    report = _apply_as_nobody(archive((info, data)), target)
    assert report == "applied"
    assert (target / "f").read_bytes() == b"x"
    assert os.getxattr(target / "f", "user.ok") == b"yes"


# --- fuzz ----------------------------------------------------------------------------------

_components = st.sampled_from(["a", "b", "..", ".", "", "sentinel", "x", ".wh.a", ".wh..",
                               ".wh..wh..opq", ".wh..wh.plnk", "l"])
_fuzz_name = st.lists(_components, min_size=1, max_size=4).map("/".join) | st.sampled_from(
    ["/abs", "/", "./", "../sentinel/x"])
_fuzz_entry = st.tuples(
    _fuzz_name,
    st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                     tarfile.FIFOTYPE, b"7", b"Z"]),
    st.sampled_from(["..", "/", "../sentinel", "../..", "a", "l/..", "/etc", "sentinel/x",
                     "../sentinel/x", "x", "l"]),
    st.binary(max_size=64),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_fuzz_entry, max_size=12))
def test_fuzz_entry_lists_stay_inside(entries: list[tuple[str, bytes, str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        box = Sandbox(Path(tmp))
        members = []
        for name, kind, link, data in entries:
            members.append(entry(name or ".", kind, data if kind == tarfile.REGTYPE else b"",
                                 linkname=link))
        with contextlib.suppress(LayerError):
            apply_layer(io.BytesIO(archive(*members)), box.root)
        box.untouched()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from([b"", b"\x1f\x8b", b"(\xb5/\xfd", b"BZh"]),
       st.integers(min_value=0, max_value=2))
def test_fuzz_random_bytes_only_raise_layer_error(noise: bytes, magic: bytes, seed: int) -> None:
    good = archive(entry("a", tarfile.DIRTYPE), entry("a/f", data=b"hello" * 50),
                   entry("l", tarfile.SYMTYPE, linkname="a"))
    candidates = [magic + noise, good[: len(noise)] + noise, good[:512] + noise]
    with tempfile.TemporaryDirectory() as tmp:
        box = Sandbox(Path(tmp))
        with contextlib.suppress(LayerError):
            apply_layer(io.BytesIO(candidates[seed]), box.root)
        box.untouched()
