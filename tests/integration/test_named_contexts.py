"""Named build contexts (``--build-context NAME=...``) as BuildKit has them: the name means the
context wherever a stage or an image could be named (``FROM``, ``COPY --from``, ``RUN --mount
from=``); a stage of the same name is replaced by the context (its instructions never run);
``FROM <directory context>`` starts the stage with the directory's files. Every use is keyed
by content: each change below is compared with a ``--no-cache`` build of the new inputs in a
fresh store (SOURCE_DATE_EPOCH: the same image id)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from test_build_support import build, flatten, fresh_store, needs_runtime, write_tree

from dockyard.store.db import Store

pytestmark = needs_runtime

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}


def _fresh_id(tmp: Path, ctx: Path, **kwargs: Any) -> str:
    root = fresh_store(tmp)
    try:
        return build(ctx, root, tags=["fresh"], no_cache=True, build_args=SDE,
                     **kwargs).result.image_id
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _ran(built: Any, text: str) -> bool:
    return any(text in s.display for s in built.steps)


def test_a_named_context_wins_over_a_stage(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    data = write_tree(tmp_path / "data", {"f": "context\n"})
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox AS src\n"
                      "RUN echo stage > /f\n"
                      "FROM busybox\n"
                      "COPY --from=src /f /copied\n"
                      "RUN --mount=type=bind,from=SRC,target=/m cat /m/f > /mounted\n",
    })
    plain = build(ctx, root, tags=["t"], build_args=SDE)
    assert (flatten(root, "t", tmp_path / "p") / "copied").read_text() == "stage\n"
    assert _ran(plain, "echo stage")
    contexts = {"Src": str(data)}  # names are case-insensitive, as stage names
    built = build(ctx, root, tags=["t"], build_args=SDE, build_contexts=contexts)
    out = flatten(root, "t", tmp_path / "a")
    assert (out / "copied").read_text() == (out / "mounted").read_text() == "context\n"
    assert not _ran(built, "echo stage"), "the replaced stage's instructions ran"
    # keyed by content: a same-size edit misses and gives what a fresh build gives
    (data / "f").write_text("CONTEXT\n")
    second = build(ctx, root, tags=["t"], build_args=SDE, build_contexts=contexts)
    assert [s.cached for s in second.steps] == [False, False]
    assert (flatten(root, "t", tmp_path / "b") / "mounted").read_text() == "CONTEXT\n"
    assert second.result.image_id == _fresh_id(tmp_path / "fresh", ctx,
                                               build_contexts=contexts)
    # the same content elsewhere hits every step
    moved = write_tree(tmp_path / "moved", {"f": "CONTEXT\n"})
    assert build(ctx, root, tags=["t"], build_args=SDE,
                 build_contexts={"src": str(moved)}).result.cached_all


def test_from_a_named_directory_context(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    data = write_tree(tmp_path / "data", {"etc/app.conf": "a=1\n", "bin/tool": "#!/x\n"})
    os.chmod(data / "bin" / "tool", 0o755)
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM scratch AS rootfs\n"
                      "COPY never /never\n"
                      "FROM rootfs\n"
                      "COPY extra /extra\n",
        "extra": "x\n",
    })
    contexts = {"rootfs": str(data)}
    built = build(ctx, root, tags=["t"], build_args=SDE, build_contexts=contexts)
    out = flatten(root, "t", tmp_path / "a")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["bin/tool", "etc/app.conf", "extra"]
    st = os.lstat(out / "bin" / "tool")
    assert stat.S_IMODE(st.st_mode) == 0o755
    with Store.open(root) as store:
        config = store.read_config(store.get_image("t")).to_dict()
    # BuildKit's empty image config: PATH and WorkingDir /
    assert config["config"]["WorkingDir"] == "/"
    assert config["config"]["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert len(config["rootfs"]["diff_ids"]) == 2
    assert built.result.image_id == _fresh_id(tmp_path / "f1", ctx, build_contexts=contexts)
    # a mode change in the context misses (the files are keyed by content and metadata)
    os.chmod(data / "etc" / "app.conf", 0o600)
    second = build(ctx, root, tags=["t"], build_args=SDE, build_contexts=contexts)
    assert not second.result.cached_all
    assert stat.S_IMODE(os.lstat(flatten(root, "t", tmp_path / "b") / "etc" / "app.conf")
                        .st_mode) == 0o600
    assert second.result.image_id == _fresh_id(tmp_path / "f2", ctx, build_contexts=contexts)


def test_a_named_image_context_replaces_a_stage(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM scratch AS base\n"
                      "COPY never /never\n"
                      "FROM base\n"
                      "RUN ls / > /ls\n",
    })
    source = write_tree(tmp_path / "source", {"Dockerfile": "FROM busybox\nRUN echo 1 > /v\n"})
    build(source, root, tags=["src:img"], build_args=SDE)
    contexts = {"base": "docker-image://src:img"}
    first = build(ctx, root, tags=["t"], build_args=SDE, build_contexts=contexts)
    listing = (flatten(root, "t", tmp_path / "a") / "ls").read_text().split()
    assert "v" in listing and "never" not in listing
    # the context's image re-tagged: keyed by the image, not by its name
    (source / "Dockerfile").write_text("FROM busybox\nRUN echo 2 > /w\n")
    build(source, root, tags=["src:img"], build_args=SDE)
    second = build(ctx, root, tags=["t"], build_args=SDE, build_contexts=contexts)
    assert not second.step(4).cached
    assert "w" in (flatten(root, "t", tmp_path / "b") / "ls").read_text().split()
    assert first.result.image_id != second.result.image_id
    # the replaced stage as the target is the context's image, layer for layer
    target = build(ctx, root, tags=["base"], build_args=SDE, build_contexts=contexts,
                   target="base")
    with Store.open(root) as store:
        got = store.read_config(store.get_image(target.result.image_id)).diff_ids
        want = store.read_config(store.get_image("src:img")).diff_ids
    assert got == want
