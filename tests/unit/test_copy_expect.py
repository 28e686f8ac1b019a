"""COPY copies exactly what its key was made of (issue 12, item 6): ``copy_into(expect=)``
copies the walk the selection digest was made of and checks every entry against it, and any
change between the digest and the copy raises SourceChangedError, whether the entry's stat
proves it (settled ctime) or not (checked field by field and by the bytes of the copy). A
file added since is not copied: the key does not hold it (issue 18: one walk per build)."""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.context.copy import copy_into
from dockyard.context.hashing import CONTEXT_ROOT, StatCache, digest_selection
from dockyard.errors import SourceChangedError


def _tar(content: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("inner.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.txt").write_text("alpha\n")
    (root / "src" / "sub" / "b.txt").write_text("beta\n")
    (root / "src" / "link").symlink_to("a.txt")
    os.link(root / "src" / "a.txt", root / "src" / "hard.txt")
    (root / "src" / "twin.txt").write_text("beta\n")
    (root / "arch.tar").write_bytes(_tar(b"one\n"))
    return root


def _split(c: Path) -> None:
    """src/hard.txt made a file of its own, with the same bytes and mode."""
    (c / "src" / "hard.new").write_bytes((c / "src" / "hard.txt").read_bytes())
    os.chmod(c / "src" / "hard.new", os.stat(c / "src" / "hard.txt").st_mode)
    os.replace(c / "src" / "hard.new", c / "src" / "hard.txt")


def _join(c: Path) -> None:
    """src/sub/b.txt made a hard link of src/twin.txt (the same bytes and mode)."""
    os.unlink(c / "src" / "sub" / "b.txt")
    os.link(c / "src" / "twin.txt", c / "src" / "sub" / "b.txt")


def _settle() -> None:
    time.sleep(0.05)  # past the racy window: the stat of every entry proves its state


def _copy(ctx: Path, dest: Path, sources: list[str], *, proven: bool,
          change: Callable[[], object] | None = None, add: bool = False) -> None:
    if proven:
        _settle()
    window = 20_000_000 if proven else 10**15  # an enormous window: nothing is proven
    with StatCache(None, racy_window_ns=window) as cache:
        sel = digest_selection(ctx, sources, [], cache, context=True)
    assert bool(sel.proofs) == proven
    if change is not None:
        change()
    copy_into(ctx, sources, "/out/", dest, workdir="/", chown=None, chmod=None,
              parents=False, excludes=(), is_add=add, ignore=None, expect=sel,
              tmpdir=dest.parent / "tmp")


CHANGES: dict[str, Callable[[Path], object]] = {
    "same-size content": lambda c: (c / "src" / "a.txt").write_text("ALPHA\n"),
    "mode": lambda c: os.chmod(c / "src" / "sub" / "b.txt", 0o600),
    "removed": lambda c: (c / "src" / "sub" / "b.txt").unlink(),
    "link target": lambda c: ((c / "src" / "link").unlink(),
                              (c / "src" / "link").symlink_to("sub")),
    "xattr": lambda c: os.setxattr(c / "src" / "a.txt", "user.k", b"v"),
    "hardlink split": _split,
    "hardlink join": _join,
}


@pytest.mark.parametrize("proven", [True, False], ids=["proven", "unproven"])
@pytest.mark.parametrize("what", sorted(CHANGES))
def test_a_change_between_digest_and_copy_is_refused(
    ctx: Path, tmp_path: Path, what: str, proven: bool
) -> None:
    if what == "xattr":
        try:
            os.setxattr(ctx / "src" / "sub" / "b.txt", "user.probe", b"1")
        except OSError:
            pytest.skip("no user xattrs on this file system")
    dest = tmp_path / "rootfs"
    dest.mkdir()
    with pytest.raises(SourceChangedError):
        _copy(ctx, dest, ["src"], proven=proven, change=lambda: CHANGES[what](ctx))


@pytest.mark.parametrize("proven", [True, False], ids=["proven", "unproven"])
def test_an_unchanged_selection_is_copied(ctx: Path, tmp_path: Path, proven: bool) -> None:
    dest = tmp_path / "rootfs"
    dest.mkdir()
    _copy(ctx, dest, ["src", "arch.tar"], proven=proven)
    assert (dest / "out" / "a.txt").read_text() == "alpha\n"
    assert (dest / "out" / "sub" / "b.txt").read_text() == "beta\n"
    assert os.readlink(dest / "out" / "link") == "a.txt"
    assert os.stat(dest / "out" / "hard.txt").st_ino == os.stat(dest / "out" / "a.txt").st_ino
    assert os.stat(dest / "out" / "twin.txt").st_nlink == 1


@pytest.mark.parametrize("proven", [True, False], ids=["proven", "unproven"])
def test_an_added_archive_that_changed_is_refused(
    ctx: Path, tmp_path: Path, proven: bool
) -> None:
    dest = tmp_path / "rootfs"
    dest.mkdir()
    _copy(ctx, dest, ["arch.tar"], proven=proven, add=True)
    assert (dest / "out" / "inner.txt").read_text() == "one\n"
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(SourceChangedError):
        _copy(ctx, again, ["arch.tar"], proven=proven, add=True,
              change=lambda: (ctx / "arch.tar").write_bytes(_tar(b"two\n")))


def test_the_context_roots_own_metadata_is_not_in_the_digest(ctx: Path) -> None:
    """A chmod of the context directory changes nothing a COPY makes (BuildKit never
    receives the root's metadata): it changes no key either."""
    with StatCache(None) as cache:
        before = digest_selection(ctx, ["."], [], cache, context=True)
        os.chmod(ctx, 0o700)
        after = digest_selection(ctx, ["."], [], cache, context=True)
        os.chmod(ctx / "src", 0o700)
        sub = digest_selection(ctx, ["."], [], cache, context=True)
    assert before.files["."] == after.files["."] == CONTEXT_ROOT
    assert after.digest == before.digest
    assert sub.digest != after.digest  # a subdirectory's mode counts, as in BuildKit


@pytest.mark.parametrize("proven", [True, False], ids=["proven", "unproven"])
def test_parents_whose_metadata_changed_before_the_copy_are_refused(
    ctx: Path, tmp_path: Path, proven: bool
) -> None:
    """COPY --parents: the directories it recreates must get the metadata the key holds."""
    def copy_parents(dest: Path, change: Callable[[], object] | None) -> None:
        with StatCache(None) as cache:
            sel = digest_selection(ctx, ["src/sub/b.txt"], [], cache, context=True,
                                   parents=True)
        assert set(sel.parents) == {"src", "src/sub"}
        if change is not None:
            change()
        dest.mkdir()
        copy_into(ctx, ["src/sub/b.txt"], "/out/", dest, workdir="/", chown=None, chmod=None,
                  parents=True, excludes=(), is_add=False, ignore=None, expect=sel)

    if proven:
        _settle()
    copy_parents(tmp_path / "one", None)
    assert (tmp_path / "one" / "out" / "src" / "sub" / "b.txt").read_text() == "beta\n"
    with pytest.raises(SourceChangedError):
        copy_parents(tmp_path / "two", lambda: os.chmod(ctx / "src" / "sub", 0o700))


@pytest.mark.parametrize("proven", [True, False], ids=["proven", "unproven"])
def test_a_file_added_after_the_digest_is_not_copied(
    ctx: Path, tmp_path: Path, proven: bool
) -> None:
    dest = tmp_path / "rootfs"
    dest.mkdir()
    _copy(ctx, dest, ["src"], proven=proven,
          change=lambda: (ctx / "src" / "sub" / "new.txt").write_text("new\n"))
    assert (dest / "out" / "sub" / "b.txt").read_text() == "beta\n"
    assert not (dest / "out" / "sub" / "new.txt").exists()


def test_the_copy_walks_the_context_no_more(
    ctx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy lists nothing: every entry comes from the digest's walk."""
    from dockyard.context import _paths

    with StatCache(None) as cache:
        sel = digest_selection(ctx, ["src", "arch.tar"], [], cache, context=True)

    def no_walk(*args: object, **kwargs: object) -> None:
        raise AssertionError("the context was walked again")

    monkeypatch.setattr(_paths, "_walk_contents", no_walk)
    dest = tmp_path / "rootfs"
    dest.mkdir()
    copy_into(ctx, ["src", "arch.tar"], "/out/", dest, workdir="/", chown=None, chmod=None,
              parents=False, excludes=(), is_add=False, ignore=None, expect=sel)
    assert (dest / "out" / "sub" / "b.txt").read_text() == "beta\n"
