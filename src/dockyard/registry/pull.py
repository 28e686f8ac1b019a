"""Pull an image from a registry into the local store.

The reference resolves to a manifest (an index or manifest list picks the wanted platform,
the host's by default, and the name then stands for the index: pulling another platform
adds that platform's image under the same name, see ``Store.put_index``); the config and every layer are downloaded streaming and verified
against their descriptor's digest and size. The store keeps each layer as the registry's
compressed blob only, as containerd does: its ``rootfs.diff_ids`` entry is checked the first
time the layer is needed uncompressed (unpacked into a snapshot, or its tar wanted), and a
layer that does not match fails there, naming the image and the layer, with nothing kept
from it (``store/layers.py``). The registry's manifest bytes are kept unchanged, so the
image's manifest digest is the registry's and pushing it back uploads the same blobs, as
they are (nothing is compressed again).

Nothing is half-written: downloads go to the store's private temp files and become visible
only after every blob of the image has arrived and matched; then the image record and its
names (``repo:tag`` and the RepoDigest ``repo@sha256:...``) are written. A failure (a bad
digest, a truncated body, an HTTP error) raises RegistryError naming the registry, the
repository and the blob, and leaves no blob and no image behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dockyard.errors import RegistryError, StoreError
from dockyard.image.oci import (
    Descriptor,
    ImageConfig,
    Index,
    InvalidDocument,
    Manifest,
    Platform,
    digest_bytes,
    is_foreign_layer,
    is_index,
    is_manifest,
)
from dockyard.image.reference import Reference, parse_reference
from dockyard.registry.client import RegistryClient, RegistryOptions
from dockyard.registry.sources import BlobSources
from dockyard.store.blobs import BlobBatch
from dockyard.store.db import Store

__all__ = ["PullResult", "pull"]

_MAX_DOCUMENT = 8 << 20  # manifests and configs are small; refuse a runaway one
_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PullResult:
    """What a pull stored.

    ``digest`` is what the reference resolved to (the index's digest for a multi-platform
    image, as Docker's RepoDigests show), ``manifest_digest`` the image manifest's.
    """

    image_id: str
    reference: str
    digest: str
    manifest_digest: str
    layers_downloaded: int
    layers_present: int


class _Inflater:
    """Push-style decompression of gzip (every member) or zstd (every frame), or none,
    chosen by the stream's magic bytes (the first four, however the stream is cut)."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self._head = b""
        self._obj: Any = None

    def _choose(self, head: bytes) -> None:
        if head.startswith(b"\x1f\x8b"):
            self.kind = "gzip"
        elif head.startswith(b"\x28\xb5\x2f\xfd"):
            self.kind = "zstd"
        else:
            self.kind = "none"
        self._obj = self._new()

    def _new(self) -> Any:
        if self.kind == "gzip":
            from isal import isal_zlib

            return isal_zlib.decompressobj(wbits=31)
        if self.kind == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj()
        return None

    def feed(self, data: bytes) -> bytes:
        """Decompress the next piece of the stream."""
        if self.kind is None:
            self._head += data
            if len(self._head) < 4:
                return b""
            data, self._head = self._head, b""
            self._choose(data)
        return self._inflate(data)

    def finish(self) -> bytes:
        """What a stream shorter than its magic still holds."""
        if self.kind is not None:
            return b""
        data, self._head = self._head, b""
        self._choose(data)
        return self._inflate(data)

    def _inflate(self, data: bytes) -> bytes:
        if self._obj is None:
            return data
        out: list[bytes] = []
        while data:
            if self._obj.eof:
                # bytes after a complete member or frame: the next one, or zero padding
                if not data.strip(b"\0"):
                    break
                self._obj = self._new()
            out.append(self._obj.decompress(data))
            data = self._obj.unused_data if self._obj.eof else b""
        return b"".join(out)

    @property
    def complete(self) -> bool:
        """Whether the last member or frame ended (always true for an uncompressed stream)."""
        return self._obj is None or bool(self._obj.eof)


class TransferError(RegistryError):
    """A blob that arrived broken (cut short, too long, failing its digest, not
    decompressible, the connection dropped mid-body): worth downloading again."""


def with_retries(client: RegistryClient, fn: Callable[[], Any]) -> Any:
    """``fn()``, tried again with the client's backoff while it raises TransferError; the
    last failure says how many times it was tried."""
    attempts = 1 + max(0, client.options.retries)
    for attempt in range(attempts):
        try:
            return fn()
        except TransferError as err:
            if attempt == attempts - 1:
                suffix = f" (tried {attempts} times)" if attempts > 1 else ""
                raise RegistryError(f"{err}{suffix}") from None
            client._pause(attempt, None)
    raise AssertionError("unreachable")  # pragma: no cover


_PARALLEL_LAYERS = 3
"""Layers downloaded at once: hashing, decompression and writing release the GIL, so a few
threads keep both cores busy (and a remote registry's round trips overlap)."""


class _Puller:
    def __init__(self, store: Store, client: RegistryClient, ref: Reference,
                 progress: Progress) -> None:
        self.store = store
        self.client = client
        self.ref = ref
        self.repo = ref.path
        self.progress = progress

    def fail(self, what: str, detail: str = "") -> RegistryError:
        return RegistryError(f"{self.ref.domain}/{self.repo}: {what}"
                             + (f": {detail}" if detail else ""))

    def broken(self, what: str, detail: str = "") -> TransferError:
        return TransferError(f"{self.ref.domain}/{self.repo}: {what}"
                             + (f": {detail}" if detail else ""))

    def document(self, reference: str, expected: Descriptor | None) -> tuple[bytes, str, str]:
        """A manifest or index by tag or digest, verified (downloaded again if it arrives
        broken): (body, media type, digest)."""
        got: tuple[bytes, str, str] = with_retries(
            self.client, lambda: self._document(reference, expected))
        return got

    def _document(self, reference: str, expected: Descriptor | None) -> tuple[bytes, str, str]:
        body, media_type, header_digest = self.client.get_manifest(self.repo, reference)
        digest = digest_bytes(body)
        if expected is not None:
            if digest != expected.digest or len(body) != expected.size:
                raise self.broken(f"manifest {expected.digest} does not match its descriptor",
                                  f"got {digest} ({len(body)} bytes, expected {expected.size})")
        elif reference.startswith("sha256:") and digest != reference:
            raise self.broken(f"manifest {reference} does not match its digest",
                              f"got {digest}")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise self.broken(f"manifest {reference} does not match the Docker-Content-Digest "
                              f"header {header_digest}", f"got {digest}")
        if not media_type or media_type in ("application/json", "text/plain",
                                            "application/octet-stream"):
            media_type = _media_type_in(body) or media_type
        if media_type in _SCHEMA1:
            raise self.fail(f"{reference} is a Docker schema 1 manifest, which dockyard does "
                            "not support (push it again with a current client)")
        return body, media_type, digest

    def small_blob(self, desc: Descriptor, what: str, limit: int = _MAX_DOCUMENT) -> bytes:
        """A config-sized blob, verified; refused when its descriptor says over ``limit``."""
        if desc.size > limit:
            raise self.fail(f"{what} {desc.digest} is too large ({desc.size} bytes)")
        return bytes(with_retries(self.client, lambda: self._small_blob(desc, what)))

    def _small_blob(self, desc: Descriptor, what: str) -> bytes:
        chunks: list[bytes] = []
        with self.client.open_blob(self.repo, desc.digest) as response:
            chunks.extend(self._iter(response, desc, what))
        data = b"".join(chunks)
        self._check(desc, what, digest_bytes(data), len(data))
        return data

    def _iter(self, response: Any, desc: Descriptor, what: str) -> Any:
        import httpx

        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) != desc.size:
            raise self.broken(f"{what} {desc.digest}: the registry sends {length} bytes, "
                              f"the manifest says {desc.size}")
        total = 0
        try:
            for chunk in response.iter_raw():
                total += len(chunk)
                if total > desc.size:
                    raise self.broken(f"{what} {desc.digest} is larger than the "
                                      f"{desc.size} bytes its descriptor says")
                yield chunk
        except httpx.HTTPError as err:
            raise self.broken(f"download of {what} {desc.digest} failed after {total} of "
                              f"{desc.size} bytes", f"{type(err).__name__}: {err}") from None

    def _check(self, desc: Descriptor, what: str, digest: str, size: int) -> None:
        if size != desc.size:
            raise self.broken(f"{what} {desc.digest} is truncated or too long",
                              f"got {size} bytes, expected {desc.size}")
        if digest != desc.digest:
            raise self.broken(f"{what} {desc.digest} failed verification", f"got {digest}")

    def layer(self, desc: Descriptor, diff_id: str, batch: BlobBatch,
              client: RegistryClient | None = None) -> None:
        """Download one layer into ``batch`` (``client``: this thread's, default the
        puller's): verified and fsynced, visible only when the batch ends. A broken
        transfer is downloaded again into new writers."""
        client = client or self.client
        with_retries(client, lambda: self._layer_once(desc, diff_id, batch, client))

    def _layer_once(self, desc: Descriptor, diff_id: str, batch: BlobBatch,
                    client: RegistryClient) -> None:
        """Receive the compressed blob, hashed once by its writer: kept only if it is the
        manifest's (digest and size), never decompressed here (the diff id is checked on
        first use, see the module docstring)."""
        with batch.writer() as writer:
            with client.open_blob(self.repo, desc.digest) as response:
                try:
                    for chunk in self._iter(response, desc, "layer"):
                        writer.write(chunk)
                except RegistryError:
                    raise
                except (StoreError, OSError) as err:  # the disk, not the transfer: no retry
                    raise self.fail(f"storing layer {desc.digest} failed", str(err)) from None
            self._check(desc, "layer", writer.digest, writer.size)
            try:  # verified: fsynced on the batch's thread, visible when the batch ends
                writer.commit(desc.digest, desc.size)
            except StoreError as err:
                raise self.fail("storing the layers failed", str(err)) from None

    def _layers(self, wanted: list[tuple[Descriptor, str]], batch: BlobBatch) -> None:
        """Download ``wanted`` (descriptor, diff id) into ``batch``, up to
        ``_PARALLEL_LAYERS`` at once, each thread with a client (a connection) of its own;
        the first failure stops the others and is raised."""
        def report(desc: Descriptor) -> None:
            self.progress(f"{desc.digest[7:19]}: pull complete ({desc.size} bytes)")

        if len(wanted) <= 1:
            for desc, diff_id in wanted:
                self.layer(desc, diff_id, batch)
                report(desc)
            return
        import threading

        from dockyard.registry._parallel import each_on_threads

        lock = threading.Lock()

        def download(client: RegistryClient, item: tuple[Descriptor, str]) -> None:
            self.layer(item[0], item[1], batch, client)
            with lock:
                report(item[0])

        each_on_threads(wanted, _PARALLEL_LAYERS, "dockyard-pull", connect=self.client.sibling,
                        do=download, close=lambda client: client.close())

    def run(self, platform: Platform) -> PullResult:
        ref = self.ref
        target = ref.digest or ref.tag or "latest"
        self.progress(f"{ref.familiar_name}: pulling {target} from {ref.domain}")
        body, media_type, resolved = self.document(target, None)
        manifest_body, manifest_digest = body, resolved
        index_body: bytes | None = None
        if is_index(media_type):
            index_body = body
            try:
                index = Index.from_json(body)
            except InvalidDocument as err:
                raise self.fail(f"index {resolved} is invalid", str(err)) from None
            desc = index.find(platform)
            if desc is None:
                found = sorted({str(d.platform) for d in index.manifests if d.platform})
                raise self.fail(f"{target} has no image for {platform}",
                                f"it has {', '.join(found) or 'no platforms'}")
            manifest_body, child_type, manifest_digest = self.document(desc.digest, desc)
            if not is_manifest(child_type):
                raise self.fail(f"{desc.digest} is not an image manifest ({child_type})")
        elif not is_manifest(media_type):
            raise self.fail(f"{target} is not an image (media type {media_type or 'unknown'})")
        try:
            manifest = Manifest.from_json(manifest_body)
        except InvalidDocument as err:
            raise self.fail(f"manifest {manifest_digest} is invalid", str(err)) from None
        config_bytes = self.small_blob(manifest.config, "config")
        try:
            config = ImageConfig.from_json(config_bytes)
        except InvalidDocument as err:
            raise self.fail(f"config {manifest.config.digest} is invalid", str(err)) from None
        diff_ids = config.diff_ids
        if len(diff_ids) != len(manifest.layers):
            raise self.fail(f"manifest {manifest_digest} has {len(manifest.layers)} layers but "
                            f"its config lists {len(diff_ids)} diff_ids")
        downloaded = present = 0
        wanted: list[tuple[Descriptor, str]] = []
        for diff_id, desc in zip(diff_ids, manifest.layers, strict=True):
            if is_foreign_layer(desc.media_type):
                raise self.fail(f"layer {desc.digest} is a foreign layer ({desc.media_type}),"
                                " which dockyard does not support")
            if self.store.blobs.has(desc.digest):  # content-addressed: it is the same blob
                present += 1
                self.progress(f"{desc.digest[7:19]}: already exists")
            elif all(w.digest != desc.digest for w, _ in wanted):
                wanted.append((desc, diff_id))
        downloaded = len(wanted)
        try:
            with self.store.blobs.batch() as batch:
                self._layers(wanted, batch)
        except StoreError as err:
            raise self.fail("storing the layers failed", str(err)) from None
        names = []
        if ref.tag is not None:
            names.append(str(ref.with_tag(ref.tag)))
        names.append(f"{ref.name}@{resolved}")
        try:
            if index_body is None:
                record = self.store.images.put(manifest_body, config_bytes, names, pulled=True)
            else:
                # The name is the multi-platform image: it keeps the platforms pulled before
                # (pulls of other platforms add theirs) and gives each reader its own.
                record = self.store.images.put(manifest_body, config_bytes, pulled=True)
                self.store.put_index(index_body, names)
        except StoreError as err:
            raise self.fail("storing the image failed", str(err)) from None
        BlobSources(self.store.root).record(
            ref.domain, self.repo,
            [manifest.config.digest, *(d.digest for d in manifest.layers)])
        self.progress(f"Digest: {resolved}")
        return PullResult(record.id, str(ref), resolved, manifest_digest, downloaded, present)


