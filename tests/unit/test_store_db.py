"""The store database: images and names, layers, snapshots, cache, history, stat cache."""

from __future__ import annotations

import io
import multiprocessing
import os
import sqlite3
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.errors import NotFoundError, StoreError, UsageError
from dockyard.image.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    Manifest,
    Platform,
    digest_bytes,
)
from dockyard.store import CacheRecord, ImageRecord, SnapshotRecord, StatKey, Store
from dockyard.store.db import SCHEMA_VERSION


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(
    store: Store, layers: list[dict[str, bytes]], names: tuple[str, ...] = (), label: str = ""
) -> ImageRecord:
    """A tiny image through the public API: layer blobs, config, manifest."""
    config = ImageConfig.empty(Platform("linux", "amd64"))
    config = config.with_config(cmd=("sh",), labels={"l": label} if label else {})
    descriptors = []
    for i, files in enumerate(layers):
        data = layer_tar(files)
        digest = store.blobs.put_bytes(data)
        store.put_layer(digest, len(data))
        descriptors.append(Descriptor(MEDIA_TYPE_OCI_LAYER, digest, len(data)))
        config = config.add_layer(digest, HistoryEntry(created_by=f"COPY layer{i} /"))
    config = config.add_history(HistoryEntry(created_by='CMD ["sh"]', empty_layer=True))
    config = ImageConfig.from_dict({**config.to_dict(), "created": "2024-01-02T03:04:05Z"})
    config_bytes = config.to_json()
    manifest = Manifest(Descriptor.of(MEDIA_TYPE_OCI_CONFIG, config_bytes), tuple(descriptors))
    return store.put_image(manifest.to_json(), config_bytes, names)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "root")
    yield s
    s.close()


