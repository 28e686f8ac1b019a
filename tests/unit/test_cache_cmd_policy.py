"""``dockyard cache ls|du|prune``: sizes, durations, record selection, pruning on a real store."""

from __future__ import annotations

import io
import json
import multiprocessing
import tarfile
import time
from collections.abc import Iterable, Iterator
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import pytest

from dockyard.cli.main import main
from dockyard.errors import StoreError, UsageError
from dockyard.image.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    Manifest,
    Platform,
    chain_ids,
)
from dockyard.store import CacheRecord, ImageRecord, Store, StoreLockTimeout
from dockyard.store.cache_gc import (
    CACHE_MOUNT_KIND,
    CacheEntry,
    PrunePolicy,
    cache_entries,
    cache_usage,
    parse_duration,
    parse_size,
    prune_cache,
    select_for_prune,
    sweep_snapshots,
)

NOW = 1_700_000_000.0
HOUR = 3600.0


# --- sizes and durations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1024", 1024),
        ("512b", 512),
        ("10GB", 10 * 1000**3),
        ("10gb", 10 * 1000**3),
        ("10g", 10 * 1000**3),
        ("500MB", 500 * 1000**2),
        ("2kB", 2000),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("1MiB", 1024**2),
        ("4KiB", 4096),
        ("1TiB", 1024**4),
        (" 3 MB ", 3 * 1000**2),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "-1GB", "10XB", "1.2.3MB", "ten"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0.0),
        ("30s", 30.0),
        ("30m", 1800.0),
        ("24h", 86400.0),
        ("7d", 7 * 86400.0),
        ("2w", 14 * 86400.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("1d12h", 1.5 * 86400.0),
    ],
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "1x", "1h 30m", "1y"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


# --- a store with images and cache records ---------------------------------------------


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def put_layer(store: Store, name: str, size: int = 100) -> str:
    data = layer_tar({name: b"x" * size})
    digest = store.blobs.put_bytes(data)
    store.put_layer(digest, len(data))
    return digest


def make_image(store: Store, diff_ids: list[str], names: tuple[str, ...] = ()) -> ImageRecord:
    config = ImageConfig.empty(Platform("linux", "amd64"))
    for d in diff_ids:
        config = config.add_layer(d, HistoryEntry(created_by=d))
    config_bytes = config.to_json()
    layers = tuple(Descriptor(MEDIA_TYPE_OCI_LAYER, d, store.blobs.size(d)) for d in diff_ids)
    manifest = Manifest(Descriptor.of(MEDIA_TYPE_OCI_CONFIG, config_bytes), layers)
    return store.put_image(manifest.to_json(), config_bytes, names)


def record(
    store: Store,
    key: str,
    chain: list[str],
    *,
    last_used: float,
    instruction: str = "RUN",
    layer: bool = True,
) -> CacheRecord:
    """A cache record for the step that made the last layer of ``chain``."""
    rec = CacheRecord(
        key=key,
        diff_id=chain[-1] if layer else None,
        chain_id=chain_ids(chain)[-1] if layer else None,
        result={"instruction": instruction},
        description=f"{instruction} {instruction} step {key}",
        created=last_used - HOUR,
        last_used=last_used,
    )
    store.put_cache_record(rec)
    return rec


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "root")
    yield s
    s.close()


@pytest.fixture
def populated(store: Store) -> dict[str, str]:
    """base <- app (tagged image app:1); base <- old (untagged image); base <- lone (cache
    only); plus a layerless record and one whose blob is gone."""
    base = put_layer(store, "base", 1000)
    app = put_layer(store, "app", 3000)
    old = put_layer(store, "old", 5000)
    lone = put_layer(store, "lone", 7000)
    gone = put_layer(store, "gone", 50)
    make_image(store, [base], names=("base:1",))
    make_image(store, [base, app], names=("app:1",))
    make_image(store, [base, old])
    record(store, "k-app", [base, app], last_used=NOW - 1 * HOUR)
    record(store, "k-old", [base, old], last_used=NOW - 48 * HOUR, instruction="COPY")
    record(store, "k-lone", [base, lone], last_used=NOW - 72 * HOUR)
    record(store, "k-lone2", [base, lone], last_used=NOW - 2 * HOUR, instruction="COPY")
    record(store, "k-empty", [base], last_used=NOW - 96 * HOUR, instruction="WORKDIR",
           layer=False)
    record(store, "k-gone", [base, gone], last_used=NOW - 0.5 * HOUR)
    store.blobs.delete(gone)
    return {"base": base, "app": app, "old": old, "lone": lone, "gone": gone}


