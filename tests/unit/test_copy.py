"""COPY/ADD path rules (BuildKit's file-op copy semantics) in temp dirs."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from dockyard.context.copy import (
    copy_into,
    parse_chmod,
    resolve_chown,
    resolve_dest,
    write_heredocs,
)
from dockyard.context.dockerignore import PatternMatcher
from dockyard.errors import ContextError


def tree(root: Path) -> dict[str, str]:
    """path -> "f:<content>" / "d" / "l:<target>" for everything below root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                out[rel] = "l:" + os.readlink(full)
            elif full.is_dir():
                out[rel] = "d"
            else:
                out[rel] = "f:" + full.read_bytes().decode(errors="replace")
    return out


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("A")
    (root / "b.txt").write_text("B")
    (root / "c.md").write_text("C")
    (root / "dir" / "x").write_text("X")
    (root / "dir" / "sub" / "y").write_text("Y")
    return root


@pytest.fixture
def dst(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "existing").mkdir()
    return root


def run(
    ctx: Path,
    dst: Path,
    sources: Sequence[str],
    dest: str,
    *,
    workdir: str = "/",
    parents: bool = False,
    excludes: Sequence[str] = (),
    is_add: bool = False,
    ignore: PatternMatcher | None = None,
    chmod: int | None = None,
) -> dict[str, str]:
    copy_into(
        ctx,
        sources,
        dest,
        dst,
        workdir=workdir,
        chown=None,
        chmod=chmod,
        parents=parents,
        excludes=excludes,
        is_add=is_add,
        ignore=ignore,
    )
    return {k: v for k, v in tree(dst).items() if k != "existing"}


PATH_RULES: list[tuple[list[str], str, str, dict[str, str]]] = [
    # sources, dest, workdir, expected tree (besides /existing)
    (["a.txt"], "/dest", "/", {"dest": "f:A"}),
    (["a.txt"], "/dest/", "/", {"dest": "d", "dest/a.txt": "f:A"}),
    (["a.txt"], "/existing", "/", {"existing/a.txt": "f:A"}),
    (["a.txt"], "/deep/er/file", "/", {"deep": "d", "deep/er": "d", "deep/er/file": "f:A"}),
    (["dir"], "/dest", "/", {"dest": "d", "dest/x": "f:X", "dest/sub": "d", "dest/sub/y": "f:Y"}),
    (["dir/"], "/dest/", "/", {"dest": "d", "dest/x": "f:X", "dest/sub": "d", "dest/sub/y": "f:Y"}),
    (
        ["dir"],
        "/existing",
        "/",
        {"existing/x": "f:X", "existing/sub": "d", "existing/sub/y": "f:Y"},
    ),
    (["a.txt", "b.txt"], "/d/", "/", {"d": "d", "d/a.txt": "f:A", "d/b.txt": "f:B"}),
    (["*.txt"], "/d/", "/", {"d": "d", "d/a.txt": "f:A", "d/b.txt": "f:B"}),
    (["*.md"], "/single", "/", {"single": "f:C"}),
    (["a.txt"], "rel/", "/app", {"app": "d", "app/rel": "d", "app/rel/a.txt": "f:A"}),
    (["a.txt"], ".", "/app", {"app": "d", "app/a.txt": "f:A"}),
    (["a.txt"], "name", "/app", {"app": "d", "app/name": "f:A"}),
    (["dir/sub/y"], "/d/", "/", {"d": "d", "d/y": "f:Y"}),
    (["d?r/s*"], "/d/", "/", {"d": "d", "d/y": "f:Y"}),  # a matched dir copies its contents
    (["./dir/../a.txt"], "/d", "/", {"d": "f:A"}),
    (["nothing*"], "/d/", "/", {}),  # an empty wildcard copies nothing (BuildKit)
    (
        ["."],
        "/all/",
        "/",
        {
            "all": "d",
            "all/a.txt": "f:A",
            "all/b.txt": "f:B",
            "all/c.md": "f:C",
            "all/dir": "d",
            "all/dir/x": "f:X",
            "all/dir/sub": "d",
            "all/dir/sub/y": "f:Y",
        },
    ),
]


