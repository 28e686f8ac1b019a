"""Context xattrs (FINDINGS cache-table-2): COPY keeps what a layer keeps (``user.*``,
``trusted.*``, ``security.capability``: file capabilities survive, as users of ``setcap``
expect; BuildKit 20.10 drops them all, docs/compat.md) and the key holds exactly that. An
attribute no layer keeps (overlayfs's ``trusted.overlay.*``, ``system.*`` ACLs) is neither
copied nor keyed: changing it hits, and it cannot make a copied directory opaque over the
base's. Each image is compared with a ``--no-cache`` build in a fresh store (same id with
SOURCE_DATE_EPOCH)."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from test_build_support import build, fresh_store, needs_runtime, write_tree

from dockyard.store.db import Store

pytestmark = needs_runtime

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}
# cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2)
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")


def _layer_xattrs(root: Path, image: str) -> dict[str, dict[str, str]]:
    """Path -> PAX xattrs of every entry of the image's layers that has some."""
    out: dict[str, dict[str, str]] = {}
    with Store.open(root) as store:
        for diff_id in store.read_config(store.get_image(image)).diff_ids:
            store.ensure_layer_blob(diff_id)
            blob = root / "blobs" / "sha256" / diff_id.removeprefix("sha256:")
            with tarfile.open(fileobj=io.BytesIO(blob.read_bytes())) as tf:
                for m in tf.getmembers():
                    found = {k.removeprefix("SCHILY.xattr."): v
                             for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
                    if found:
                        out[m.name] = found
    return out


def _fresh_id(tmp: Path, ctx: Path) -> str:
    root = fresh_store(tmp)
    try:
        return build(ctx, root, tags=["fresh"], no_cache=True, build_args=SDE).result.image_id
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_key_holds_the_xattrs_the_layer_keeps(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY tool /tool\nCOPY conf/ /etc/\nRUN test -f /etc/passwd\n",
        "tool": "#!/bin/sh\n",
        "conf/app.conf": "a=1\n",
    })
    tool = ctx / "tool"
    try:
        os.setxattr(tool, "trusted.overlay.origin", b"x")
        os.setxattr(ctx / "conf", "trusted.overlay.opaque", b"y")
    except OSError as err:
        pytest.skip(f"trusted xattrs not supported here: {err}")
    first = build(ctx, root, tags=["t"], build_args=SDE)  # RUN: /etc is not made opaque
    assert _layer_xattrs(root, "t") == {}
    assert first.result.image_id == _fresh_id(tmp_path / "f1", ctx)
    # an attribute no layer keeps: no miss, the same image
    os.setxattr(tool, "trusted.overlay.origin", b"changed")
    assert build(ctx, root, tags=["t"], build_args=SDE).result.cached_all
    # file capabilities are kept, and in the key
    os.setxattr(tool, "security.capability", CAP_NET_RAW)
    second = build(ctx, root, tags=["t"], build_args=SDE)
    assert not second.step(2).cached
    assert _layer_xattrs(root, "t") == {
        "tool": {"security.capability": CAP_NET_RAW.decode("latin-1")}}
    assert second.result.image_id == _fresh_id(tmp_path / "f2", ctx)
    # a user xattr too
    os.setxattr(tool, "user.origin", b"1")
    third = build(ctx, root, tags=["t"], build_args=SDE)
    assert not third.step(2).cached
    assert _layer_xattrs(root, "t")["tool"]["user.origin"] == "1"
    assert third.result.image_id == _fresh_id(tmp_path / "f3", ctx)