def keys(entries: Iterable[CacheEntry]) -> set[str]:
    return {e.record.key for e in entries}


def test_cache_entries_know_size_sharing_and_use(store: Store, populated: dict[str, str]) -> None:
    by_key = {e.record.key: e for e in cache_entries(store)}
    assert [e.record.key for e in cache_entries(store)] == [
        "k-empty", "k-lone", "k-old", "k-lone2", "k-app", "k-gone"
    ]  # least recently used first
    lone_size = store.blobs.size(populated["lone"])
    assert by_key["k-lone"].size == lone_size > 7000
    assert by_key["k-lone"].shared is False and by_key["k-lone"].reclaimable == lone_size
    assert by_key["k-app"].shared and by_key["k-app"].in_tagged_image
    assert by_key["k-app"].reclaimable == 0
    assert by_key["k-old"].shared and not by_key["k-old"].in_tagged_image  # untagged image
    assert by_key["k-old"].kind == "COPY"
    assert by_key["k-empty"].size == 0 and not by_key["k-empty"].has_layer
    assert by_key["k-gone"].layer_missing and not by_key["k-lone"].layer_missing


def test_cache_entries_count_compressed_forms(store: Store) -> None:
    diff_id = put_layer(store, "f", 2000)
    gz = store.blobs.put_bytes(b"pretend-gzip" * 10)
    store.put_layer_blob(diff_id, "gzip", gz, 120)
    record(store, "k", [diff_id], last_used=NOW)
    (entry,) = cache_entries(store)
    assert entry.size == store.blobs.size(diff_id) + store.blobs.size(gz)


def test_default_policy_prunes_what_no_tagged_image_uses(
    store: Store, populated: dict[str, str]
) -> None:
    chosen = select_for_prune(cache_entries(store), PrunePolicy(), NOW)
    # k-old's layer is in an untagged image only; the layerless record costs nothing.
    assert keys(chosen) == {"k-old", "k-lone", "k-lone2", "k-gone"}


def test_all_policy_takes_everything(store: Store, populated: dict[str, str]) -> None:
    chosen = select_for_prune(cache_entries(store), PrunePolicy(all=True), NOW)
    assert len(chosen) == 6


def test_older_than_policy(store: Store, populated: dict[str, str]) -> None:
    chosen = select_for_prune(cache_entries(store), PrunePolicy(older_than=24 * HOUR), NOW)
    # unused for more than a day, plus the record whose layer is gone
    assert keys(chosen) == {"k-old", "k-lone", "k-empty", "k-gone"}
    chosen = select_for_prune(cache_entries(store), PrunePolicy(older_than=1000 * HOUR), NOW)
    assert keys(chosen) == {"k-gone"}


def test_keep_storage_evicts_lru_until_unshared_layers_fit(
    store: Store, populated: dict[str, str]
) -> None:
    entries = cache_entries(store)
    lone = store.blobs.size(populated["lone"])
    # Only "lone" is unshared; it is held by k-lone and k-lone2, so both must go.
    chosen = select_for_prune(entries, PrunePolicy(keep_storage=lone - 1), NOW)
    assert keys(chosen) == {"k-gone", "k-empty", "k-lone", "k-old", "k-lone2"}
    assert "k-app" not in keys(chosen)  # everything left is shared: 0 bytes held
    # It fits already: only the broken record goes.
    assert keys(select_for_prune(entries, PrunePolicy(keep_storage=lone), NOW)) == {"k-gone"}


