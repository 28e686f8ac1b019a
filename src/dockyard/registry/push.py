"""Push an image from the local store to a registry.

Layers are compressed through the exporter (``compressed_layer``), which records the
compressed blob as a form of its layer, so a second push or export does no compression work;
a pulled image keeps the registry's compressed blobs, and pushing it elsewhere gives the same
manifest digest. Each blob is first checked with ``HEAD`` (skipped when the repository has
it), then mounted from another repository of the same registry when this store saw it there
(``sources.py``), else uploaded: one ``PUT`` up to ``chunk_size`` bytes, ``PATCH`` chunks
above. The config follows the layers and the manifest comes last, under the tag (OCI media
types by default, Docker schema2 with ``format="docker"``). The pushed digest is recorded as
the image's RepoDigest.

A multi-platform name (an index in the store) is pushed as an index: each platform's
manifest by digest, then an OCI index (or a Docker manifest list with ``format="docker"``)
listing them with their platforms, under the tag.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any, Literal

from dockyard.errors import RegistryError, UsageError
from dockyard.image.oci import (
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Compression,
    Descriptor,
    ImageConfig,
    Index,
    InvalidDocument,
    Platform,
    canonical_json,
    digest_bytes,
    layer_compression,
    layer_media_type,
)
from dockyard.image.reference import Reference, parse_reference
from dockyard.registry.client import RegistryClient, RegistryOptions
from dockyard.registry.sources import BlobSources
from dockyard.store.db import ImageRecord, Store

__all__ = ["PushResult", "layer_blob", "push"]

ManifestFormat = Literal["oci", "docker"]
PushCompression = Literal["gzip", "zstd", "uncompressed"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class PushResult:
    """What a push did: the manifest's digest, size and media type, and per-blob counts."""

    reference: str
    digest: str
    size: int
    media_type: str
    uploaded: int
    mounted: int
    present: int


def layer_blob(
    store: Store, diff_id: str, compression: PushCompression,
) -> tuple[str, int, Callable[[], None] | None]:
    """The blob that carries layer ``diff_id`` with ``compression``: ``(digest, size,
    ensure_local)``. A stored form is used as it is; a form only known remotely (an imported
    build cache's) is not downloaded now, and ``ensure_local`` downloads it if an upload
    turns out to need its bytes (a HEAD or a cross-repository mount needs none); else the
    layer is compressed now, once, and the form kept with the layer."""
    from dockyard.exporter.layout import compressed_layer

    have = _stored_blob(store, diff_id, compression)
    if have is not None:
        return have
    made = compressed_layer(store, diff_id, compression)
    return made.digest, made.size, None


def _stored_blob(
    store: Store, diff_id: str, compression: PushCompression,
) -> tuple[str, int, Callable[[], None] | None] | None:
    """:func:`layer_blob` without compressing: None when the layer must be compressed."""
    kind: Compression = "none" if compression == "uncompressed" else compression
    layer = store.get_layer(diff_id)
    if layer is not None:
        # a pulled base's blob counts once it matched the diff id (checked now if need be)
        form = store.layers.checked_form(diff_id, kind, layer)
        if form is not None:
            return form.digest, form.size, None
        if kind == "none" and store.blobs.has(diff_id):
            return diff_id, store.blobs.size(diff_id), None
        if not store.layers.local(diff_id):
            for remote in layer.remotes:
                try:
                    have = layer_compression(remote.media_type)
                except InvalidDocument:
                    continue
                if have == kind:
                    def fetch(diff_id: str = diff_id) -> None:
                        store.layers.fetch_remote(diff_id, kind)

                    return remote.digest, remote.size, fetch
    return None


def _layer_descriptors(
    store: Store, record: ImageRecord, config: ImageConfig, compression: PushCompression,
    docker: bool, tee: Callable[[str], Any] | None = None,
) -> list[tuple[Descriptor, Callable[[], None] | None]]:
    from dockyard.exporter.layout import compressed_layers

    stored = store.read_manifest(record).layers
    kind: Compression = "none" if compression == "uncompressed" else compression
    out: list[tuple[Descriptor, Callable[[], None] | None] | None] = []
    missing: list[tuple[int, str]] = []
    for index, diff_id in enumerate(config.diff_ids):
        desc = stored[index] if index < len(stored) else None
        if desc is not None and desc.digest != diff_id and store.blobs.has(desc.digest):
            try:
                have = layer_compression(desc.media_type)
            except InvalidDocument:
                have = None
            if have == kind:  # a pulled image: push the registry's own blob back
                out.append((Descriptor(layer_media_type(have, docker=docker), desc.digest,
                                       desc.size), None))
                continue
        blob = _stored_blob(store, diff_id, compression)
        if blob is None:
            missing.append((index, diff_id))
            out.append(None)
            continue
        digest, size, ensure_local = blob
        out.append((Descriptor(layer_media_type(kind, docker=docker), digest, size),
                    ensure_local))
    if missing:  # compressed together, several layers at once (exporter/layout.py)
        made = compressed_layers(store, [d for _, d in missing], compression, tee)
        for (index, _), layer in zip(missing, made, strict=True):
            out[index] = (Descriptor(layer_media_type(kind, docker=docker), layer.digest,
                                     layer.size), None)
    return [item for item in out if item is not None]


