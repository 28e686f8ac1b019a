"""``ADD <git URL>`` follows the server, as BuildKit's git source does: every build resolves
the ref (branch, tag, the remote's HEAD) to a commit with ``git ls-remote`` and keys the step
on that commit (and ``--keep-git-dir``), and the step checks out exactly that commit. A
repository served by ``git daemon`` on a loopback port moves its branch and its tag between
builds; each image is compared with a ``--no-cache`` build of the same state in a fresh store
(with SOURCE_DATE_EPOCH: the same image id)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_build_support import build, flatten, fresh_store, needs_runtime, write_tree

pytestmark = [
    needs_runtime,
    pytest.mark.skipif(shutil.which("git") is None, reason="needs git (apt-get install git)"),
]

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}
_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1"}


def _git(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *map(str, args)], cwd=cwd, env=_ENV, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


@dataclass
class Repo:
    """A working copy that pushes to the bare repository ``git daemon`` serves at ``url``."""

    work: Path
    url: str

    def commit(self, content: str) -> str:
        (self.work / "f").write_text(content)
        _git("add", "f", cwd=self.work)
        _git("commit", "-q", "-m", content, cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work)

    def push(self, *refspecs: str) -> None:
        _git("push", "-q", "--force", "origin", *refspecs, cwd=self.work)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    base = tmp_path / "served"
    base.mkdir()
    _git("init", "-q", "--bare", "-b", "main", base / "repo.git")
    work = tmp_path / "work"
    _git("init", "-q", "-b", "main", work)
    _git("remote", "add", "origin", base / "repo.git", cwd=work)
    port = _free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
         "--listen=127.0.0.1", f"--port={port}", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("git daemon did not start (is git's git-daemon installed?)")
                time.sleep(0.05)
        yield Repo(work, f"git://127.0.0.1:{port}/repo.git")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def _file(root: Path, tag: str, dest: Path, path: str = "src/f") -> str:
    return (flatten(root, tag, dest) / path).read_text()


def _fresh_id(tmp: Path, ctx: Path, **kwargs: object) -> str:
    root = fresh_store(tmp)
    try:
        return build(ctx, root, tags=["fresh"], no_cache=True, **kwargs).result.image_id
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_moved_branch_misses_and_a_kept_one_hits(repo: Repo, tmp_path: Path) -> None:
    one = repo.commit("one\n")
    repo.push("main")
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM busybox\nADD {repo.url}#main /src/\nRUN cat /src/f > /copy\n"})
    first = build(ctx, root, tags=["t"], build_args=SDE)
    assert _file(root, "t", tmp_path / "a") == "one\n"
    again = build(ctx, root, tags=["t"], build_args=SDE)
    assert again.result.cached_all and again.result.image_id == first.result.image_id

    repo.commit("two\n")
    repo.push("main")
    moved = build(ctx, root, tags=["t"], build_args=SDE)
    assert [s.cached for s in moved.steps] == [False, False]
    assert f"{repo.url}#main (content)" in (moved.step(2).reason or "")
    assert _file(root, "t", tmp_path / "b") == "two\n"
    assert _file(root, "t", tmp_path / "b2", "copy") == "two\n"
    assert moved.result.image_id == _fresh_id(tmp_path / "f1", ctx, build_args=SDE)

    repo.push(f"+{one}:refs/heads/main")  # the branch back on the first commit: built before
    back = build(ctx, root, tags=["t"], build_args=SDE)
    assert back.result.cached_all and back.result.image_id == first.result.image_id


def test_a_moved_tag_and_the_default_branch(repo: Repo, tmp_path: Path) -> None:
    repo.commit("one\n")
    _git("tag", "-a", "-m", "release", "v1", cwd=repo.work)
    repo.push("main", "v1")
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM busybox\nADD {repo.url}#v1 /src/\nADD {repo.url} /head/\n"})
    build(ctx, root, tags=["t"], build_args=SDE)
    assert _file(root, "t", tmp_path / "a") == "one\n"

    repo.commit("two\n")
    _git("tag", "-f", "-a", "-m", "moved", "v1", cwd=repo.work)
    repo.push("main", "v1")
    moved = build(ctx, root, tags=["t"], build_args=SDE)
    assert [s.cached for s in moved.steps] == [False, False]
    assert _file(root, "t", tmp_path / "b") == "two\n"
    assert _file(root, "t", tmp_path / "c", "head/f") == "two\n"
    assert moved.result.image_id == _fresh_id(tmp_path / "f1", ctx, build_args=SDE)


def test_keep_git_dir_is_in_the_key(repo: Repo, tmp_path: Path) -> None:
    commit = repo.commit("one\n")
    repo.push("main")
    root = fresh_store(tmp_path / "store")
    plain = write_tree(tmp_path / "plain", {
        "Dockerfile": f"FROM busybox\nADD {repo.url}#main /src/\n"})
    kept = write_tree(tmp_path / "kept", {
        "Dockerfile": f"FROM busybox\nADD --keep-git-dir=true {repo.url}#main /src/\n"})
    build(plain, root, tags=["plain"])
    assert not (flatten(root, "plain", tmp_path / "p") / "src" / ".git").exists()
    second = build(kept, root, tags=["kept"])
    assert not second.step(2).cached
    tree = flatten(root, "kept", tmp_path / "k")
    assert _git("--git-dir", tree / "src" / ".git", "rev-parse", "HEAD") == commit


def test_a_ref_that_looks_like_an_option_is_refused(repo: Repo, tmp_path: Path) -> None:
    from dockyard.errors import DockyardError

    repo.commit("one\n")
    repo.push("main")
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM busybox\nADD {repo.url}#--upload-pack=touch%20/x /src/\n"})
    with pytest.raises(DockyardError, match="invalid git ref"):
        build(ctx, root, tags=["t"])
