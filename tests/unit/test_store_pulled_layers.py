"""Pulled layers kept compressed only (issue 15): a pull records the registry's blob, checked
against the manifest, and the config's diff id is checked on first use: inflating the tar
(``ensure_blob``), streaming it into an unpack (``open_pulled``), or before a push or an
export takes the blob as a form of the layer (``checked_form``). A blob that does not match
(a malicious or damaged image) fails there with an error naming the layer, the blob and the
image, and nothing is kept from it; prune keeps and collects the blobs as it should, and
``store check`` stays clean. No root, no registry: the images are put as a pull puts them."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from dockyard.errors import StoreError
from dockyard.image.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    Manifest,
    Platform,
)
from dockyard.store import Store, prune
from dockyard.store.check import check_store

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR = "application/vnd.oci.image.layer.v1.tar"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


GOOD = _tar({"etc/good": b"good\n" * 1000})
EVIL = _tar({"etc/good": b"evil\n" * 1000})


def _pulled(store: Store, layers: list[tuple[bytes, str]], name: str) -> tuple[str, list[str]]:
    """Put an image as a pull does: ``layers`` are (the blob served, the diff id the config
    names); the blobs are stored as they are. Returns (image id, blob digests)."""
    config = ImageConfig.empty(Platform("linux", "amd64"))
    descs = []
    for blob, diff_id in layers:
        config = config.add_layer(diff_id, HistoryEntry(created_by=diff_id[:19]))
        store.blobs.put_bytes(blob)
        descs.append(Descriptor(GZIP, _digest(blob), len(blob)))
    config_bytes = config.to_json()
    manifest = Manifest(Descriptor.of(MEDIA_TYPE_OCI_CONFIG, config_bytes), tuple(descs))
    record = store.images.put(manifest.to_json(), config_bytes, [name], pulled=True)
    return record.id, [d.digest for d in descs]


def _derived(store: Store, diff_ids: list[str], name: str) -> str:
    """An image built on them: its manifest lists the layers uncompressed, as a build's."""
    config = ImageConfig.empty(Platform("linux", "amd64"))
    descs = []
    for diff_id in diff_ids:
        config = config.add_layer(diff_id, HistoryEntry(created_by="x"))
        layer = store.get_layer(diff_id)
        assert layer is not None and layer.size is not None
        descs.append(Descriptor(TAR, diff_id, layer.size))
    config_bytes = config.to_json()
    manifest = Manifest(Descriptor.of(MEDIA_TYPE_OCI_CONFIG, config_bytes), tuple(descs))
    return store.put_image(manifest.to_json(), config_bytes, [name]).id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "root")


def _clean(store: Store) -> None:
    report = check_store(store)
    assert report.ok, [f.message for f in report.findings]
    assert list(store.blobs.tmp.iterdir()) == []


def test_a_pull_keeps_the_compressed_blob_only(store: Store) -> None:
    gz = gzip.compress(GOOD, mtime=0)
    _, (blob,) = _pulled(store, [(gz, _digest(GOOD))], "reg.example/app:1")
    layer = store.get_layer(_digest(GOOD))
    assert layer is not None
    assert layer.size is None and dict(layer.blobs) == {}  # no form before the check
    assert [(p.compression, p.digest, p.size) for p in layer.pulled] == [("gzip", blob, len(gz))]
    assert not store.blobs.has(_digest(GOOD))
    assert store.layer_present(_digest(GOOD)) and store.layers.local(_digest(GOOD))
    _clean(store)


def test_first_use_inflates_checks_and_promotes(store: Store) -> None:
    gz = gzip.compress(GOOD, mtime=0)
    _, (blob,) = _pulled(store, [(gz, _digest(GOOD))], "reg.example/app:1")
    assert store.ensure_layer_blob(_digest(GOOD)) == _digest(GOOD)
    assert store.blobs.read_bytes(_digest(GOOD)) == GOOD
    layer = store.get_layer(_digest(GOOD))
    assert layer is not None and layer.size == len(GOOD) and layer.pulled == ()
    assert layer.blobs["gzip"].digest == blob and layer.blobs["none"].digest == _digest(GOOD)
    _clean(store)


