"""A COPY that misses copies every file, also the ones its previous result already holds: a
snapshot shares no inode with another, so a later RUN sees the link counts a fresh build
gives (FINDINGS soundness-1: hard-linking unchanged files from the previous result showed
``st_nlink`` 2), and the layer is the one a build in a fresh store makes."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_build_support import BASE, build, flatten, fresh_store, write_tree

from dockyard.store.db import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (mounts)")

DOCKERFILE = f"""\
FROM {BASE}
RUN mkdir -p /app/tree && echo base > /app/tree/overwritten.txt
COPY tree/ /app/tree/
COPY --chmod=0640 tree/ /app/chmodded/
"""


def _files(n: int) -> dict[str, str]:
    files = {f"tree/d{i % 4}/f{i:03d}.txt": f"file {i}\n" for i in range(n)}
    files["tree/overwritten.txt"] = "from the context\n"
    files["tree/empty.txt"] = ""
    return files


def _layers(root: Path, tag: str) -> list[str]:
    store = Store.open(root)
    try:
        return list(store.read_config(store.get_image(tag)).diff_ids)
    finally:
        store.close()


def _snapshot_file(root: Path, name: str) -> list[os.stat_result]:
    """Every copy of ``name`` among the store's snapshot directories."""
    return [os.stat(p) for p in (root / "snapshots").rglob(name) if p.is_file()]


SDE = {"SOURCE_DATE_EPOCH": "1700000000"}  # directory times are then reproducible too


def _fresh(tmp: Path, ctx: Path, **kwargs: Any) -> tuple[list[str], dict[str, tuple[Any, ...]]]:
    """Diff ids and files of the same build in a fresh store."""
    root = fresh_store(tmp / "fresh-store")
    try:
        build(ctx, root, tags=["app:fresh"], **kwargs)
        return _layers(root, "app:fresh"), _tree(root, "app:fresh", tmp / "fresh-tree")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _tree(root: Path, tag: str, dest: Path) -> dict[str, tuple[Any, ...]]:
    """Every regular file below /app of the image: mode, owner, size, sha256, mtime."""
    flatten(root, tag, dest)
    out: dict[str, tuple[Any, ...]] = {}
    for path in (dest / "app").rglob("*"):
        st = path.lstat()
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(dest))] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_size,
                hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


def test_a_rebuilt_copy_shares_no_inode_and_equals_a_fresh_build(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, **_files(60)})
    build(ctx, root, tags=["app:1"], build_args=SDE)

    (ctx / "tree/d1/f001.txt").write_text("changed content\n")        # content
    (ctx / "tree/d2/f002.txt").chmod(0o600)                            # mode
    os.utime(ctx / "tree/d3/f003.txt", (1_000_000_000, 1_000_000_000))  # mtime only
    (ctx / "tree/d0/new.txt").write_text("added\n")                    # added
    (ctx / "tree/d0/f004.txt").unlink()                                # removed
    second = build(ctx, root, tags=["app:2"], build_args=SDE)
    assert [s.cached for s in second.steps] == [True, False, False]

    # an unchanged file has one copy per COPY result (two builds x two steps), one name each
    copies = _snapshot_file(root, "f010.txt")
    assert len(copies) == 4 and all(st.st_nlink == 1 for st in copies)
    assert len({(st.st_dev, st.st_ino) for st in copies}) == 4
    assert _layers(root, "app:2") == _fresh(tmp_path, ctx, build_args=SDE)[0]


def test_times_are_the_sources_without_source_date_epoch(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, **_files(30)})
    build(ctx, root, tags=["app:1"])
    os.utime(ctx / "tree/d3/f003.txt", (1_000_000_000, 1_000_000_000))  # mtime only
    (ctx / "tree/d1/f001.txt").write_text("changed content\n")
    build(ctx, root, tags=["app:2"])
    tree = _tree(root, "app:2", tmp_path / "tree")
    assert tree["app/tree/d3/f003.txt"][5] == 1_000_000_000 * 10**9
    assert tree == _fresh(tmp_path, ctx)[1]


def test_the_previous_snapshot_is_never_changed(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, **_files(20)})
    build(ctx, root, tags=["app:1"])
    first = _layers(root, "app:1")
    (ctx / "tree/d1/f001.txt").write_text("changed content\n")
    build(ctx, root, tags=["app:2"])
    # the first image's layers are still what they were: regenerate them from the snapshots
    store = Store.open(root)
    try:
        for diff_id in first:
            store.ensure_layer_blob(diff_id)  # checks the bytes against the diff id
    finally:
        store.close()