def test_keep_storage_stops_as_soon_as_it_fits(store: Store) -> None:
    a = put_layer(store, "a", 4000)
    b = put_layer(store, "b", 4000)
    c = put_layer(store, "c", 4000)
    record(store, "ka", [a], last_used=NOW - 3 * HOUR)
    record(store, "kb", [b], last_used=NOW - 2 * HOUR)
    record(store, "kc", [c], last_used=NOW - 1 * HOUR)
    entries = cache_entries(store)
    one = store.blobs.size(a)
    chosen = select_for_prune(entries, PrunePolicy(keep_storage=2 * one), NOW)
    assert keys(chosen) == {"ka"}
    chosen = select_for_prune(entries, PrunePolicy(keep_storage=one), NOW)
    assert keys(chosen) == {"ka", "kb"}
    chosen = select_for_prune(entries, PrunePolicy(keep_storage=0), NOW)
    assert keys(chosen) == {"ka", "kb", "kc"}
    # combined: older_than first, then LRU to fit
    chosen = select_for_prune(
        entries, PrunePolicy(keep_storage=one, older_than=2.5 * HOUR), NOW
    )
    assert keys(chosen) == {"ka", "kb"}


def test_cache_usage_per_kind(store: Store, populated: dict[str, str]) -> None:
    mount = store.cache_dir / "some-id"
    mount.mkdir()
    (mount / "data").write_bytes(b"m" * 10000)
    usage = cache_usage(store)
    size = {k: store.blobs.size(populated[k]) for k in ("app", "old", "lone")}
    kinds = {k.kind: k for k in usage.kinds}
    assert usage.records == 6
    # RUN: app + lone (k-gone's blob is missing: 0); COPY: old + lone
    assert kinds["RUN"].records == 3
    assert kinds["RUN"].size == size["app"] + size["lone"]
    assert kinds["RUN"].reclaimable == size["lone"]
    assert kinds["COPY"].size == size["old"] + size["lone"]
    assert kinds["WORKDIR"].size == 0
    assert kinds[CACHE_MOUNT_KIND].records == 1
    assert kinds[CACHE_MOUNT_KIND].size >= 10000
    # each layer counted once in the total
    assert usage.size == size["app"] + size["old"] + size["lone"] + kinds[CACHE_MOUNT_KIND].size
    assert usage.reclaimable == size["lone"] + kinds[CACHE_MOUNT_KIND].size
    assert [k.size for k in usage.kinds] == sorted((k.size for k in usage.kinds), reverse=True)


# --- pruning ---------------------------------------------------------------------------------


def test_prune_cache_default_frees_unused_layers_and_keeps_images(
    store: Store, populated: dict[str, str]
) -> None:
    report = prune_cache(store, PrunePolicy(), now=NOW)
    assert report.records_removed == 4
    assert {r.key for r in store.list_cache_records()} == {"k-app", "k-empty"}
    assert not store.blobs.has(populated["lone"])  # only the pruned records used it
    for name in ("base", "app", "old"):  # images keep their layers, untagged ones too
        assert store.blobs.has(populated[name])
    assert store.get_image("app:1") and store.get_image("base:1")
    assert report.blobs_removed >= 1
    assert report.bytes_freed >= store.blobs.size(populated["app"])  # > 7000-byte layer


def test_prune_cache_all_removes_records_and_cache_mounts(
    store: Store, populated: dict[str, str]
) -> None:
    mount = store.cache_dir / "id-1"
    mount.mkdir()
    (mount / "f").write_text("cached")
    report = prune_cache(store, PrunePolicy(all=True), now=NOW)
    assert report.records_removed == 6 and store.list_cache_records() == []
    assert report.cache_mounts_removed == 1 and not mount.exists()
    assert store.get_image("app:1")
    assert store.blobs.has(populated["app"]) and store.blobs.has(populated["old"])


def test_prune_cache_keeps_mounts_without_all(store: Store, populated: dict[str, str]) -> None:
    mount = store.cache_dir / "id-1"
    mount.mkdir()
    prune_cache(store, PrunePolicy(older_than=0), now=NOW)
    assert mount.exists()
    assert store.list_cache_records() == []


def _hold_build_lock(root: Path, ready: EventType, release: EventType) -> None:
    s = Store.open(root)
    with s.build_lock():
        ready.set()
        release.wait(10)