_PARALLEL_BLOBS = 4
"""Blobs pushed at once: HEADs and mounts are round trips, and a registry takes several
uploads at once faster than one after another."""


class StreamedUpload:
    """The upload of a layer blob while it is compressed (a
    :class:`~dockyard.exporter.layout.BlobTee`): the compressor's pieces go through a
    bounded queue to a thread of its own, which sends them as one ``PATCH`` and closes the
    upload with the digest of the blob the store committed (:meth:`RegistryClient.
    upload_stream`). Nothing here can store or publish a wrong blob: the pieces are the very
    bytes the store's writer got, the upload is closed only once that blob is committed
    (verified) and only when as many bytes were sent as it holds, and the registry checks
    what it received against the blob's digest before it keeps it. A failed stream (a dropped connection, a 5xx)
    only costs its bytes: :meth:`uploaded` is then None and the caller uploads the stored
    blob the usual way, with retries."""

    _QUEUE = 16  # pieces in flight (about 1 MiB each: the compressor's chunk)

    def __init__(self, connect: Callable[[], RegistryClient], repo: str) -> None:
        import queue
        import threading

        self._connect = connect
        self._repo = repo
        self._queue: queue.Queue[bytes | tuple[str, int] | None] = queue.Queue(self._QUEUE)
        self._gone = threading.Event()  # the uploading thread stopped reading
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._result: str | None = None
        self.error: BaseException | None = None

    # --- the compressor's side ---

    def write(self, data: bytes, /) -> int:
        if self._thread is None:
            self._start()
        self._put(data)
        return len(data)

    def finish(self, digest: str, size: int) -> None:
        if self._thread is None:
            self._start()
        self._put((digest, size))

    def abort(self) -> None:
        if self._thread is not None:
            self._put(None)

    def _put(self, item: bytes | tuple[str, int] | None) -> None:
        import queue

        while not self._gone.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # --- the upload's side ---

    def _start(self) -> None:
        import threading

        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="dockyard-upload")
                self._thread.start()

    def _run(self) -> None:
        count = 0
        end: list[tuple[str, int]] = []

        def pieces() -> Any:
            nonlocal count
            while True:
                item = self._queue.get()
                if item is None:
                    raise RegistryError("the blob could not be made")
                if isinstance(item, tuple):
                    end.append(item)
                    return
                count += len(item)
                yield item

        def close() -> tuple[str, int]:
            if not end:
                raise RegistryError("the streamed body was sent again")
            digest, size = end[0]
            if count != size:
                raise RegistryError(f"{count} bytes sent of blob {digest} ({size} bytes)")
            return digest, size

        try:
            with self._connect() as client:
                self._result = client.upload_stream(self._repo, pieces(), close)
        except BaseException as err:  # the caller uploads the stored blob instead
            self.error = err
        finally:
            self._gone.set()

    def uploaded(self) -> str | None:
        """Wait for the upload; the digest it closed with, or None if it did not finish."""
        if self._thread is None:
            return None
        self._thread.join()
        return self._result