def _media_type_in(body: bytes) -> str | None:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    media_type = data.get("mediaType")
    if isinstance(media_type, str):
        return media_type
    if "manifests" in data:
        return "application/vnd.oci.image.index.v1+json"
    if "config" in data:
        return "application/vnd.oci.image.manifest.v1+json"
    if data.get("schemaVersion") == 1:
        return _SCHEMA1[0]
    return None


def pull(
    store: Store,
    reference: str,
    *,
    platform: str | Platform | None = None,
    options: RegistryOptions | None = None,
    on_progress: Progress | None = None,
) -> PullResult:
    """Pull ``reference`` (``busybox``, ``localhost:5000/app:1``, ``repo@sha256:...``) into
    ``store``; returns what was stored. Raises RegistryError (see the module docstring)."""
    ref = parse_reference(reference)
    if ref.digest is not None and not ref.digest.startswith("sha256:"):
        raise RegistryError(f"{ref}: only sha256 digests can be verified")
    if isinstance(platform, Platform):
        wanted = platform
    elif platform:
        try:
            wanted = Platform.parse(platform)
        except InvalidDocument as err:
            raise RegistryError(str(err)) from None
    else:
        wanted = Platform.host()
    with RegistryClient(ref.domain, options) as client, store.build_lock():
        return _Puller(store, client, ref, on_progress or (lambda _m: None)).run(wanted)
