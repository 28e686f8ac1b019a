"""The build history record: COPY manifests are stored packed and decoded only when read."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.store.db import PackedManifest, Store

MANIFEST = {
    "src/a.c": ["file", 420, 0, 0, 3, "sha256:" + "a" * 64, "", [], [0, 0]],
    "src": ["dir", 493, 0, 0, 0, "", "", [], [0, 0]],
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store") as opened:
        yield opened


def _record(files: object) -> dict[str, object]:
    return {
        "steps": {
            "0/1": {"key": "k1", "components": {"content": "sha256:c"}, "files": files},
            "0/2": {"key": "k2", "components": {}},
        },
        "time": 1.0,
    }


def test_manifest_round_trips_and_is_decoded_lazily(store: Store) -> None:
    store.put_build_history("/ctx/Dockerfile", "", _record(MANIFEST))
    got = store.get_build_history("/ctx/Dockerfile", "")
    assert got is not None
    files = got["steps"]["0/1"]["files"]
    assert isinstance(files, PackedManifest)
    assert files._data is None  # nothing parsed by reading the record
    assert dict(files) == MANIFEST
    assert got["steps"]["0/2"] == {"key": "k2", "components": {}}
    assert got == _record(MANIFEST)


def test_a_packed_manifest_is_written_back_without_decoding(store: Store) -> None:
    store.put_build_history("/ctx/Dockerfile", "", _record(MANIFEST))
    got = store.get_build_history("/ctx/Dockerfile", "")
    assert got is not None
    files = got["steps"]["0/1"]["files"]
    store.put_build_history("/ctx/Dockerfile", "", got)
    assert files._data is None
    again = store.get_build_history("/ctx/Dockerfile", "")
    assert again is not None and dict(again["steps"]["0/1"]["files"]) == MANIFEST


def test_the_callers_record_is_not_changed(store: Store) -> None:
    record = _record(MANIFEST)
    store.put_build_history("/ctx/Dockerfile", "", record)
    assert record == _record(MANIFEST)
    step = record["steps"]["0/1"]  # type: ignore[index]
    assert step["files"] == MANIFEST


def test_records_written_before_packing_still_read(store: Store) -> None:
    # an older dockyard stored the manifest inline as JSON
    store.put_build_history("/ctx/Dockerfile", "", {"steps": {}})
    with sqlite3.connect(store.db_path) as db:
        db.execute(
            "UPDATE build_history SET info=? WHERE dockerfile=?",
            (json.dumps(_record(MANIFEST)), "/ctx/Dockerfile"),
        )
    db.close()
    got = store.get_build_history("/ctx/Dockerfile", "")
    assert got == _record(MANIFEST)
    assert got is not None and got["steps"]["0/1"]["files"] == MANIFEST


def test_list_steps_are_left_as_they_are(store: Store) -> None:
    store.put_build_history("/ctx/Dockerfile", "", {"steps": [{"key": "k1", "files": {}}]})
    got = store.get_build_history("/ctx/Dockerfile", "")
    assert got is not None
    assert [s["key"] for s in got["steps"]] == ["k1"]
    assert dict(got["steps"][0]["files"]) == {}


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4), max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(files=st.dictionaries(st.text(min_size=0, max_size=40), _JSON_VALUES, max_size=40),
       chunk=st.integers(1, 64))
def test_packed_items_stream_gives_what_json_loads_gives(files: dict[str, object],
                                                         chunk: int) -> None:
    """The miss explanation reads a stored manifest one entry at a time; whatever the
    chunking of the inflated text, the pairs are json.loads's (order included)."""
    import dockyard.store.history as history

    packed = PackedManifest.pack(files)
    expected = list(json.loads(json.dumps(files, sort_keys=True)).items())
    old = history._STREAM_CHUNK
    history._STREAM_CHUNK = chunk
    try:
        assert list(PackedManifest(packed.packed).iter_items()) == expected
    finally:
        history._STREAM_CHUNK = old


def test_packed_items_refuse_what_is_not_one_object() -> None:
    import base64
    import zlib

    for text in ('["a"]', '{"a":1', '{"a" 1}', '{"a":1;"b":2}', '{1:2}'):
        packed = base64.b64encode(zlib.compress(text.encode())).decode()
        with pytest.raises(ValueError):
            list(PackedManifest(packed).iter_items())


def test_the_packed_text_is_json_dumps_with_sorted_keys_across_batches() -> None:
    """Packed a batch at a time (the C encoder per batch): the text stays exactly one
    ``json.dumps`` of the whole manifest with sorted keys, across batch boundaries."""
    import base64
    import zlib

    from dockyard.store import history

    files: dict[str, object] = {
        f"d{i % 7}/f{i:05d}\u00e9": ["file", 0o644, 0, i, i * 3, f"{i:064x}", "", [0, 0], {}]
        for i in range(2 * history._PACK_BATCH + 5)}
    files["a"] = ["dir", 0o755, 0, 0, 0, "", "", [0, 0], {"user.k": "dg=="}]
    for manifest in (files, {}, {"x": [1]}):
        raw = zlib.decompress(base64.b64decode(PackedManifest.pack(manifest).packed))
        assert raw.decode() == json.dumps(manifest, sort_keys=True, separators=(",", ":"))
