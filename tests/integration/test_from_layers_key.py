"""FROM keys the base's layers, not its config (FINDINGS cache-table-1, as BuildKit's image
source): a base with the same layers and another config (a label, another import time) keeps
every step, and the image takes the new base's config; a config field a step reads (Env,
User, WorkingDir, ...) is in that step's own key, so changing it misses. Each image equals a
``--no-cache`` build in a fresh store (same id, SOURCE_DATE_EPOCH)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from test_build_support import build, dockyard_cli, flatten, fresh_store, needs_runtime, write_tree

from bases import busybox_rootfs_tar
from dockyard.store.db import Store

pytestmark = needs_runtime

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}


def _import(root: Path, name: str, *changes: str) -> str:
    flags = [arg for change in changes for arg in ("--change", change)]
    done = subprocess.run([*dockyard_cli(), "--root", str(root), "import", *flags,
                           str(busybox_rootfs_tar()), name],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def _fresh_id(tmp: Path, ctx: Path, *changes: str) -> str:
    root = fresh_store(tmp)
    try:
        _import(root, "base:x", *changes)
        return build(ctx, root, tags=["fresh"], no_cache=True, build_args=SDE).result.image_id
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_base_with_the_same_layers_keeps_every_step(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM base:x\nCOPY f /f\nRUN echo \"flavour=$FLAVOUR\" > /out\n",
        "f": "file\n",
    })
    _import(root, "base:x")
    build(ctx, root, tags=["t"], build_args=SDE)
    # the same rootfs imported again (another time, so another image id) with a label
    _import(root, "base:x", "LABEL org.example.rebuilt=yes")
    second = build(ctx, root, tags=["t"], build_args=SDE)
    assert second.result.cached_all
    with Store.open(root) as store:
        config = store.read_config(store.get_image("t")).to_dict()
    assert config["config"]["Labels"] == {"org.example.rebuilt": "yes"}
    assert second.result.image_id == _fresh_id(tmp_path / "f1", ctx,
                                               "LABEL org.example.rebuilt=yes")
    # a config field the RUN reads: its own key misses, the COPY before it hits
    _import(root, "base:x", "ENV FLAVOUR=mint")
    third = build(ctx, root, tags=["t"], build_args=SDE)
    assert third.step(2).cached and not third.step(3).cached
    assert (flatten(root, "t", tmp_path / "out") / "out").read_text() == "flavour=mint\n"
    assert third.result.image_id == _fresh_id(tmp_path / "f2", ctx, "ENV FLAVOUR=mint")