class _Pusher:
    def __init__(self, store: Store, client: RegistryClient, ref: Reference,
                 progress: Progress) -> None:
        self.store = store
        self.client = client
        self.ref = ref
        self.repo = ref.path
        self.progress = progress
        self.sources = BlobSources(store.root)
        self.counts = {"uploaded": 0, "mounted": 0, "present": 0}
        self.streams: dict[str, StreamedUpload] = {}

    def connect(self) -> RegistryClient:
        """Another client of the same registry (one per thread: a client is not
        thread-safe)."""
        return self.client.sibling()

    def stream(self, diff_id: str) -> StreamedUpload:
        """A streamed upload for layer ``diff_id``, compressed now (see ``compressed_layers``'s
        ``tee``)."""
        upload = StreamedUpload(self.connect, self.repo)
        self.streams[diff_id] = upload
        return upload

    def streamed(self) -> set[str]:
        """Wait for the streamed uploads; the digests they uploaded (a failed one is
        pushed again the usual way by :meth:`blobs`)."""
        done: set[str] = set()
        for upload in self.streams.values():
            digest = upload.uploaded()
            if digest is not None:
                done.add(digest)
        self.streams.clear()
        return done

    def blobs(self, items: Sequence[tuple[Descriptor, Callable[[], None] | None]],
              streamed: Set[str] = frozenset()) -> None:
        """:meth:`blob` for each of ``items``, up to ``_PARALLEL_BLOBS`` at once (each
        thread with a client of its own); a digest in ``streamed`` is uploaded already."""
        import threading

        todo: list[tuple[Descriptor, Callable[[], None] | None]] = []
        seen: set[str] = set()
        for desc, ensure_local in items:
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            if desc.digest in streamed:
                self.counts["uploaded"] += 1
                self.progress(f"{desc.digest[7:19]}: pushed ({desc.size} bytes)")
                continue
            todo.append((desc, ensure_local))
        if len(todo) <= 1:
            for desc, ensure_local in todo:
                self.blob(desc, ensure_local)
            return
        from dockyard.registry._parallel import each_on_threads

        lock = threading.Lock()

        def upload(pusher: _Pusher, item: tuple[Descriptor, Callable[[], None] | None]) -> None:
            done = pusher.blob(*item)
            with lock:
                self.counts[done] += 1

        each_on_threads(
            todo, _PARALLEL_BLOBS, "dockyard-push",
            connect=lambda: _Pusher(self.store, self.connect(), self.ref, self._say(lock)),
            do=upload, close=lambda pusher: pusher.client.close())

    def _say(self, lock: Any) -> Progress:
        def say(message: str) -> None:
            with lock:
                self.progress(message)

        return say

    def blob(self, desc: Descriptor, ensure_local: Callable[[], None] | None = None) -> str:
        """Make sure the repository has ``desc``: HEAD, else a cross-repository mount, else an
        upload (``ensure_local`` first, for a blob this store only knows where to download).
        Returns what was done: ``present``, ``mounted`` or ``uploaded``."""
        short = desc.digest[7:19]
        size = self.client.blob_size(self.repo, desc.digest, push=True)
        if size is not None:
            self.counts["present"] += 1
            self.progress(f"{short}: layer already exists")
            return "present"
        location: str | None = None
        for source in self.sources.repositories(self.ref.domain, desc.digest)[:3]:
            if source == self.repo:
                continue
            try:
                location = self.client.start_upload(self.repo, mount=(desc.digest, source))
            except RegistryError:
                continue  # no pull access to the source: upload instead
            if location is None:
                self.counts["mounted"] += 1
                self.progress(f"{short}: mounted from {source}")
                return "mounted"
            break  # the registry opened a normal upload instead of mounting: use it
        blobs = self.store.blobs
        if ensure_local is not None and not blobs.has(desc.digest):
            ensure_local()

        def open_data() -> Any:
            return blobs.open(desc.digest)

        self.client.upload_blob(self.repo, desc.digest, desc.size, open_data,
                                location=location)
        self.counts["uploaded"] += 1
        self.progress(f"{short}: pushed ({desc.size} bytes)")
        return "uploaded"

    def run(self, record: ImageRecord, compression: PushCompression,
            manifest_format: ManifestFormat) -> PushResult:
        target = self.ref.tag or self.ref.digest or "latest"
        digest, size, media_type = self.image(record, compression, manifest_format, target)
        self.store.tag(record.id, f"{self.ref.name}@{digest}")
        self.progress(f"{target}: digest: {digest} size: {size}")
        return PushResult(str(self.ref), digest, size, media_type,
                          self.counts["uploaded"], self.counts["mounted"],
                          self.counts["present"])

    def run_index(self, images: list[tuple[str, ImageRecord]], compression: PushCompression,
                  manifest_format: ManifestFormat) -> PushResult:
        """Push every platform's image by digest, then the index under the tag."""
        docker = manifest_format == "docker"
        entries: list[Descriptor] = []
        for platform, record in images:
            digest, size, media_type = self.image(record, compression, manifest_format, None)
            entries.append(Descriptor(media_type, digest, size,
                                      platform=Platform.parse(platform)))
        media_type = MEDIA_TYPE_DOCKER_MANIFEST_LIST if docker else MEDIA_TYPE_OCI_INDEX
        body = Index(tuple(entries), media_type=media_type).to_json()
        digest = digest_bytes(body)
        target = self.ref.tag or self.ref.digest or "latest"
        self._put(target, body, media_type, digest)
        self.progress(f"{target}: digest: {digest} size: {len(body)} "
                      f"({', '.join(p for p, _ in images)})")
        return PushResult(str(self.ref), digest, len(body), media_type,
                          self.counts["uploaded"], self.counts["mounted"],
                          self.counts["present"])

    def _put(self, target: str, body: bytes, media_type: str, digest: str) -> None:
        if self.ref.digest is not None and self.ref.tag is None and self.ref.digest != digest:
            raise RegistryError(f"{self.ref.domain}/{self.repo}: cannot push to "
                                f"{self.ref.digest}: the manifest's digest is {digest}")
        reported = self.client.put_manifest(self.repo, target, body, media_type)
        if reported is not None and reported.startswith("sha256:") and reported != digest:
            raise RegistryError(f"{self.ref.domain}/{self.repo}: the registry stored the "
                                f"manifest as {reported}, expected {digest}")

    def image(self, record: ImageRecord, compression: PushCompression,
              manifest_format: ManifestFormat, target: str | None) -> tuple[str, int, str]:
        """Push one image's blobs and manifest (under ``target``, or by its digest when
        None); returns the manifest's digest, size and media type."""
        docker = manifest_format == "docker"
        config_bytes = self.store.config_bytes(record)
        config = self.store.read_config(record)
        try:  # layers compressed now are uploaded while they are compressed
            described = _layer_descriptors(self.store, record, config, compression, docker,
                                           self.stream)
        finally:
            streamed = self.streamed()
        layers = [desc for desc, _ in described]
        config_desc = Descriptor(MEDIA_TYPE_DOCKER_CONFIG if docker else MEDIA_TYPE_OCI_CONFIG,
                                 digest_bytes(config_bytes), len(config_bytes))
        media_type = MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST
        manifest = canonical_json({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config_desc.to_dict(),
            "layers": [d.to_dict() for d in layers],
        })
        digest = digest_bytes(manifest)
        self.progress(f"pushing {self.ref} ({len(layers)} layers)")
        self.blobs([*described, (config_desc, None)], streamed)
        if target is None:
            reported = self.client.put_manifest(self.repo, digest, manifest, media_type)
            if reported is not None and reported.startswith("sha256:") and reported != digest:
                raise RegistryError(f"{self.ref.domain}/{self.repo}: the registry stored the "
                                    f"manifest as {reported}, expected {digest}")
        else:
            self._put(target, manifest, media_type, digest)
        self.sources.record(self.ref.domain, self.repo,
                            [config_desc.digest, *(d.digest for d in layers)])
        return digest, len(manifest), media_type


