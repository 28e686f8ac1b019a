"""The direct copy's bookkeeping without overlay: with the target itself as the "upper dir",
the copy made now plus the part left for later must be the tree a copy in one go makes
(entries, modes, times, contents, link targets), whatever is left for later, and an error
must be the same error. (Overlay itself: tests/integration/test_copy_direct.py.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.context.copy import copy_into
from dockyard.errors import ContextError

SOURCE_NS = 1_600_000_000_000_000_000
NAMES = st.sampled_from(["a", "b", "c", "sub"])
TREES = st.dictionaries(
    st.lists(NAMES, min_size=1, max_size=4).map("/".join),
    st.sampled_from(["file", "dir", "link", "exec"]),
    min_size=1, max_size=12,
)


def _make(root: Path, tree: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, kind in sorted(tree.items()):
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                path.mkdir(exist_ok=True)
                os.chmod(path, 0o750)
            elif kind == "link":
                os.symlink("../a", path)
            else:
                path.write_text(rel)
                os.chmod(path, 0o755 if kind == "exec" else 0o640)
            os.utime(path, ns=(SOURCE_NS, SOURCE_NS), follow_symlinks=False)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue
    for dirpath, _, _ in os.walk(root, topdown=False):  # the parents mkdir made too
        os.utime(dirpath, ns=(SOURCE_NS, SOURCE_NS))


def _snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            rel = os.path.relpath(path, root)
            extra: Any = None
            if stat.S_ISLNK(st_.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISREG(st_.st_mode):
                extra = Path(path).read_bytes()
            # a directory the copy writes into without making it has the time of the copy
            mtime = st_.st_mtime_ns if st_.st_mtime_ns == SOURCE_NS else "now"
            out[rel] = (st_.st_mode, st_.st_size, mtime, extra)
    return out


def _copy(src: Path, target: Path, dest: str, direct: bool) -> tuple[dict[str, Any], str | None]:
    target.mkdir()
    (target / "dst").mkdir()
    (target / "dst" / "a").mkdir()  # there before: entries below it go through the "mount"
    os.utime(target / "dst", ns=(0, 0))
    try:
        rest = copy_into(src.parent, [src.name + "/"], dest, target, workdir="/", chown=None,
                         chmod=None, parents=False, excludes=(), is_add=False, ignore=None,
                         upper_dir=target if direct else None)
        if rest is not None:
            assert direct
            rest()
    except ContextError as err:
        return {}, str(err)
    return _snapshot(target), None


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=TREES, dest=st.sampled_from(["/dst/", "/dst/new/", "/dst/a/"]))
def test_the_part_left_for_later_completes_the_same_tree(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[str, str], dest: str,
) -> None:
    tmp = tmp_path_factory.mktemp("direct")
    _make(tmp / "src", tree)
    assert _copy(tmp / "src", tmp / "direct", dest, True) == \
        _copy(tmp / "src", tmp / "plain", dest, False)


def test_something_is_left_for_later_only_below_new_directories(tmp_path: Path) -> None:
    _make(tmp_path / "src", {"a/x": "file", "new/y": "file", "new/deeper/z": "exec",
                             "top": "file"})
    target = tmp_path / "t"
    target.mkdir()
    (target / "a").mkdir()
    rest = copy_into(tmp_path, ["src/"], "/", target, workdir="/", chown=None, chmod=None,
                     parents=False, excludes=(), is_add=False, ignore=None,
                     upper_dir=target)
    assert rest is not None
    # now: what lands in directories that were there, and the new directory itself
    assert (target / "a/x").exists() and (target / "top").exists()
    assert (target / "new").is_dir() and not (target / "new/y").exists()
    rest()
    assert (target / "new/y").read_text() == "new/y"
    assert (target / "new/deeper/z").read_text() == "new/deeper/z"
    assert os.lstat(target / "new").st_mtime_ns == SOURCE_NS


def test_nothing_is_left_for_later_with_two_sources_or_hard_links(tmp_path: Path) -> None:
    _make(tmp_path / "src", {"new/y": "file"})
    _make(tmp_path / "src2", {"z": "file"})
    for n, sources in enumerate((["src/", "src2/"], ["src/"])):
        if n == 1:
            os.link(tmp_path / "src/new/y", tmp_path / "src/new/y2")
        target = tmp_path / f"t{n}"
        target.mkdir()
        rest = copy_into(tmp_path, sources, "/", target, workdir="/", chown=None, chmod=None,
                         parents=False, excludes=(), is_add=False, ignore=None,
                         upper_dir=target)
        assert rest is None
        assert (target / "new/y").exists()
