"""COPY on overlay writes what goes below the directories it makes straight into the upper
dir, after the unmount (``context/copy.py``, ``_copy_plan``). The layer, and what a later
RUN sees of it, must be what the copy through the mount gives and what the native
snapshotter gives: with ``SOURCE_DATE_EPOCH`` the diff ids are equal, for ordinary trees and
where the layers below show through (a lower file where the copy puts a directory and the
other way round, symlinked parents, a destination under a whiteout or in an opaque
directory); a build that fails fails alike. A rebuild after a change equals a fresh
``--no-cache`` build."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_build_support import BASE, build, fresh_store, needs_runtime, write_tree

import dockyard.context.copy as copy_module
from dockyard.errors import DockyardError
from dockyard.store.db import Store

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (mounts)"),
    needs_runtime,
]

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}
VARIANTS = ("direct", "mounted", "native")

# What a RUN after the copies sees: type+mode, owner, size, the link count of what is not
# a directory (overlay counts a merged directory's links as 1, the native snapshotter as
# they are), and for files and links their content or target (no times: a directory the
# copy writes into gets the time of the build, in every variant).
SEEN = (
    "RUN find /dst /new /srv /gone /opq /via /dangle /nowhere -xdev 2>/dev/null | sort |"
    " while read p; do if [ -d \"$p\" ] && [ ! -L \"$p\" ]; then stat -c '%n %f %u %g %s' \"$p\";"
    " else stat -c '%n %f %u %g %s %h' \"$p\"; fi; [ -f \"$p\" ] && [ ! -L \"$p\" ] &&"
    " md5sum \"$p\"; [ -L \"$p\" ] && readlink \"$p\"; done > /seen.txt; true"
)

LOWER = f"""\
FROM {BASE}
RUN mkdir -p /dst/keep /dst/sub /gone/a/b /opq/old /srv && echo lower > /dst/keep/f \\
 && echo lower > /dst/file-in-lower && mkdir /dst/dir-in-lower && echo x > /gone/a/b/f \\
 && echo o > /opq/old/f && chmod 2775 /dst/sub && chown 7:8 /dst/sub && ln -s /srv /via \\
 && ln -s /nowhere /dangle
RUN rm -rf /gone/a && rm -rf /opq && mkdir /opq
"""


@pytest.fixture
def direct_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the copies that wrote into an upper dir after the unmount."""
    runs: list[int] = []
    original = copy_module._Direct.run

    def counted(self: Any) -> None:
        runs.append(len(self.later))
        original(self)

    monkeypatch.setattr(copy_module._Direct, "run", counted)
    yield runs


def _build(tmp: Path, ctx: Path, variant: str, name: str, monkeypatch: pytest.MonkeyPatch,
           root: Path | None = None, **kwargs: Any) -> tuple[list[str], str | None]:
    """(diff ids, None) of the build of ``ctx`` in ``variant``, or ([], its error)."""
    root = root or fresh_store(tmp / f"store-{name}-{variant}")
    with monkeypatch.context() as patch:
        if variant == "mounted":  # the copy through the mount, as before
            patch.setattr(copy_module, "_shared_inodes", lambda walk: True)
        try:
            build(ctx, root, tags=[f"img:{name}"], build_args=SDE,
                  snapshotter="native" if variant == "native" else "overlay", **kwargs)
        except DockyardError as err:
            return [], str(err).split("\n")[0]
    store = Store.open(root)
    try:
        return list(store.read_config(store.get_image(f"img:{name}")).diff_ids), None
    finally:
        store.close()


def _all_alike(tmp: Path, ctx: Path, name: str,
               monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], str | None]:
    results = {v: _build(tmp, ctx, v, name, monkeypatch) for v in VARIANTS}
    assert results["direct"] == results["mounted"], results
    assert results["direct"] == results["native"], results
    for store in tmp.glob(f"store-{name}-*"):
        shutil.rmtree(store, ignore_errors=True)
    return results["direct"]


def _tree() -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {f"tree/d{i % 3}/f{i:02d}.txt": f"file {i}\n"
                                     for i in range(24)}
    files.update({"tree/top.txt": "top\n", "tree/keep/f": "from the context\n",
                  "tree/sub/deep/er/f": "deep\n", "tree/empty/.keep": ""})
    return files


def _decorate(ctx: Path) -> None:
    """Modes, a setgid directory, a symlink, a hard link, a fifo, xattrs."""
    tree = ctx / "tree"
    os.chmod(tree / "d1", 0o2750)
    os.chmod(tree / "d0/f00.txt", 0o4755)
    os.chmod(tree / "d2/f02.txt", 0o600)
    os.symlink("../top.txt", tree / "d0/link")
    os.mkfifo(tree / "sub/fifo")
    os.setxattr(tree / "d2/f05.txt", "user.note", b"x")
    os.setxattr(tree / "d2", "user.dir", b"y")


@pytest.mark.parametrize(("dest", "flags"), [
    ("/new/", ""),              # made by the copy: everything below it direct
    ("/new/", "--chown=5:6 "),
    ("/new/", "--chmod=0750 "),
    ("/new/deeper/", ""),       # its parent made too
    ("/dst/", ""),              # there in the lower: its new subdirectories direct
    ("/dst/", "--chown=5:6 "),
    ("/dst/sub/", ""),          # a setgid lower dir of another owner
    ("/gone/a/", ""),           # under a whiteout
    ("/gone/a/b/c/", ""),
    ("/opq/new/", ""),          # in an opaque dir
    ("/via/x/", ""),            # a symlinked parent (-> /srv)
    ("/dangle/y/", ""),         # a dangling symlinked parent (-> /nowhere)
    ("/", ""),                  # the root itself
    ("/new", ""),               # no trailing slash
])
def test_direct_copy_equals_the_mounted_and_the_native_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_runs: list[int], dest: str,
    flags: str,
) -> None:
    dockerfile = LOWER + f"COPY {flags}tree/ {dest}\n" + SEEN + "\n"
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": dockerfile, **_tree()})
    _decorate(ctx)
    _, error = _all_alike(tmp_path, ctx, "t", monkeypatch)
    assert error is None
    assert direct_runs and all(direct_runs), direct_runs