def push(
    store: Store,
    source: str,
    destination: str | None = None,
    *,
    manifest_format: ManifestFormat = "oci",
    compression: PushCompression = "gzip",
    options: RegistryOptions | None = None,
    on_progress: Progress | None = None,
    platforms: Sequence[tuple[str, str]] = (),
) -> PushResult:
    """Push the image ``source`` (a name or id in ``store``) to ``destination`` (default: its
    name, ``registry/repo:tag``). Returns the pushed manifest's digest; raises RegistryError
    for registry failures and NotFoundError when the image is not in the store.

    A multi-platform name is pushed as an index of the platforms the store has; so are
    ``platforms`` (``(os/arch[/variant], image id)`` pairs) when given."""
    record = store.get_image(source)
    images = [(plat, store.get_image(pid)) for plat, pid in platforms]
    if not images and store.get_index(source) is not None:
        images = store.index_images(source)
    if destination is None:
        try:
            own = str(parse_reference(source))
        except UsageError:
            own = ""
        if own not in record.names:
            raise UsageError(f"push {source}: give a destination name (registry/repo:tag) "
                             "for an image id")
    ref = parse_reference(destination or source)
    if manifest_format not in ("oci", "docker"):
        raise UsageError(f"unknown manifest format {manifest_format!r} (oci or docker)")
    with RegistryClient(ref.domain, options) as client, store.build_lock():
        pusher = _Pusher(store, client, ref, on_progress or (lambda _m: None))
        if images:  # a multi-platform image: every platform, as one index
            return pusher.run_index(images, compression, manifest_format)
        return pusher.run(record, compression, manifest_format)