@pytest.mark.parametrize(("sources", "dest", "workdir", "expected"), PATH_RULES)
def test_path_rules(
    ctx: Path, dst: Path, sources: list[str], dest: str, workdir: str, expected: dict[str, str]
) -> None:
    assert run(ctx, dst, sources, dest, workdir=workdir) == expected


def test_several_sources_onto_a_non_slash_destination(ctx: Path, dst: Path) -> None:
    # BuildKit (against its docs) copies each source onto the same path in turn
    assert run(ctx, dst, ["a.txt", "b.txt"], "/notadir")["notadir"] == "f:B"
    assert run(ctx, dst, ["dir", "a.txt"], "/fresh")["fresh/a.txt"] == "f:A"
    assert run(ctx, dst, ["a.txt", "b.txt"], "/existing")["existing/b.txt"] == "f:B"


def test_missing_source_names_it(ctx: Path, dst: Path) -> None:
    with pytest.raises(ContextError, match=r"missing\.txt") as info:
        run(ctx, dst, ["a.txt", "missing.txt"], "/d/")
    assert info.value.hint is None
    assert not (dst / "d").exists()  # nothing written before the check


def test_missing_because_dockerignore(ctx: Path, dst: Path) -> None:
    ignore = PatternMatcher(["*.txt", "dir/sub"])
    with pytest.raises(ContextError, match=r"a\.txt") as info:
        run(ctx, dst, ["a.txt"], "/d", ignore=ignore)
    assert info.value.hint is not None and ".dockerignore" in info.value.hint
    # wildcards and directory walks do not see ignored files
    assert run(ctx, dst, ["*"], "/w/", ignore=ignore) == {
        "w": "d",
        "w/c.md": "f:C",
        "w/x": "f:X",
    }


def test_dockerignore_exception_inside_excluded_dir(ctx: Path, dst: Path) -> None:
    ignore = PatternMatcher(["dir", "!dir/sub/y"])
    assert run(ctx, dst, ["."], "/o/", ignore=ignore) == {
        "o": "d",
        "o/a.txt": "f:A",
        "o/b.txt": "f:B",
        "o/c.md": "f:C",
        "o/dir": "d",
        "o/dir/sub": "d",
        "o/dir/sub/y": "f:Y",
    }


def test_file_onto_directory_fails(ctx: Path, dst: Path) -> None:
    (dst / "existing" / "a.txt").mkdir()
    with pytest.raises(ContextError, match="cannot replace to directory"):
        run(ctx, dst, ["a.txt"], "/existing/")


def test_overwrites_existing_file_and_follows_dest_symlink_inside(ctx: Path, dst: Path) -> None:
    (dst / "f").write_text("old")
    (dst / "l").symlink_to("/etc/passwd")
    before = Path("/etc/passwd").read_bytes()
    run(ctx, dst, ["a.txt"], "/f")
    run(ctx, dst, ["b.txt"], "/l")
    assert (dst / "f").read_text() == "A"
    # BuildKit resolves the destination with RootPath: the link is followed inside the rootfs.
    assert (dst / "l").is_symlink() and (dst / "etc" / "passwd").read_text() == "B"
    assert Path("/etc/passwd").read_bytes() == before


def test_symlinks(ctx: Path, dst: Path) -> None:
    (ctx / "dir" / "rel-link").symlink_to("x")
    (ctx / "dir" / "abs-link").symlink_to("/etc/passwd")
    (ctx / "top-link").symlink_to("dir/x")
    (ctx / "dir-link").symlink_to("dir")
    got = run(ctx, dst, ["dir"], "/d")
    assert got["d/rel-link"] == "l:x"  # copied as symlinks, not followed
    assert got["d/abs-link"] == "l:/etc/passwd"
    got = run(ctx, dst, ["top-link"], "/t")
    assert got["t"] == "f:X"  # a top-level source symlink is followed
    got = run(ctx, dst, ["dir-link"], "/dl")
    assert got["dl/x"] == "f:X"