def test_an_unpack_reads_it_checked_and_promotes_it(store: Store) -> None:
    gz = gzip.compress(GOOD, mtime=0)
    _, (blob,) = _pulled(store, [(gz, _digest(GOOD))], "reg.example/app:1")
    with store.layers.open_pulled(_digest(GOOD)) as f, tarfile.open(fileobj=f, mode="r|") as tf:
        assert [m.name for m in tf] == ["etc/good"]  # stops before the tar's padding
    layer = store.get_layer(_digest(GOOD))
    assert layer is not None and layer.size == len(GOOD) and layer.pulled == ()
    assert layer.blobs["gzip"].digest == blob
    assert not store.blobs.has(_digest(GOOD))  # an unpack writes no tar blob
    _clean(store)


def test_a_malicious_layer_fails_at_first_use_and_keeps_nothing(store: Store) -> None:
    # the blob is what the manifest says (the pull checked that), its content is not the
    # layer the config names
    evil = gzip.compress(EVIL, mtime=0)
    _, (blob,) = _pulled(store, [(evil, _digest(GOOD))], "reg.example/evil:1")
    before = sorted(store.blobs.iter_digests())
    with pytest.raises(StoreError) as info:
        store.ensure_layer_blob(_digest(GOOD))
    text = str(info.value)
    assert _digest(GOOD) in text and blob in text and "reg.example/evil:1" in text
    assert f"decompresses to {_digest(EVIL)}" in text and "tampered" in text
    assert sorted(store.blobs.iter_digests()) == before
    layer = store.get_layer(_digest(GOOD))
    assert layer is not None and layer.pulled and not layer.blobs and layer.size is None

    # an unpack reads it all, then refuses it before anything is committed
    with pytest.raises(StoreError, match="does not match its diff_id"), \
            store.layers.open_pulled(_digest(GOOD)) as f:
        while f.read(1 << 16):
            pass
    # no push or export takes it as the layer's gzip form
    assert store.layers.checked_form(_digest(GOOD), "gzip") is None
    with pytest.raises(StoreError, match="does not match its diff_id"):
        store.layers.check_pulled(_digest(GOOD))
    assert sorted(store.blobs.iter_digests()) == before
    _clean(store)


def test_a_tar_error_from_the_wrong_content_is_reported_as_a_mismatch(store: Store) -> None:
    evil = gzip.compress(EVIL, mtime=0)
    _pulled(store, [(evil, _digest(GOOD))], "reg.example/evil:1")
    from dockyard.errors import LayerError

    with pytest.raises(StoreError, match="does not match its diff_id"), \
            store.layers.open_pulled(_digest(GOOD)) as f:
        f.read(512)
        raise LayerError("entry ../x: escapes the root")  # what an unpack would say


def test_a_truncated_or_undecodable_blob_fails_clearly(store: Store) -> None:
    cut = gzip.compress(GOOD, mtime=0)[:-100]  # a gzip stream that ends too early
    _pulled(store, [(cut, _digest(GOOD))], "reg.example/cut:1")
    with pytest.raises(StoreError, match=r"is not a layer \(corrupt gzip data"):
        store.ensure_layer_blob(_digest(GOOD))
    assert not store.blobs.has(_digest(GOOD))
    _clean(store)


def test_a_good_pull_of_a_layer_a_bad_one_claims_too(store: Store) -> None:
    # two images claim one diff id: the bad blob never poisons the layer
    _, (bad,) = _pulled(store, [(gzip.compress(EVIL, mtime=0), _digest(GOOD))], "r/evil:1")
    good_gz = gzip.compress(GOOD, mtime=1)
    _, (good,) = _pulled(store, [(good_gz, _digest(GOOD))], "r/good:1")
    assert store.ensure_layer_blob(_digest(GOOD)) == _digest(GOOD)
    layer = store.get_layer(_digest(GOOD))
    assert layer is not None and layer.blobs["gzip"].digest == good
    assert [p.digest for p in layer.pulled] == [bad]  # still unchecked, never a form
    assert store.layers.checked_form(_digest(GOOD), "gzip") == layer.blobs["gzip"]
    _clean(store)