def test_open_creates_layout(tmp_path: Path) -> None:
    root = tmp_path / "r"
    with Store.open(root):
        pass
    for sub in ("blobs/sha256", "tmp", "snapshots", "cache"):
        assert (root / sub).is_dir()
    assert (root / "lock").exists()
    conn = sqlite3.connect(root / "dockyard.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )
    conn.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 999"):
        Store.open(root)


def test_put_get_list_image(store: Store) -> None:
    image = make_image(store, [{"a": b"1"}, {"b": b"22"}], names=("app", "app:v1"))
    assert image.names == ("docker.io/library/app:latest", "docker.io/library/app:v1")
    assert [r.familiar for r in image.tags] == ["app:latest", "app:v1"]
    config = store.read_config(image)
    assert digest_bytes(store.config_bytes(image)) == image.id
    assert image.size == sum(store.blobs.size(d) for d in config.diff_ids)
    assert store.image_size(image) == image.size
    assert image.created == "2024-01-02T03:04:05Z"
    for spec in (
        "app",
        "app:latest",
        "docker.io/library/app:v1",
        image.id,
        image.id[7:],
        image.short_id,
        image.id[:12],
    ):
        assert store.get_image(spec).id == image.id, spec
    assert [i.id for i in store.list_images()] == [image.id]
    with pytest.raises(NotFoundError, match="no such image: nope"):
        store.get_image("nope")
    assert store.find_image("app:v2") is None


def test_names_move_and_untag(store: Store) -> None:
    one = make_image(store, [{"a": b"1"}], names=("x",))
    two = make_image(store, [{"a": b"2"}], names=("x",))
    assert store.get_image("x").id == two.id
    assert store.get_image(one.id).names == ()
    store.tag(one.id, "x:old")
    assert store.get_image("x:old").id == one.id
    assert store.untag("x:old") == one.id
    with pytest.raises(NotFoundError):
        store.untag("x:old")
    with pytest.raises(NotFoundError):
        store.tag("sha256:" + "0" * 64, "y")
    with pytest.raises(UsageError):
        store.tag(one.id, "Bad Name")
    assert store.remove_image(two.id) == ["docker.io/library/x:latest"]
    assert store.find_image("x") is None
    with pytest.raises(NotFoundError):
        store.remove_image(two.id)


def test_ambiguous_id_prefix(store: Store) -> None:
    images = [make_image(store, [{"f": str(i).encode()}]) for i in range(20)]
    firsts = [i.id[7] for i in images]
    dup = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(StoreError, match="ambiguous"):
        store.get_image(dup)


def test_digest_reference_finds_by_manifest(store: Store) -> None:
    image = make_image(store, [{"a": b"1"}])
    assert store.get_image(f"whatever@{image.manifest_digest}").id == image.id
    store.tag(image.id, f"reg.example/x@{image.manifest_digest}")
    again = store.get_image(image.id)
    assert [r.familiar for r in again.digests] == [f"reg.example/x@{image.manifest_digest}"]
    assert again.tags == ()


def test_put_image_checks_documents(store: Store) -> None:
    config = ImageConfig.empty(Platform("linux", "amd64")).to_json()
    missing = Descriptor(MEDIA_TYPE_OCI_LAYER, digest_bytes(b"nope"), 4)
    with_layer = ImageConfig.from_json(config).add_layer(missing.digest, HistoryEntry()).to_json()
    manifest = Manifest(Descriptor.of(MEDIA_TYPE_OCI_CONFIG, with_layer), (missing,))
    with pytest.raises(NotFoundError, match="missing"):
        store.put_image(manifest.to_json(), with_layer)
    wrong = Manifest(Descriptor.of(MEDIA_TYPE_OCI_CONFIG, b"{}"), ())
    with pytest.raises(StoreError, match="names config"):
        store.put_image(wrong.to_json(), config)
    mismatch = Manifest(Descriptor.of(MEDIA_TYPE_OCI_CONFIG, with_layer), ())
    with pytest.raises(StoreError, match="diff ids"):
        store.put_image(mismatch.to_json(), with_layer)
    with pytest.raises(StoreError):
        store.put_image(b"{", config)
    assert store.list_images() == []


def test_compressed_layers_recorded_as_variants(store: Store) -> None:
    import gzip

    tar = layer_tar({"f": b"data" * 1000})
    diff_id = digest_bytes(tar)
    gz = gzip.compress(tar, mtime=0)
    gz_digest = store.blobs.put_bytes(gz)
    config = ImageConfig.empty(Platform("linux", "amd64")).add_layer(diff_id, HistoryEntry())
    config_bytes = config.to_json()
    manifest = Manifest(
        Descriptor.of(MEDIA_TYPE_OCI_CONFIG, config_bytes),
        (Descriptor(MEDIA_TYPE_OCI_LAYER_GZIP, gz_digest, len(gz)),),
    )
    image = store.put_image(manifest.to_json(), config_bytes, ["pulled"])
    layer = store.get_layer(diff_id)
    assert layer is not None and layer.size is None
    assert layer.blobs["gzip"].digest == gz_digest
    assert image.size == len(gz)  # uncompressed size unknown: compressed size stands in
    store.blobs.put_bytes(tar)
    store.put_layer(diff_id, len(tar))
    layer = store.get_layer(diff_id)
    assert layer is not None and layer.size == len(tar)
    assert set(layer.blobs) == {"gzip", "none"}
    assert store.image_size(image) == len(tar)


def test_inspect_and_history(store: Store) -> None:
    image = make_image(store, [{"a": b"1"}, {"b": b"22"}], names=("app:v1",), label="yes")
    info = store.inspect_image(image)
    config = store.read_config(image)
    assert info["Id"] == image.id
    assert info["RepoTags"] == ["app:v1"]
    assert info["RepoDigests"] == []
    assert info["Config"]["Cmd"] == ["sh"]
    assert info["Config"]["Entrypoint"] is None
    assert info["Config"]["Labels"] == {"l": "yes"}
    assert info["RootFS"] == {"Type": "layers", "Layers": list(config.diff_ids)}
    assert info["Size"] == image.size
    assert info["Os"] == "linux" and info["Architecture"] == "amd64"
    assert info["Manifest"]["config"]["digest"] == image.id
    assert info["Descriptor"]["digest"] == image.manifest_digest
    assert info["Metadata"]["LastTagTime"].endswith("Z")
    rows = store.history(image)
    assert [r.created_by for r in rows] == ['CMD ["sh"]', "COPY layer1 /", "COPY layer0 /"]
    assert rows[0].id == image.id and rows[0].empty_layer and rows[0].size == 0
    assert [r.id for r in rows[1:]] == ["<missing>", "<missing>"]
    assert rows[1].size == store.blobs.size(config.diff_ids[1])


def test_snapshot_records(store: Store) -> None:
    store.put_snapshot(SnapshotRecord("sha256:" + "1" * 64, "overlay", "overlay/1", None, 10))
    store.put_snapshot(
        SnapshotRecord("sha256:" + "2" * 64, "overlay", "overlay/2", "sha256:" + "1" * 64)
    )
    got = store.get_snapshot("sha256:" + "1" * 64, "overlay")
    assert got is not None and got.key == "overlay/1" and got.size == 10 and got.created > 0
    assert store.get_snapshot("sha256:" + "1" * 64, "native") is None
    store.touch_snapshot("sha256:" + "1" * 64, "overlay", when=got.last_used + 100)
    again = store.get_snapshot("sha256:" + "1" * 64, "overlay")
    assert again is not None and again.last_used == got.last_used + 100
    assert len(store.list_snapshots("overlay")) == 2
    store.delete_snapshot("sha256:" + "2" * 64, "overlay")
    assert [s.key for s in store.list_snapshots()] == ["overlay/1"]


def test_cache_records_and_history(store: Store) -> None:
    rec = CacheRecord(
        key="k1",
        diff_id=None,
        chain_id="sha256:" + "3" * 64,
        result={"config": {"Env": ["A=1"]}},
        explain={"files": {"a": "sha256:x"}},
        description="ENV A=1",
    )
    store.put_cache_record(rec)
    got = store.get_cache_record("k1")
    assert got is not None
    assert got.result == {"config": {"Env": ["A=1"]}} and got.explain == rec.explain
    assert got.created > 0 and got.last_used == got.created
    assert CacheRecord.from_dict(got.to_dict()) == got
    store.touch_cache_record("k1", when=got.created + 5)
    touched = store.get_cache_record("k1")
    assert touched is not None and touched.last_used == got.created + 5
    store.put_cache_record(CacheRecord("k2", "sha256:" + "4" * 64, None))
    assert [r.key for r in store.list_cache_records()] == ["k2", "k1"] or [
        r.key for r in store.list_cache_records()
    ] == ["k1", "k2"]
    assert store.delete_cache_records(["k1", "missing"]) == 1
    assert store.get_cache_record("k1") is None
    assert store.delete_all_cache_records() == 1

    assert store.get_build_history("/ctx/Dockerfile", "") is None
    store.put_build_history("/ctx/Dockerfile", "", {"steps": [{"key": "k1"}]})
    store.put_build_history("/ctx/Dockerfile", "final", {"steps": []})
    assert store.get_build_history("/ctx/Dockerfile", "") == {"steps": [{"key": "k1"}]}
    store.put_build_history("/ctx/Dockerfile", "", {"steps": []})
    assert store.get_build_history("/ctx/Dockerfile", "") == {"steps": []}


def test_stat_cache(store: Store, tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"one")
    key = StatKey.from_stat(f.stat())
    assert store.stat_get(key) is None
    store.stat_put_many([(key, digest_bytes(b"one"))])
    assert store.stat_get(key) == digest_bytes(b"one")
    # content changed with the mtime put back: ctime moves, so it misses
    st = f.stat()
    f.write_bytes(b"two")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = StatKey.from_stat(f.stat())
    assert changed.mtime_ns == key.mtime_ns
    assert store.stat_get(changed) is None
    huge = StatKey(dev=2**64 - 1, ino=2**63 + 5, size=1, mtime_ns=1, ctime_ns=1)
    many = [StatKey(1, i, i, i, i) for i in range(1200)] + [huge]
    store.stat_put_many([(k, f"sha256:{k.ino}") for k in many])
    found = store.stat_get_many([*many, StatKey(1, 99_999, 1, 1, 1)])
    assert found == {k: f"sha256:{k.ino}" for k in many}
    assert store.stat_get(StatKey(1, 5, 6, 5, 5)) is None  # same inode, other size
    assert found[huge] == f"sha256:{huge.ino}"
    store.stat_clear()
    assert store.stat_get(huge) is None


def _worker(root: str, worker: int, count: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        store = Store.open(root)
        with store.build_lock():
            for i in range(count):
                image = make_image(
                    store,
                    [{"w": f"{worker}-{i}".encode()}, {"shared": b"same"}],
                    names=(f"w{worker}:{i}", "shared:latest"),
                )
                store.tag(image.id, f"t{worker}:{i}")
                store.put_cache_record(CacheRecord(f"{worker}-{i}", None, None))
        store.close()
        queue.put(None)
    except BaseException as err:  # reported to the parent
        queue.put(repr(err))


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(root, w, 15, queue)) for w in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == [None, None]
    store = Store.open(root)
    images = store.list_images()
    assert len(images) == 30
    names = {n for i in images for n in i.names}
    for w in range(2):
        for i in range(15):
            assert f"docker.io/library/w{w}:{i}" in names
            assert f"docker.io/library/t{w}:{i}" in names
    assert "docker.io/library/shared:latest" in names
    assert sum("docker.io/library/shared:latest" in i.names for i in images) == 1
    assert len(store.list_cache_records()) == 30
    store.close()


def test_store_usable_from_threads_and_after_fork(store: Store) -> None:
    import threading

    make_image(store, [{"a": b"1"}], names=("main",))
    seen: list[int] = []

    def look() -> None:
        seen.append(len(store.list_images()))
        make_image(store, [{"a": threading.current_thread().name.encode()}])

    threads = [threading.Thread(target=look) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4
    assert len(store.list_images()) == 5


def test_damaged_stat_cache_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "root"
    Store.open(root).close()
    (root / "statcache.db").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (root / f"statcache.db{suffix}").unlink(missing_ok=True)
    with Store.open(root) as store:
        key = StatKey(1, 2, 3, 4, 5)
        store.stat_put_many([(key, "sha256:x")])
        assert store.stat_get(key) == "sha256:x"
