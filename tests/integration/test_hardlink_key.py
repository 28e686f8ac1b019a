"""Hard links are in the COPY key (FINDINGS soundness-2): a COPY keeps the hard links among
the files it copies, so splitting a pair into two files with the same bytes (or joining two
such files) changes the layer, and must miss. Each case builds, changes the input, builds
again in the same store and compares the image with a ``--no-cache`` build of the new inputs
in a fresh store (with SOURCE_DATE_EPOCH: the same image id), for the build context,
``COPY --from=<stage>`` and ``COPY --from=<image>``."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from test_build_support import build, fresh_store, needs_runtime, write_tree

from dockyard.store.db import Store

pytestmark = needs_runtime

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}


def _split(path: Path) -> None:
    """``path`` made a file of its own: same bytes, same mode, a new inode."""
    new = path.with_name(path.name + ".new")
    shutil.copy2(path, new)
    os.replace(new, path)


def _join(path: Path, other: Path) -> None:
    """``path`` made a hard link of ``other`` (which has the same bytes and mode)."""
    path.unlink()
    os.link(other, path)


def _hardlinks(root: Path, image: str) -> dict[str, str]:
    """``name -> link target`` of every hard link entry in the image's last layer."""
    with Store.open(root) as store:
        diff_id = store.read_config(store.get_image(image)).diff_ids[-1]
        store.ensure_layer_blob(diff_id)
    blob = root / "blobs" / "sha256" / diff_id.removeprefix("sha256:")
    with tarfile.open(blob) as tf:
        return {m.name: m.linkname for m in tf.getmembers() if m.islnk()}


def _fresh_id(tmp: Path, ctx: Path, **kwargs: object) -> tuple[str, dict[str, str]]:
    """Image id and hard links of a --no-cache build of ``ctx`` in a fresh store."""
    root = fresh_store(tmp)
    try:
        before = kwargs.pop("before", None)
        if callable(before):
            before(root)
        result = build(ctx, root, tags=["fresh"], no_cache=True, **kwargs).result
        return result.image_id, _hardlinks(root, "fresh")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_context_split_and_join(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY app/ /app/\n",
                                        "app/a": "same\n", "app/c": "same\n"})
    os.link(ctx / "app/a", ctx / "app/b")
    first = build(ctx, root, tags=["t"], build_args=SDE)
    assert _hardlinks(root, "t") == {"app/b": "app/a"}

    _split(ctx / "app/b")
    second = build(ctx, root, tags=["t"], build_args=SDE)
    step = second.step(2)
    assert not step.cached
    assert "app/b (no longer a hard link of app/a)" in (step.reason or "")
    assert _hardlinks(root, "t") == {}
    assert (second.result.image_id, {}) == _fresh_id(tmp_path / "f1", ctx, build_args=SDE)

    _join(ctx / "app/c", ctx / "app/a")  # c joins a's inode: a and c are one file now
    third = build(ctx, root, tags=["t"], build_args=SDE)
    assert not third.step(2).cached
    assert _hardlinks(root, "t") == {"app/c": "app/a"}
    assert (third.result.image_id, {"app/c": "app/a"}) == _fresh_id(
        tmp_path / "f2", ctx, build_args=SDE)
    assert third.result.image_id != first.result.image_id


STAGE = """\
FROM busybox AS src
ARG LINK
RUN mkdir /tree && echo same > /tree/a \\
 && if [ "$LINK" = 1 ]; then ln /tree/a /tree/b; else cp /tree/a /tree/b; fi
FROM busybox
COPY --from=src /tree/ /app/
"""


def test_copy_from_a_stage(tmp_path: Path) -> None:
    """The stage's layer differs, its files have the same bytes: the COPY --from must miss."""
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": STAGE})
    for link, want in (("1", {"app/b": "app/a"}), ("0", {}), ("1", {"app/b": "app/a"})):
        built = build(ctx, root, tags=["t"], build_args={**SDE, "LINK": link})
        assert _hardlinks(root, "t") == want
        fresh = _fresh_id(tmp_path / f"fresh-{link}", ctx, build_args={**SDE, "LINK": link})
        assert (built.result.image_id, want) == fresh
    # the last build went back to a state built before: every step hits, same image
    assert built.result.cached_all


IMAGE = "FROM busybox\nCOPY --from=src:img /tree/ /app/\n"


def test_copy_from_an_image(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    src = write_tree(tmp_path / "src", {"Dockerfile": STAGE.split("FROM busybox\n")[0]})
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": IMAGE})

    def tag_source(link: str) -> object:
        def make(store_root: Path) -> None:
            build(src, store_root, tags=["src:img"], build_args={**SDE, "LINK": link})
        return make

    tag_source("1")(root)
    build(ctx, root, tags=["t"], build_args=SDE)
    assert _hardlinks(root, "t") == {"app/b": "app/a"}
    tag_source("0")(root)  # src:img now names an image whose /tree/b is a file of its own
    second = build(ctx, root, tags=["t"], build_args=SDE)
    assert not second.step(2).cached
    assert _hardlinks(root, "t") == {}
    assert (second.result.image_id, {}) == _fresh_id(
        tmp_path / "fresh", ctx, build_args=SDE, before=tag_source("0"))


def test_a_source_selected_twice(tmp_path: Path) -> None:
    """A hard-linked file copied twice onto the same path is copied again (it used to be
    linked to itself, which failed)."""
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY app/ app/ /x/\n",
                                        "app/a": "same\n"})
    os.link(ctx / "app/a", ctx / "app/b")
    built = build(ctx, root, tags=["t"], build_args=SDE)
    assert _hardlinks(root, "t") == {"x/b": "x/a"}
    assert (built.result.image_id, {"x/b": "x/a"}) == _fresh_id(
        tmp_path / "fresh", ctx, build_args=SDE)
