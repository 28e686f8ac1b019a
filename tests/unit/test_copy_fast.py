"""The fast COPY loop (file descriptors, a few threads) gives exactly what the plain one did."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dockyard.context import copy as copy_mod
from dockyard.context.copy import copy_into, parse_chmod
from dockyard.errors import ContextError


def _copy(src_root: Path, sources: list[str], dest: str, target: Path, **kw: object) -> None:
    args: dict[str, object] = dict(workdir="/", chown=None, chmod=None, parents=False,
                                   excludes=(), is_add=False, ignore=None)
    args.update(kw)
    copy_into(src_root, sources, dest, target, **args)  # type: ignore[arg-type]


def _describe(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything COPY must reproduce, per path: type, mode, owner, mtime, content/target,
    user xattrs and hardlink grouping."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            try:
                xattrs = tuple(sorted((n, os.getxattr(full, n, follow_symlinks=False))
                                      for n in os.listxattr(full, follow_symlinks=False)
                                      if n.startswith("user.")))
            except OSError:
                xattrs = ()
            if stat.S_ISLNK(st.st_mode):
                body: object = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                body = Path(full).read_bytes()
            else:
                body = None
            link = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 and not stat.S_ISDIR(
                st.st_mode) else None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                        st.st_gid, st.st_mtime_ns, body, xattrs, link)
    return out


def _has_user_xattrs(path: Path) -> bool:
    probe = path / ".probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src" / "app"
    for d in range(4):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(40):
            p = src / f"d{d}" / f"f{f}.txt"
            p.write_bytes(f"file {d}/{f}\n".encode() * (f + 1))
            os.chmod(p, 0o640 if f % 3 else 0o755)
            os.utime(p, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321 + f))
    (src / "empty.bin").write_bytes(b"")
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    (src / "link").symlink_to("d0/f1.txt")
    os.link(src / "d1" / "f2.txt", src / "hard.txt")
    os.chmod(src / "d2", 0o750)
    if _has_user_xattrs(tmp_path):
        os.setxattr(src / "d0" / "f0.txt", "user.note", b"kept")
    return src


def test_threaded_copy_equals_sequential(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sum(1 for _ in source.rglob("*.txt")) >= copy_mod._PARALLEL_MIN_FILES
    results = []
    for workers in (1, 4):
        monkeypatch.setattr(copy_mod, "_COPY_WORKERS", workers)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        target = tmp_path / f"target{workers}"
        target.mkdir()
        _copy(source.parent, ["app/"], "/data/", target, chmod=None)
        results.append(_describe(target / "data"))
    assert results[0] == results[1]
    assert results[0] == _describe(source)  # the copy keeps everything of the source...
    got = results[0]
    assert got["link"][5] == "d0/f1.txt"
    assert got["hard.txt"][7] == got["d1/f2.txt"][7]  # ...hardlinks included


def test_fd_copy_applies_chmod_and_utime(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    _copy(source.parent, ["app/"], "/data/", target, chmod=parse_chmod("604"), utime=1234)
    st = os.lstat(target / "data" / "d3" / "f7.txt")
    assert stat.S_IMODE(st.st_mode) == 0o604
    assert st.st_mtime_ns == 1234 * 1_000_000_000
    assert (target / "data" / "big.bin").read_bytes() == (source / "big.bin").read_bytes()


def test_fd_copy_replaces_files_and_symlinks_but_not_dirs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("new a")
    (src / "b").write_text("new b")
    target = tmp_path / "t"
    (target / "dest").mkdir(parents=True)
    (target / "dest" / "a").write_text("old")
    (target / "dest" / "b").symlink_to("/nowhere")  # dangling: replaced, never followed
    _copy(src, ["a", "b"], "/dest/", target)
    assert (target / "dest" / "a").read_text() == "new a"
    assert not (target / "dest" / "b").is_symlink()
    assert (target / "dest" / "b").read_text() == "new b"
    (target / "dest" / "c").mkdir()
    (src / "c").write_text("file")
    with pytest.raises(ContextError, match="cannot replace to directory"):
        _copy(src, ["c"], "/dest/", target)
