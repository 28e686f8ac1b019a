"""A fully cached rebuild gives the same image (times come from the cache), as Docker's
builders do; a change gives a new one; SOURCE_DATE_EPOCH still pins every time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_build_support import build, fresh_store, template_store, write_tree

from bases import need_runtime
from dockyard.store.db import Store

DOCKERFILE = "FROM busybox:latest\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\nCMD [\"cat\", \"/b.txt\"]\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    reason = need_runtime()
    if reason:
        pytest.skip(reason)
    template_store()
    return fresh_store(tmp_path / "store")


def _config(root: Path, image_id: str) -> dict[str, object]:
    store = Store.open(root)
    try:
        return store.read_config(store.get_image(image_id)).to_dict()
    finally:
        store.close()


def test_cached_rebuild_is_the_same_image(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    first = build(ctx, root).result
    time.sleep(1.1)  # a rebuild a second later must not get a new time
    again = build(ctx, root).result
    assert again.cached_all
    assert again.image_id == first.image_id
    assert again.manifest_digest == first.manifest_digest

    (ctx / "a.txt").write_text("two\n")
    changed = build(ctx, root).result
    assert changed.image_id != first.image_id
    old, new = _config(root, first.image_id), _config(root, changed.image_id)
    old_history = old["history"]
    new_history = new["history"]
    assert isinstance(old_history, list) and isinstance(new_history, list)
    # the base's entries keep their times; the changed steps got a later one
    assert new_history[0] == old_history[0]
    assert str(new["created"]) > str(old["created"])


def test_source_date_epoch_pins_every_new_time(root: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    result = build(ctx, root).result
    config = _config(root, result.image_id)
    assert config["created"] == "2023-11-14T22:13:20Z"
    history = config["history"]
    assert isinstance(history, list)
    assert all(str(h.get("created")) <= "2023-11-14T22:13:20Z" for h in history)