def test_hard_links_keep_the_copy_on_the_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_runs: list[int],
) -> None:
    """Two names of one inode in the tree: nothing is left for later (they must stay one
    inode in the layer, and one of them may be outside the new directories)."""
    dockerfile = LOWER + "COPY tree/ /dst/\n" + SEEN + "\n"
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": dockerfile, **_tree()})
    _decorate(ctx)
    os.link(ctx / "tree/d1/f01.txt", ctx / "tree/keep/hardlink")
    _, error = _all_alike(tmp_path, ctx, "h", monkeypatch)
    assert error is None
    assert direct_runs == []


@needs_runtime
@pytest.mark.parametrize("case", [
    # (the tree, the COPY): a lower file where the copy makes a directory, and the other way
    ({"tree/file-in-lower/x": "dir now\n"}, "COPY tree/ /dst/"),
    ({"tree/dir-in-lower": "file now\n"}, "COPY tree/ /dst/"),
    ({"tree/keep": "file over a lower dir\n"}, "COPY tree/ /dst/"),
    # inside a directory the copy makes: the same clashes between two sources
    ({"a/x/f": "dir\n", "b/x": "file\n"}, "COPY a/ b/ /new/"),
    ({"a/x": "file\n", "b/x/f": "dir\n"}, "COPY a/ b/ /new/"),
    ({"a/s/x": "in a dir\n", "b/s/x/y": "dir over file\n"}, "COPY a/ b/ /new/"),
    # the destination is a lower file, or a file through a symlink
    ({"tree/f": "x\n"}, "COPY tree/ /dst/file-in-lower/"),
    ({"tree/f": "x\n"}, "COPY tree/ /via/../dst/keep/f/"),
])
def test_clashes_with_the_lower_layers_fail_or_pass_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: tuple[dict[str, str], str],
) -> None:
    files, copy_line = case
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": LOWER + copy_line + "\n" + SEEN + "\n",
                                        **files})
    _all_alike(tmp_path, ctx, "c", monkeypatch)


def test_a_later_run_sees_the_direct_files_as_a_fresh_build_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_runs: list[int],
) -> None:
    """The direct upper dir becomes a lower: a RUN changes and removes files in it."""
    dockerfile = LOWER + (
        "COPY tree/ /new/\n"
        "RUN chmod 600 /new/d0/f03.txt && rm /new/d1/f01.txt && rm -r /new/d2"
        " && echo more >> /new/top.txt && ln /new/d0/f00.txt /new/d0/again\n" + SEEN + "\n")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": dockerfile, **_tree()})
    _, error = _all_alike(tmp_path, ctx, "r", monkeypatch)
    assert error is None and direct_runs


# ------------------------------------------------------------------ property: rebuilds

NAMES = st.sampled_from(["a", "b", "keep", "sub", "x"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
EDITS = st.lists(st.tuples(st.sampled_from(["write", "mkdir", "chmod", "remove", "link"]),
                           PATHS, st.integers(0, 3)), min_size=1, max_size=4)


def _apply(tree: Path, edits: list[tuple[str, str, int]]) -> None:
    for kind, rel, n in edits:
        path = tree / rel
        try:
            if kind == "write":
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.is_symlink():
                    path.unlink()
                path.write_text(f"{rel} {n}\n")
            elif kind == "mkdir":
                if path.is_symlink() or path.is_file():
                    path.unlink()
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "chmod" and path.exists():
                os.chmod(path, (0o755, 0o700, 0o2775, 0o644)[n])
            elif kind == "remove":
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
            elif kind == "link" and not path.exists() and not path.is_symlink():
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(("../a", "/srv", "x", "sub/x")[n], path)
        except (NotADirectoryError, FileExistsError, FileNotFoundError):
            continue  # an edit the tree's current shape does not allow: skipped


@needs_runtime
@settings(max_examples=int(os.environ.get("DIRECT_EXAMPLES", "5")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=EDITS, second=EDITS, dest=st.sampled_from(["/new/", "/dst/", "/gone/a/"]))
def test_a_rebuild_after_a_change_equals_a_fresh_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: list[tuple[str, str, int]],
    second: list[tuple[str, str, int]], dest: str,
) -> None:
    work = Path(os.path.join(tmp_path, os.urandom(4).hex()))
    ctx = write_tree(work / "ctx", {"Dockerfile": LOWER + f"COPY tree/ {dest}\n" + SEEN
                                    + "\n", **_tree()})
    _apply(ctx / "tree", first)
    store = fresh_store(work / "store")
    _build(work, ctx, "direct", "one", monkeypatch, root=store)
    _apply(ctx / "tree", second)
    rebuilt = _build(work, ctx, "direct", "two", monkeypatch, root=store)
    fresh = _build(work, ctx, "direct", "fresh", monkeypatch, no_cache=True)
    mounted = _build(work, ctx, "mounted", "fresh", monkeypatch, no_cache=True)
    assert rebuilt == fresh == mounted
    shutil.rmtree(work, ignore_errors=True)
