"""COPY/ADD as root: ownership rules, ADD from a local HTTP server and a local git repo."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.context.copy import add_remote, copy_into, resolve_chown, write_heredocs
from dockyard.context.fetch import fetch_url, parse_git_url
from dockyard.errors import ContextError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership tests need root")


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "f").write_text("F")
    (root / "dir" / "sub" / "g").write_text("G")
    for path in (
        root / "dir",
        root / "dir" / "sub",
        root / "dir" / "f",
        root / "dir" / "sub" / "g",
    ):
        os.lchown(path, 1234, 5678)
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nweb:x:33:\nops:x:99:\n")
    return root


def _owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _copy(ctx: Path, rootfs: Path, dest: str, **kw: object) -> None:
    args: dict[str, object] = dict(
        workdir="/", chown=None, chmod=None, parents=False, excludes=(), is_add=False, ignore=None
    )
    args.update(kw)
    copy_into(ctx, ["dir"], dest, rootfs, **args)  # type: ignore[arg-type]


def test_local_context_files_become_root_owned(ctx: Path, rootfs: Path) -> None:
    _copy(ctx, rootfs, "/app/")
    assert _owner(rootfs / "app" / "f") == (0, 0)
    assert _owner(rootfs / "app" / "sub" / "g") == (0, 0)


def test_stage_files_keep_their_owner(ctx: Path, rootfs: Path) -> None:
    _copy(ctx, rootfs, "/app/", preserve_owner=True)
    assert _owner(rootfs / "app" / "f") == (1234, 5678)
    assert _owner(rootfs / "app" / "sub") == (1234, 5678)


def test_chown_applies_to_files_and_created_parents(ctx: Path, rootfs: Path) -> None:
    chown = resolve_chown("web:ops", rootfs)
    assert chown == (33, 99)
    _copy(ctx, rootfs, "/srv/www/app/", chown=chown)
    for rel in ("srv", "srv/www", "srv/www/app", "srv/www/app/f", "srv/www/app/sub/g"):
        assert _owner(rootfs / rel) == (33, 99), rel
    # an existing parent keeps its owner
    assert _owner(rootfs / "etc") == (0, 0)


def test_heredoc_chown(rootfs: Path) -> None:
    write_heredocs(
        [("run.sh", "#!/bin/sh\n")], "/opt/", rootfs, workdir="/", chown=(33, 33), chmod=0o755
    )
    assert _owner(rootfs / "opt" / "run.sh") == (33, 33)
    assert os.stat(rootfs / "opt" / "run.sh").st_mode & 0o777 == 0o755


def test_unknown_user_is_an_error(rootfs: Path) -> None:
    with pytest.raises(ContextError, match="nosuch"):
        resolve_chown("nosuch", rootfs)


# ---- ADD <url> --------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "www"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_add_url_with_checksum(server: tuple[str, Path], rootfs: Path, tmp_path: Path) -> None:
    base, served = server
    data = b"payload\n" * 1000
    (served / "tool.bin").write_bytes(data)
    os.utime(served / "tool.bin", (1_600_000_000, 1_600_000_000))
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    digest = add_remote(
        f"{base}/tool.bin",
        "/usr/local/bin/",
        rootfs,
        workdir="/",
        chown=None,
        chmod=None,
        checksum=good,
        keep_git_dir=False,
        tmpdir=tmp_path,
    )
    target = rootfs / "usr" / "local" / "bin" / "tool.bin"
    assert digest == good and target.read_bytes() == data
    assert target.stat().st_mode & 0o777 == 0o600  # Docker's mode for a URL source
    assert int(target.stat().st_mtime) == 1_600_000_000  # Last-Modified
    add_remote(
        f"{base}/tool.bin",
        "/renamed",
        rootfs,
        workdir="/",
        chown=(33, 33),
        chmod=0o755,
        checksum=None,
        keep_git_dir=False,
        tmpdir=tmp_path,
    )
    assert (rootfs / "renamed").read_bytes() == data
    assert _owner(rootfs / "renamed") == (33, 33)
    assert (rootfs / "renamed").stat().st_mode & 0o777 == 0o755


def test_add_url_bad_checksum_and_404(
    server: tuple[str, Path], rootfs: Path, tmp_path: Path
) -> None:
    base, served = server
    (served / "f").write_bytes(b"real")
    bad = "sha256:" + "0" * 64
    with pytest.raises(ContextError, match="digest mismatch"):
        add_remote(
            f"{base}/f",
            "/f",
            rootfs,
            workdir="/",
            chown=None,
            chmod=None,
            checksum=bad,
            keep_git_dir=False,
            tmpdir=tmp_path,
        )
    assert not (rootfs / "f").exists()
    with pytest.raises(ContextError, match="404"):
        fetch_url(f"{base}/missing", tmp_path)


def test_add_url_archive_is_not_unpacked(
    server: tuple[str, Path], rootfs: Path, tmp_path: Path
) -> None:
    base, served = server
    subprocess.run(["tar", "-czf", str(served / "a.tar.gz"), "-C", str(rootfs), "etc"], check=True)
    add_remote(
        f"{base}/a.tar.gz",
        "/dl/",
        rootfs,
        workdir="/",
        chown=None,
        chmod=None,
        checksum=None,
        keep_git_dir=False,
        tmpdir=tmp_path,
    )
    assert (rootfs / "dl" / "a.tar.gz").is_file()


# ---- ADD <git url> ----------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "README").write_text("v1\n")
    (repo / "sub" / "file").write_text("in sub\n")
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@e",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@e",
    )

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    git("tag", "v1")
    (repo / "README").write_text("v2\n")
    git("commit", "-q", "-am", "two")
    return repo


def test_add_git(repo: Path, rootfs: Path, tmp_path: Path) -> None:
    url = f"file://{repo}"
    add_remote(
        url,
        "/src/",
        rootfs,
        workdir="/",
        chown=None,
        chmod=None,
        checksum=None,
        keep_git_dir=False,
        tmpdir=tmp_path,
    )
    assert (rootfs / "src" / "README").read_text() == "v2\n"
    assert not (rootfs / "src" / ".git").exists()
    add_remote(
        f"{url}#v1:sub",
        "/old/",
        rootfs,
        workdir="/",
        chown=None,
        chmod=None,
        checksum=None,
        keep_git_dir=False,
        tmpdir=tmp_path,
    )
    assert (rootfs / "old" / "file").read_text() == "in sub\n"
    add_remote(
        f"{url}#v1",
        "/kept/",
        rootfs,
        workdir="/",
        chown=None,
        chmod=None,
        checksum=None,
        keep_git_dir=True,
        tmpdir=tmp_path,
    )
    assert (rootfs / "kept" / "README").read_text() == "v1\n"
    assert (rootfs / "kept" / ".git").is_dir()


def test_git_url_parsing() -> None:
    ref = parse_git_url("https://github.com/moby/buildkit.git#v0.12:frontend")
    assert (ref.remote, ref.ref, ref.subdir) == (
        "https://github.com/moby/buildkit.git",
        "v0.12",
        "frontend",
    )
    assert parse_git_url("git@github.com:a/b.git").ref is None