def test_a_pulled_blob_never_becomes_a_local_layers_form(store: Store) -> None:
    # the layer is here already (built or loaded); a pull claims it with other content
    store.blobs.put_bytes(GOOD)
    store.put_layer(_digest(GOOD), len(GOOD))
    _pulled(store, [(gzip.compress(EVIL, mtime=0), _digest(GOOD))], "r/evil:1")
    assert store.layers.checked_form(_digest(GOOD), "gzip") is None
    assert "gzip" not in store.get_layer(_digest(GOOD)).blobs  # type: ignore[union-attr]


def test_checked_form_checks_a_good_pulled_blob_once(store: Store) -> None:
    gz = gzip.compress(GOOD, mtime=0)
    _, (blob,) = _pulled(store, [(gz, _digest(GOOD))], "r/app:1")
    form = store.layers.checked_form(_digest(GOOD), "gzip")
    assert form is not None and form.digest == blob
    assert not store.blobs.has(_digest(GOOD))  # checked, nothing written
    layer = store.get_layer(_digest(GOOD))
    assert layer is not None and layer.size == len(GOOD) and layer.pulled == ()
    assert store.layers.checked_form(_digest(GOOD), "zstd") is None


def test_prune_keeps_a_pulled_layer_while_an_image_uses_it(store: Store) -> None:
    gz = gzip.compress(GOOD, mtime=0)
    pulled_id, (blob,) = _pulled(store, [(gz, _digest(GOOD))], "r/app:1")
    prune(store)
    assert store.blobs.has(blob)
    # an image built on it (its manifest names the layer uncompressed) keeps the blob alone
    store.layers.check_pulled(_digest(GOOD))  # the build knows the size once it checked
    _derived(store, [_digest(GOOD)], "derived:1")
    store.remove_image(pulled_id)
    prune(store)
    assert store.blobs.has(blob) and not store.blobs.has(_digest(GOOD))
    assert store.ensure_layer_blob(_digest(GOOD)) == _digest(GOOD)
    _clean(store)


def test_prune_collects_an_unused_pulled_layer(store: Store) -> None:
    pulled_id, (blob,) = _pulled(store, [(gzip.compress(GOOD, mtime=0), _digest(GOOD))],
                                 "r/app:1")
    store.remove_image(pulled_id)
    prune(store)
    assert not store.blobs.has(blob)
    assert store.get_layer(_digest(GOOD)) is None
    _clean(store)


def test_check_reports_a_lost_pulled_blob(store: Store) -> None:
    _, (blob,) = _pulled(store, [(gzip.compress(GOOD, mtime=0), _digest(GOOD))], "r/app:1")
    store.blobs.path(blob).unlink()
    report = check_store(store)
    messages = [f.message for f in report.findings]
    assert any("r/app:1" in m and "is gone" in m for m in messages), messages
    assert any(f"the blob {blob} a pull stored for it is missing" in m for m in messages)


def test_a_pulled_image_shows_its_gzip_trailers_size_until_checked(store: Store) -> None:
    gz = gzip.compress(GOOD, mtime=0)
    image_id, _ = _pulled(store, [(gz, _digest(GOOD))], "r/app:1")
    assert store.image_size(store.get_image(image_id)) == len(GOOD)  # as gzip -l says
    assert store.get_image(image_id).size == len(GOOD)
    layer = store.get_layer(_digest(GOOD))
    assert layer is not None and layer.size is None  # a hint, never the layer's size
    assert layer.pulled[0].tar_size_hint == len(GOOD)
    store.ensure_layer_blob(_digest(GOOD))
    assert store.image_size(store.get_image(image_id)) == len(GOOD)


def test_without_a_trailer_the_compressed_size_is_shown(store: Store) -> None:
    import zlib

    raw = zlib.compress(GOOD)  # no gzip magic: no hint
    image_id, _ = _pulled(store, [(raw, _digest(GOOD))], "r/app:1")
    assert store.image_size(store.get_image(image_id)) == len(raw)
