"""The store split by concern (images, layers, snapshots, cache, history, stat cache over one
database) keeps the flat ``Store`` API that every room calls: same names, same signatures."""

from __future__ import annotations

import inspect
from pathlib import Path

from dockyard.store import CacheRecord, SnapshotRecord, StatKey, Store
from dockyard.store.cache import CacheRecords
from dockyard.store.database import Database
from dockyard.store.history import BuildHistory
from dockyard.store.images import Images
from dockyard.store.layers import Layers
from dockyard.store.snapshots import Snapshots
from dockyard.store.stats import StatCache

# The public methods of Store before the split (inspect.signature as text).
FLAT_API = {
    "build_lock": "(self, timeout: 'float | None' = None) -> 'contextlib.AbstractContextManager[None]'",
    "bump_generation": "(self) -> 'None'",
    "cache_dir": 'property',
    "close": "(self) -> 'None'",
    "config_bytes": "(self, image: 'ImageRecord') -> 'bytes'",
    "delete_all_cache_records": "(self) -> 'int'",
    "delete_cache_records": "(self, keys: 'Iterable[str]') -> 'int'",
    "delete_layer": "(self, diff_id: 'str') -> 'None'",
    "delete_snapshot": "(self, chain_id: 'str', snapshotter: 'str') -> 'None'",
    "ensure_layer_blob": "(self, diff_id: 'str') -> 'str'",
    "exclusive_lock": "(self, timeout: 'float | None' = 30.0) -> 'contextlib.AbstractContextManager[None]'",
    "find_image": "(self, ref_or_id: 'str', platform: 'str | None' = None) -> 'ImageRecord | None'",
    "forget_snapshot_layers": "(self, chain_id: 'str', snapshotter: 'str | None' = None) -> 'None'",
    "generation": "(self) -> 'str'",
    "generation_path": 'property',
    "get_build_history": "(self, dockerfile: 'str', target: 'str') -> 'dict[str, Any] | None'",
    "get_cache_record": "(self, key: 'str') -> 'CacheRecord | None'",
    "get_image": "(self, ref_or_id: 'str', platform: 'str | None' = None) -> 'ImageRecord'",
    "get_layer": "(self, diff_id: 'str') -> 'LayerRecord | None'",
    "get_snapshot": "(self, chain_id: 'str', snapshotter: 'str') -> 'SnapshotRecord | None'",
    "history": "(self, image: 'ImageRecord') -> 'list[HistoryItem]'",
    "image_size": "(self, image: 'ImageRecord') -> 'int'",
    "inspect_image": "(self, image: 'ImageRecord') -> 'dict[str, Any]'",
    "last_tag_time": "(self, image: 'ImageRecord') -> 'float | None'",
    "layer_present": "(self, diff_id: 'str') -> 'bool'",
    "layers_backed_by": "(self, chain_id: 'str') -> 'list[str]'",
    "list_cache_records": "(self) -> 'list[CacheRecord]'",
    "list_images": "(self) -> 'list[ImageRecord]'",
    "list_layer_ids": "(self) -> 'list[str]'",
    "list_snapshots": "(self, snapshotter: 'str | None' = None) -> 'list[SnapshotRecord]'",
    "manifest_bytes": "(self, image: 'ImageRecord') -> 'bytes'",
    "open": "class(cls, root: 'Path | str') -> 'Store'",
    "put_build_history": "(self, dockerfile: 'str', target: 'str', info: 'Mapping[str, Any]') -> 'None'",
    "put_cache_record": "(self, record: 'CacheRecord') -> 'None'",
    "put_image": "(self, manifest: 'bytes', config: 'bytes', names: 'Iterable[str]' = ()) -> 'ImageRecord'",
    "put_layer": "(self, diff_id: 'str', size: 'int') -> 'None'",
    "put_layer_blob": "(self, diff_id: 'str', compression: 'Compression', blob: 'str', size: 'int') -> 'None'",
    "put_snapshot": "(self, record: 'SnapshotRecord') -> 'None'",
    "put_snapshot_layer": "(self, diff_id: 'str', size: 'int', source: 'LayerSnapshot') -> 'None'",
    "read_config": "(self, image: 'ImageRecord') -> 'ImageConfig'",
    "read_manifest": "(self, image: 'ImageRecord') -> 'Manifest'",
    "remove_image": "(self, image_id: 'str') -> 'list[str]'",
    "snapshots_dir": 'property',
    "stat_clear": "(self) -> 'None'",
    "stat_get": "(self, key: 'StatKey') -> 'str | None'",
    "stat_get_many": "(self, keys: 'Iterable[StatKey]') -> 'dict[StatKey, str]'",
    "stat_put_many": "(self, entries: 'Iterable[tuple[StatKey, str]]') -> 'None'",
    "tag": "(self, image_id: 'str', name: 'str') -> 'None'",
    "touch_cache_record": "(self, key: 'str', when: 'float | None' = None) -> 'None'",
    "touch_snapshot": "(self, chain_id: 'str', snapshotter: 'str', when: 'float | None' = None) -> 'None'",
    "untag": "(self, name: 'str') -> 'str'",
}


def _signature(value: object) -> str:
    if isinstance(value, property):
        return "property"
    if isinstance(value, classmethod):
        return "class" + str(inspect.signature(value.__func__))
    return str(inspect.signature(value))  # type: ignore[arg-type]


def test_flat_api_is_unchanged() -> None:
    for name, expected in FLAT_API.items():
        assert name in vars(Store), f"Store.{name} is gone"
        assert _signature(vars(Store)[name]) == expected, name


def test_instance_attributes_stay(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    assert store.db_path == tmp_path / "s" / "dockyard.db"
    assert store.stat_db_path == tmp_path / "s" / "statcache.db"
    assert store.lock_path == tmp_path / "s" / "lock"
    assert store.generation_bumps == 0
    store.bump_generation()
    assert store.generation_bumps == 1
    assert store.generation() == "1"


def test_concerns_share_one_database(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    assert isinstance(store.database, Database)
    assert isinstance(store.images, Images)
    assert isinstance(store.layers, Layers)
    assert isinstance(store.snapshots, Snapshots)
    assert isinstance(store.cache, CacheRecords)
    assert isinstance(store.build_history, BuildHistory)
    assert isinstance(store.stat_cache, StatCache)
    for concern in (store.images, store.layers, store.snapshots, store.cache,
                    store.build_history, store.stat_cache):
        assert concern._db is store.database
    # a write through a concern is what the flat API reads, on the same connection
    store.cache.put(CacheRecord("k", None, None, description="RUN x"))
    assert store.get_cache_record("k") == store.cache.get("k")
    assert store.database.conn is store._db
    store.put_snapshot(SnapshotRecord("sha256:" + "1" * 64, "overlay", "k1"))
    assert [s.key for s in store.snapshots.all()] == ["k1"]
    key = StatKey(1, 2, 3, 4, 5)
    store.stat_cache.put_many([(key, "sha256:" + "2" * 64)])
    assert store.stat_get(key) == "sha256:" + "2" * 64
    store.put_build_history("Dockerfile", "t", {"steps": {}})
    assert store.build_history.get("Dockerfile", "t") == {"steps": {}}
    # invalidating writes through a concern move the generation the store reports
    before = store.generation()
    store.cache.delete(["k"])
    assert store.generation() != before
    store.close()


def test_store_modules_stay_small() -> None:
    import dockyard.store as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        lines = path.read_text().count("\n")
        assert lines <= 550, f"{path.name} has {lines} lines: split it by concern"