def test_symlink_out_of_the_context_is_not_followed(ctx: Path, dst: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("S")
    (ctx / "escape").symlink_to(outside / "secret")
    (ctx / "up").symlink_to("../outside/secret")
    for name in ("escape", "up"):
        with pytest.raises(ContextError, match="not found"):
            run(ctx, dst, [name], "/x")
    assert "S" not in "".join(tree(dst).values())


def test_symlink_inside_resolves_within_root(ctx: Path, dst: Path) -> None:
    (ctx / "abs").symlink_to("/dir/x")  # absolute targets are taken from the context root
    assert run(ctx, dst, ["abs"], "/x")["x"] == "f:X"


def test_dest_symlink_resolves_inside_target(ctx: Path, dst: Path, tmp_path: Path) -> None:
    (dst / "usr" / "lib").mkdir(parents=True)
    (dst / "lib").symlink_to("/usr/lib")
    run(ctx, dst, ["a.txt"], "/lib/")
    assert (dst / "usr" / "lib" / "a.txt").read_text() == "A"
    assert not Path("/usr/lib/a.txt").exists() or Path("/usr/lib/a.txt").read_text() != "A"


def test_hardlinks_preserved(ctx: Path, dst: Path) -> None:
    os.link(ctx / "dir" / "x", ctx / "dir" / "x2")
    run(ctx, dst, ["dir"], "/h")
    assert os.stat(dst / "h" / "x").st_ino == os.stat(dst / "h" / "x2").st_ino


def test_modes_mtimes_and_chmod(ctx: Path, dst: Path) -> None:
    os.chmod(ctx / "a.txt", 0o4751)
    os.utime(ctx / "a.txt", (1_000_000, 1_000_000))
    os.chmod(ctx / "dir" / "sub", 0o711)
    os.utime(ctx / "dir" / "sub", (2_000_000, 2_000_000))
    run(ctx, dst, ["a.txt", "dir"], "/m/")
    assert stat.S_IMODE(os.stat(dst / "m" / "a.txt").st_mode) == 0o4751
    assert os.stat(dst / "m" / "a.txt").st_mtime == 1_000_000
    assert stat.S_IMODE(os.stat(dst / "m" / "sub").st_mode) == 0o711
    assert os.stat(dst / "m" / "sub").st_mtime == 2_000_000  # dir mtime set after children
    assert stat.S_IMODE(os.stat(dst / "m").st_mode) == 0o755  # created parent
    run(ctx, dst, ["dir"], "/c/", chmod=0o640)
    assert stat.S_IMODE(os.stat(dst / "c" / "x").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(dst / "c" / "sub").st_mode) == 0o640


def test_excludes(ctx: Path, dst: Path) -> None:
    (ctx / "dir" / "skip.txt").write_text("no")
    (ctx / "dir" / "sub" / "deep.txt").write_text("no")
    got = run(ctx, dst, ["dir"], "/e", excludes=["*.txt"])
    assert "e/skip.txt" not in got and got["e/sub/deep.txt"] == "f:no"  # * stays in one dir
    got = run(ctx, dst, ["dir"], "/e2", excludes=["**/*.txt"])
    assert "e2/skip.txt" not in got and "e2/sub/deep.txt" not in got and got["e2/x"] == "f:X"
    got = run(ctx, dst, ["*"], "/e3/", excludes=["*.txt", "sub"])
    assert {k for k in got if k.startswith("e3")} == {
        "e3",
        "e3/c.md",
        "e3/x",
    }  # wildcard matches filtered, dir contents too


def test_parents(ctx: Path, dst: Path) -> None:
    (ctx / "x" / "y").mkdir(parents=True)
    (ctx / "x" / "y" / "f.txt").write_text("F")
    (ctx / "x" / "y" / "g.txt").write_text("G")
    got = run(ctx, dst, ["x/y/f.txt", "dir/sub"], "/p/", parents=True)
    assert got["p/x/y/f.txt"] == "f:F"
    assert got["p/dir/sub/y"] == "f:Y"
    got = run(ctx, dst, ["x/./y/*.txt"], "/q/", parents=True)
    assert {k: v for k, v in got.items() if k.startswith("q")} == {
        "q": "d",
        "q/y": "d",
        "q/y/f.txt": "f:F",
        "q/y/g.txt": "f:G",
    }


def test_heredocs(dst: Path) -> None:
    write_heredocs([("script.sh", "echo hi\n")], "/bin/", dst, workdir="/", chown=None, chmod=None)
    assert (dst / "bin" / "script.sh").read_text() == "echo hi\n"
    assert stat.S_IMODE(os.stat(dst / "bin" / "script.sh").st_mode) == 0o644
    write_heredocs([("x", "1"), ("y", "2")], "/two/", dst, workdir="/", chown=None, chmod=0o755)
    assert stat.S_IMODE(os.stat(dst / "two" / "y").st_mode) == 0o755
    write_heredocs([("EOF", "body")], "/named", dst, workdir="/", chown=None, chmod=None)
    assert (dst / "named").read_text() == "body"


# ---- ADD archives -----------------------------------------------------------------------


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            info.mtime = 1_234_567
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("p.tar", lambda b: b),
        ("p.tar.gz", gzip.compress),
        ("p.tar.bz2", bz2.compress),
        ("p.tar.xz", lzma.compress),
        ("p.tar.zst", _zstd),
        ("misnamed.bin", gzip.compress),  # detection is by content, not by name
    ],
)
def test_add_extracts_archives(ctx: Path, dst: Path, name: str, compress: object) -> None:
    assert callable(compress)
    (ctx / name).write_bytes(compress(_tar_bytes({"top/f": b"hello", "g": b"G"})))
    got = run(ctx, dst, [name], "/unpacked", is_add=True)
    assert got["unpacked/top/f"] == "f:hello" and got["unpacked/g"] == "f:G"
    assert stat.S_IMODE(os.stat(dst / "unpacked" / "g").st_mode) == 0o640
    assert os.stat(dst / "unpacked" / "g").st_mtime == 1_234_567
    # COPY never extracts
    got = run(ctx, dst, [name], "/copied", is_add=False)
    assert got["copied"].startswith("f:") or (dst / "copied").is_file()


