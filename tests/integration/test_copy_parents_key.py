"""``COPY --parents`` recreates the source's parent directories with their metadata (mode,
owner, xattrs), and its key holds exactly that: a chmod of such a directory misses, and the
image equals a ``--no-cache`` build of the new inputs in a fresh store (with
SOURCE_DATE_EPOCH: the same image id). From the build context and from a stage. And the copy
stays inside both roots: a symlink among the destination's parents (from the base image) is
followed within the image, never onto the host."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

from test_build_support import build, flatten, fresh_store, needs_runtime, write_tree

pytestmark = needs_runtime

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}


def _fresh_id(tmp: Path, ctx: Path, **kwargs: object) -> str:
    root = fresh_store(tmp)
    try:
        return build(ctx, root, tags=["fresh"], no_cache=True, **kwargs).result.image_id
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _mode(root: Path, tag: str, path: str, dest: Path) -> int:
    return stat.S_IMODE(os.lstat(flatten(root, tag, dest) / path).st_mode)


def test_a_parent_directory_chmod_misses(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY --parents src/./pkg/lib/*.py /app/\n",
        "src/pkg/lib/m.py": "print(1)\n",
    })
    for d in ("src", "src/pkg", "src/pkg/lib"):
        os.chmod(ctx / d, 0o755)
    build(ctx, root, tags=["t"], build_args=SDE)
    assert _mode(root, "t", "app/pkg/lib", tmp_path / "one") == 0o755

    os.chmod(ctx / "src/pkg/lib", 0o750)
    second = build(ctx, root, tags=["t"], build_args=SDE)
    assert not second.step(2).cached
    assert "pkg/lib (mode 755 -> 750)" in (second.step(2).reason or "")
    assert _mode(root, "t", "app/pkg/lib", tmp_path / "two") == 0o750
    assert second.result.image_id == _fresh_id(tmp_path / "f1", ctx, build_args=SDE)

    os.chmod(ctx / "src", 0o700)  # above the pivot: not copied, the step hits
    third = build(ctx, root, tags=["t"], build_args=SDE)
    assert third.step(2).cached
    assert third.result.image_id == second.result.image_id


STAGE = """\
FROM busybox AS src
ARG MODE
RUN mkdir -p /tree/a/b && echo x > /tree/a/b/f && chmod "$MODE" /tree/a
FROM busybox
COPY --from=src --parents /tree/./a/b/f /app/
"""


def test_from_a_stage(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": STAGE})
    for mode in ("755", "711", "755"):
        built = build(ctx, root, tags=["t"], build_args={**SDE, "MODE": mode})
        assert not built.step(5).cached or (mode == "755" and built.result.cached_all)
        assert _mode(root, "t", "app/a", tmp_path / f"t-{mode}") == int(mode, 8)
        assert built.result.image_id == _fresh_id(
            tmp_path / f"fresh-{mode}", ctx, build_args={**SDE, "MODE": mode})


def test_a_symlinked_destination_parent_stays_in_the_image(tmp_path: Path) -> None:
    """The base image makes /x/a a symlink to an absolute path that exists on the host: the
    copy writes below that path inside the image (as BuildKit resolves it), never on the
    host (it did, through the unscoped join of --parents' directories)."""
    host = Path("/tmp") / f"dockyard-parents-{uuid.uuid4().hex[:8]}"
    host.mkdir()
    try:
        root = fresh_store(tmp_path / "store")
        ctx = write_tree(tmp_path / "ctx", {
            "Dockerfile": f"FROM busybox\nRUN mkdir /x && ln -s {host} /x/a\n"
                          "COPY --parents a/f /x/\n",
            "a/f": "payload\n",
        })
        build(ctx, root, tags=["t"])
        assert list(host.iterdir()) == []
        tree = flatten(root, "t", tmp_path / "tree")
        assert (tree / str(host).lstrip("/") / "f").read_text() == "payload\n"
        assert os.readlink(tree / "x" / "a") == str(host)
    finally:
        shutil.rmtree(host, ignore_errors=True)