def test_prune_cache_waits_for_builds(store: Store, populated: dict[str, str]) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_build_lock, args=(store.root, ready, release))
    proc.start()
    try:
        assert ready.wait(10)
        with pytest.raises(StoreLockTimeout):
            prune_cache(store, PrunePolicy(all=True), now=NOW, timeout=0.2)
        assert len(store.list_cache_records()) == 6  # nothing deleted
    finally:
        release.set()
        proc.join(10)
    assert prune_cache(store, PrunePolicy(all=True), now=NOW, timeout=5).records_removed == 6


class FakeSnapshotter:
    """Committed snapshots with parents; removing one that has children is refused."""

    def __init__(self, root: Path, parents: dict[str, str | None]) -> None:
        self.root = root
        self.parents = dict(parents)
        for name in parents:
            d = self.fs_dir(name)
            d.mkdir(parents=True)
            (d / "file").write_bytes(b"s" * 100)

    def committed(self) -> list[str]:
        return sorted(self.parents)

    def fs_dir(self, key: str) -> Path:
        return self.root / key.removeprefix("sha256:") / "fs"

    def remove(self, key: str) -> None:
        if key not in self.parents:
            raise StoreError(f"snapshot {key} not found")
        if key in self.parents.values():
            raise StoreError(f"snapshot {key} has children")
        del self.parents[key]


def test_sweep_snapshots_removes_dead_chains_top_down(
    store: Store, populated: dict[str, str], tmp_path: Path
) -> None:
    p = populated
    base_c = chain_ids([p["base"]])[0]
    app_c = chain_ids([p["base"], p["app"]])[1]
    lone_c = chain_ids([p["base"], p["lone"]])[1]
    dead_top = "sha256:" + "d" * 64
    dead_mid = "sha256:" + "c" * 64
    kept_child = "sha256:" + "e" * 64  # lives on a dead parent: neither may go
    kept_parent = "sha256:" + "f" * 64
    store.put_cache_record(CacheRecord("k-kept", p["app"], kept_child, last_used=NOW))
    snap = FakeSnapshotter(tmp_path / "snaps", {
        base_c: None, app_c: base_c, lone_c: base_c,
        dead_mid: base_c, dead_top: dead_mid,
        kept_parent: base_c, kept_child: kept_parent,
    })
    store.delete_cache_records(["k-lone", "k-lone2"])
    removed, freed = sweep_snapshots(store, snap)
    assert removed == 3 and freed >= 300
    assert set(snap.committed()) == {base_c, app_c, kept_parent, kept_child}


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_ls_du_prune(
    store: Store, populated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(store.root)
    assert main(["--root", root, "cache", "ls", "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["Key"] for r in rows][:2] == ["k-empty", "k-lone"]
    lone = next(r for r in rows if r["Key"] == "k-lone")
    assert lone["Size"] == store.blobs.size(populated["lone"])
    assert lone["Description"] == "RUN step k-lone"  # the doubled instruction word is dropped
    assert lone["Kind"] == "RUN" and lone["Shared"] is False

    assert main(["--root", root, "cache", "ls"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ID", "SIZE", "CREATED", "LAST", "USED", "DESCRIPTION"]
    assert len(table) == 7 and any("missing" in line for line in table)

    assert main(["--root", root, "cache", "du", "--format", "json"]) == 0
    du = json.loads(capsys.readouterr().out)
    assert du["Records"] == 6 and du["Reclaimable"] == store.blobs.size(populated["lone"])
    assert main(["--root", root, "cache", "du"]) == 0
    assert "Total:" in capsys.readouterr().out

    assert main(["--root", root, "cache", "prune", "--keep-storage", "nonsense"]) == 2
    assert "invalid size" in capsys.readouterr().err
    # the records' times are relative to NOW, long ago: "not used within 60h before NOW"
    window = int(time.time() - NOW + 60 * HOUR)
    assert main(["--root", root, "cache", "prune", "--older-than", f"{window}s"]) == 0
    out = capsys.readouterr().out
    assert "Deleted build cache records: 3" in out  # k-lone, k-empty (old) and k-gone
    assert {r.key for r in store.list_cache_records()} == {"k-app", "k-old", "k-lone2"}
    assert main(["--root", root, "cache", "prune", "-a"]) == 0
    assert store.list_cache_records() == []