def test_add_non_archive_is_copied(ctx: Path, dst: Path) -> None:
    (ctx / "fake.tar.gz").write_bytes(b"\x1f\x8bnot really gzip")
    got = run(ctx, dst, ["fake.tar.gz", "a.txt"], "/d/", is_add=True)
    assert (dst / "d" / "fake.tar.gz").read_bytes() == b"\x1f\x8bnot really gzip"
    assert got["d/a.txt"] == "f:A"


def test_add_corrupt_archive_is_a_clear_error(ctx: Path, dst: Path) -> None:
    data = gzip.compress(_tar_bytes({"a": b"x" * 1000, "big": os.urandom(300_000)}))
    (ctx / "broken.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ContextError, match=r"broken\.tar\.gz: corrupt"):
        run(ctx, dst, ["broken.tar.gz"], "/x/", is_add=True)


def test_add_archive_cannot_escape(ctx: Path, dst: Path, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("evil")
        link.type = tarfile.SYMTYPE
        link.linkname = str(tmp_path)
        tar.addfile(link)
        for name in ("../../escaped", "evil/escaped2", "/abs-escape"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"!"))
    (ctx / "evil.tar").write_bytes(buf.getvalue())
    # The safe applier either refuses the entry or keeps it inside; never writes outside.
    try:
        run(ctx, dst, ["evil.tar"], "/x/", is_add=True)
    except ContextError as err:
        assert "evil.tar" in str(err)
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "escaped2").exists()
    assert not (tmp_path.parent / "escaped").exists()


