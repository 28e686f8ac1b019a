"""The exporter's view of an image in the store, and the few store calls it needs.

All store access of the exporter and the archive commands goes through this module, so the
rest of the room reads plain data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dockyard.errors import NotFoundError, StoreError
from dockyard.store.db import Store

__all__ = [
    "LAYER_TAR",
    "MANIFEST_OCI",
    "LayerRef",
    "StoredImage",
    "canonical",
    "ingest",
    "open_blob",
    "open_layer",
    "read_image",
    "sha256_bytes",
]

MANIFEST_OCI = "application/vnd.oci.image.manifest.v1+json"
INDEX_OCI = "application/vnd.oci.image.index.v1+json"
CONFIG_OCI = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MANIFEST_DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
LIST_DOCKER = "application/vnd.docker.distribution.manifest.list.v2+json"
CONFIG_DOCKER = "application/vnd.docker.container.image.v1+json"
LAYER_DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_DOCKER_TAR = "application/vnd.docker.image.rootfs.diff.tar"


def canonical(obj: Any) -> bytes:
    """Compact JSON with sorted keys: the bytes we write for manifests and indexes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class LayerRef:
    """One layer as the store keeps it: the uncompressed tar, keyed by its diff_id."""

    diff_id: str
    size: int


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image read from the store: its id (config digest), config and uncompressed layers."""

    id: str
    config_bytes: bytes
    config: dict[str, Any]
    layers: tuple[LayerRef, ...]
    names: tuple[str, ...]

    @property
    def config_digest(self) -> str:
        return sha256_bytes(self.config_bytes)


def read_image(store: Store, ref_or_id: str, platform: str | None = None) -> StoredImage:
    """Read an image by name or id (of a multi-platform name: the default platform's, or
    ``platform``'s, normalized ``os/arch[/variant]``); NotFoundError if there is none."""
    record = store.get_image(ref_or_id, platform=platform)
    manifest_bytes = store.blobs.read_bytes(record.manifest_digest)
    manifest = json.loads(manifest_bytes)
    config_bytes = store.blobs.read_bytes(manifest["config"]["digest"])
    config = json.loads(config_bytes)
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    descs = manifest.get("layers", [])
    if len(descs) != len(diff_ids):
        raise StoreError(f"image {record.id}: manifest has {len(descs)} layers, "
                         f"config has {len(diff_ids)} diff_ids")
    return StoredImage(record.id, config_bytes, config, _layer_refs(store, diff_ids),
                       tuple(record.names))


def _layer_refs(store: Store, diff_ids: list[str]) -> tuple[LayerRef, ...]:
    """An image's layers. A layer that only a snapshot holds keeps no tar blob: a reader
    that needs the tar gets it through :func:`open_layer` (the OCI export compresses it
    from the snapshot directly). The records of the layers without a blob are read at
    once (a fresh build's 100 layers: 5 queries instead of 500)."""
    sizes: dict[str, int] = {}
    for diff_id in diff_ids:
        with suppress(NotFoundError):
            sizes[diff_id] = store.blobs.size(diff_id)
    records = store.layers.get_many([d for d in diff_ids if d not in sizes])
    refs: list[LayerRef] = []
    for diff_id in diff_ids:
        size = sizes.get(diff_id)
        if size is None:
            layer = records.get(diff_id)
            if layer is not None and layer.size is not None and layer.snapshots:
                size = layer.size
            else:
                size = store.blobs.size(store.ensure_layer_blob(diff_id))
                sizes[diff_id] = size
        refs.append(LayerRef(diff_id, size))
    return tuple(refs)


@contextmanager
def open_blob(store: Store, digest: str) -> Iterator[BinaryIO]:
    """Open a blob of the store for reading."""
    with store.blobs.open(digest) as f:
        yield f


@contextmanager
def open_layer(store: Store, diff_id: str) -> Iterator[BinaryIO]:
    """Open layer ``diff_id``'s tar (written from its snapshot first if no blob holds it)."""
    with store.blobs.open(store.ensure_layer_blob(diff_id)) as f:
        yield f


def blob_path(store: Store, digest: str) -> Path:
    """Where a blob lives on disk (for hard-linking into an OCI layout directory)."""
    return store.blobs.path(digest)


def ingest(store: Store, src: BinaryIO, expected: str | None = None) -> tuple[str, int]:
    """Copy ``src`` into the blob store; with ``expected`` the digest is verified before the
    blob becomes visible (a mismatch raises StoreError and leaves nothing behind)."""
    return store.blobs.put_stream(src, expected)


def put_image(store: Store, manifest: bytes, config: bytes, names: tuple[str, ...]) -> str:
    """Record an image (manifest and config blobs are written too); returns its id."""
    record = store.put_image(manifest, config, names)
    return record.id
