"""Resolving an ADD'ed git URL's ref to a commit (``git ls-remote``, as BuildKit's git source
keys on it), on a local repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dockyard.context.fetch import fetch_git, resolve_git_ref
from dockyard.errors import ContextError

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=_ENV, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    (path / "f").write_text("one\n")
    _git(path, "add", "f")
    _git(path, "commit", "-q", "-m", "one")
    return path


def test_refs_resolve_to_commits(repo: Path) -> None:
    url = f"file://{repo}"
    one = _git(repo, "rev-parse", "HEAD")
    _git(repo, "tag", "-a", "-m", "annotated", "v1")
    _git(repo, "tag", "light")
    (repo / "f").write_text("two\n")
    _git(repo, "commit", "-q", "-am", "two")
    two = _git(repo, "rev-parse", "HEAD")
    assert resolve_git_ref(url) == two  # the remote's HEAD
    assert resolve_git_ref(f"{url}#main") == two
    assert resolve_git_ref(f"{url}#main:sub") == two
    assert resolve_git_ref(f"{url}#v1") == one  # an annotated tag: its commit, not the tag
    assert resolve_git_ref(f"{url}#light") == one
    assert resolve_git_ref(f"{url}#refs/tags/v1") == one
    assert resolve_git_ref(f"{url}#{one}") == one  # a commit id: no request
    assert resolve_git_ref(f"{url}#{one[:10]}") == one[:10]
    _git(repo, "branch", "v1", one)  # a branch and a tag of one name: the tag, as git
    (repo / "f").write_text("three\n")
    _git(repo, "commit", "-q", "-am", "three")
    _git(repo, "branch", "-f", "v1", "HEAD")
    assert resolve_git_ref(f"{url}#v1") == one


def test_missing_and_hostile_refs(repo: Path) -> None:
    with pytest.raises(ContextError, match="does not contain ref nope"):
        resolve_git_ref(f"file://{repo}#nope")
    with pytest.raises(ContextError, match="invalid git ref"):
        resolve_git_ref(f"file://{repo}#--upload-pack=touch /tmp/x")
    with pytest.raises(ContextError, match="failed to resolve"):
        resolve_git_ref(f"file://{repo}-missing#main")


def test_fetch_checks_out_the_commit_it_is_given(repo: Path, tmp_path: Path) -> None:
    url = f"file://{repo}#main"
    one = resolve_git_ref(url)
    (repo / "f").write_text("two\n")
    _git(repo, "commit", "-q", "-am", "two")  # the branch moved after the step was keyed
    tree = fetch_git(url, tmp_path / "out", commit=one)
    assert (tree / "f").read_text() == "one\n"
    assert not (tree / ".git").exists()
    with pytest.raises(ContextError, match="failed to"):
        fetch_git(url, tmp_path / "gone", commit="0" * 40)


def test_a_submodule_cannot_reach_the_host_through_the_file_protocol(
    repo: Path, tmp_path: Path
) -> None:
    """A fetched repository's submodule pointing at a local path is not cloned unless the
    remote itself is local (a file:// build context the user named)."""
    from dockyard.context import fetch

    done = fetch._git(["ls-remote", f"file://{repo}"])
    assert done.returncode != 0 and "not allowed" in done.stderr
    assert fetch._git(["ls-remote", f"file://{repo}"], local=True).returncode == 0