# ---- chown / chmod parsing --------------------------------------------------------------


def test_resolve_chown(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
    )
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\napp:x:1001:\n")
    assert resolve_chown("app", tmp_path) == (1000, 1001)
    assert resolve_chown("app:staff", tmp_path) == (1000, 50)
    assert resolve_chown("42", tmp_path) == (42, 42)
    assert resolve_chown("42:7", tmp_path) == (42, 7)
    assert resolve_chown("0:staff", tmp_path) == (0, 50)
    with pytest.raises(ContextError, match="nobody"):
        resolve_chown("nobody", tmp_path)
    with pytest.raises(ContextError, match="wheel"):
        resolve_chown("app:wheel", tmp_path)
    with pytest.raises(ContextError, match="ghost"):
        resolve_chown("ghost", tmp_path / "no-such-rootfs")


@pytest.mark.parametrize(
    ("spec", "mode", "is_dir", "expected"),
    [
        ("755", 0o644, False, 0o755),
        ("0644", 0o4755, False, 0o4644),
        ("4755", 0o644, False, 0o4755),
        ("u+x", 0o644, False, 0o744),
        ("go-r", 0o644, False, 0o600),
        ("a+X", 0o644, True, 0o755),
        ("a+X", 0o644, False, 0o644),
        ("u=rw,go=r", 0o777, False, 0o644),
        ("+x", 0o600, False, 0o711),
    ],
)
def test_parse_chmod(spec: str, mode: int, is_dir: bool, expected: int) -> None:
    assert parse_chmod(spec).apply(mode, is_dir) == expected


@pytest.mark.parametrize("bad", ["99", "u+q", "x+r", "", "77777"])
def test_parse_chmod_rejects(bad: str) -> None:
    with pytest.raises(ContextError):
        parse_chmod(bad)


@pytest.mark.parametrize(
    ("dest", "workdir", "expected"),
    [
        ("/abs", "/w", "/abs"),
        ("rel", "/w", "/w/rel"),
        ("rel/", "/w", "/w/rel/"),
        (".", "/w", "/w/"),
        ("./", "/", "/"),
        ("../up", "/w/x", "/w/up"),
        ("sub/.", "/w", "/w/sub/"),
    ],
)
def test_resolve_dest(dest: str, workdir: str, expected: str) -> None:
    assert resolve_dest(dest, workdir) == expected


def test_parents_apply_the_source_directories_metadata(ctx: Path, dst: Path) -> None:
    (ctx / "x" / "y").mkdir(parents=True)
    (ctx / "x" / "y" / "f.txt").write_text("F")
    os.chmod(ctx / "x", 0o750)
    os.chmod(ctx / "x" / "y", 0o701)
    run(ctx, dst, ["x/y/f.txt"], "/p/", parents=True)
    assert stat.S_IMODE(os.stat(dst / "p" / "x").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(dst / "p" / "x" / "y").st_mode) == 0o701


def test_parents_stay_in_both_roots(ctx: Path, dst: Path, tmp_path: Path) -> None:
    """A symlink among the source's parents is followed within the context (its metadata
    is the context directory's, never the host's), and one at the destination within the
    image: nothing is written outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (ctx / "etc").mkdir()
    os.chmod(ctx / "etc", 0o710)
    (ctx / "etc" / "f").write_text("F")
    (ctx / "link").symlink_to("/etc")  # the host's /etc if followed outside the context
    (dst / "p").mkdir()
    (dst / "p" / "link").symlink_to(str(outside))  # the host's tmp dir, followed outside
    run(ctx, dst, ["link/f"], "/p/", parents=True)
    assert list(outside.iterdir()) == []
    inside = dst / str(outside).lstrip("/")
    assert (inside / "f").read_text() == "F"
    assert stat.S_IMODE(os.stat(inside).st_mode) == 0o710  # made by the copy, from ctx/etc
