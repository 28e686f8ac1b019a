"""Opening build contexts: directory, tarball, stdin tar, stdin Dockerfile, -f -, named."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from dockyard.context.context import BuildContext, open_named_contexts
from dockyard.errors import ContextError, UsageError


def _make_dir(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (root / "src" / "a").write_text("a")
    (root / ".dockerignore").write_text("Dockerfile\n*.log\n")
    (root / "x.log").write_text("log")
    return root


def _tar_of(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buf.getvalue()


def test_directory_is_used_in_place(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "ctx")
    ctx = BuildContext.open(str(root), dockerfile=None, tmpdir=tmp_path / "tmp")
    assert ctx.root == root.resolve()
    assert ctx.dockerfile_text == "FROM scratch\nCOPY . /\n"  # readable though ignored
    assert ctx.is_excluded("Dockerfile") and ctx.is_excluded("x.log")
    assert not ctx.is_excluded("src/a")
    assert not (tmp_path / "tmp").exists()


def test_tarball_context(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "ctx")
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(gzip.compress(_tar_of(root)))
    ctx = BuildContext.open(str(archive), dockerfile=None, tmpdir=tmp_path / "tmp")
    assert ctx.root.is_relative_to(tmp_path / "tmp")
    assert (ctx.root / "src" / "a").read_text() == "a"
    assert ctx.dockerfile_text is not None and ctx.dockerfile_text.startswith("FROM")
    assert ctx.is_excluded("x.log")


def test_stdin_tar_and_stdin_dockerfile(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "ctx")
    ctx = BuildContext.open(
        "-", dockerfile=None, tmpdir=tmp_path / "t1", stdin=io.BytesIO(_tar_of(root))
    )
    assert (ctx.root / "src" / "a").read_text() == "a"
    plain = BuildContext.open(
        "-", dockerfile=None, tmpdir=tmp_path / "t2", stdin=io.BytesIO(b"FROM busybox\n")
    )
    assert plain.dockerfile_text == "FROM busybox\n"
    assert list(plain.root.iterdir()) == []


def test_dockerfile_from_stdin(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "ctx")
    ctx = BuildContext.open(
        str(root), dockerfile="-", tmpdir=tmp_path / "t", stdin=io.BytesIO(b"FROM alpine\n")
    )
    assert ctx.dockerfile_text == "FROM alpine\n"
    with pytest.raises(UsageError):
        BuildContext.open("-", dockerfile="-", tmpdir=tmp_path / "t", stdin=io.BytesIO(b""))


def test_dockerfile_specific_ignore(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "ctx")
    (root / "app.Dockerfile").write_text("FROM scratch\n")
    (root / "app.Dockerfile.dockerignore").write_text("src\n")
    ctx = BuildContext.open(str(root), dockerfile=str(root / "app.Dockerfile"), tmpdir=tmp_path)
    assert ctx.is_excluded("src/a") and not ctx.is_excluded("x.log")
    assert ctx.dockerfile_name == "app.Dockerfile"


def test_missing_things(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="not found"):
        BuildContext.open(str(tmp_path / "nope"), dockerfile=None, tmpdir=tmp_path / "t")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ContextError, match="Dockerfile"):
        BuildContext.open(str(tmp_path / "empty"), dockerfile=None, tmpdir=tmp_path / "t")
    (tmp_path / "notatar").write_text("hello")
    with pytest.raises(ContextError, match="not a directory or a tar"):
        BuildContext.open(str(tmp_path / "notatar"), dockerfile=None, tmpdir=tmp_path / "t")


def test_named_contexts(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "f").write_text("F")
    (other / ".dockerignore").write_text("secret\n")
    named = open_named_contexts(
        {"Deps": str(other), "img": "docker-image://alpine"}, tmpdir=tmp_path
    )
    assert set(named) == {"deps"}
    assert named["deps"].root == other.resolve() and named["deps"].is_excluded("secret")


def test_resolve_never_leaves_the_context(tmp_path: Path) -> None:
    root = _make_dir(tmp_path / "ctx")
    (root / "out").symlink_to("/etc")
    (root / "up").symlink_to("../..")
    ctx = BuildContext.open(str(root), dockerfile=None, tmpdir=tmp_path / "t")
    assert ctx.resolve("out/passwd") == ctx.root / "etc" / "passwd"
    assert ctx.resolve("up/x") == ctx.root / "x"


