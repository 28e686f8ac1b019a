"""Writing OCI image layouts and ``docker load`` archives, as a tar stream or a directory.

An OCI layout (image-spec ``image-layout.md``) is ``oci-layout``, ``index.json`` and
``blobs/sha256/<hex>``. Each name gets its own index entry, annotated as BuildKit does:
``io.containerd.image.name`` is the full reference, ``org.opencontainers.image.ref.name`` its
tag (what ``skopeo oci:DIR:TAG`` and ``umoci --image DIR:TAG`` look up).

A docker archive is what ``docker save`` writes since Docker 25: the same layout with
uncompressed layers, plus ``manifest.json`` (``Config``, ``RepoTags``, ``Layers`` as paths in
the archive), which older ``docker load`` versions and ``skopeo docker-archive:`` read.

Layers are kept uncompressed in the store (or only as a snapshot's diff, after a build). They
are compressed only here, several at once, a snapshot's tar streamed straight into the
compressor; the compressed blob is recorded in the store as a form of its layer
(``put_layer_blob(diff_id, kind, ...)``), so a second export of the same layers does no
compression work.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from dockyard._fs import no_space
from dockyard.errors import NotFoundError, StoreError
from dockyard.exporter._pending import atomic_output
from dockyard.exporter._stored import (
    CONFIG_OCI,
    INDEX_OCI,
    LAYER_GZIP,
    LAYER_TAR,
    LAYER_ZSTD,
    MANIFEST_OCI,
    StoredImage,
    blob_path,
    canonical,
    open_blob,
    sha256_bytes,
)
from dockyard.exporter.spec import Compression
from dockyard.image.oci import Platform
from dockyard.image.reference import parse_reference
from dockyard.layers.compress import compressing
from dockyard.store.db import Store
from dockyard.store.layers import LayerRecord

__all__ = ["ArchiveImage", "write_docker_archive", "write_oci_layout"]

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

_MEDIA = {"gzip": LAYER_GZIP, "zstd": LAYER_ZSTD, "uncompressed": LAYER_TAR}
_HOST = str(Platform.host())


@dataclass(frozen=True, slots=True)
class ArchiveImage:
    """An image to write, with the names it should carry (full references).

    ``platforms`` makes it a multi-platform image: each ``(os/arch[/variant], image)`` is
    written with its manifest, and one image index lists them; the names go on the index.
    """

    image: StoredImage
    names: tuple[str, ...]
    platforms: tuple[tuple[str, StoredImage], ...] = ()


@dataclass(frozen=True, slots=True)
class _Desc:
    media_type: str
    digest: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _blob_name(digest: str) -> str:
    algo, _, hex_ = digest.partition(":")
    return f"blobs/{algo}/{hex_}"


class _Sink(Protocol):
    def add_bytes(self, name: str, data: bytes) -> None: ...

    def add_blob(self, store: Store, digest: str, size: int) -> None: ...

    def close(self) -> None: ...


class _TarSink:
    """Streams entries into a tar (no seeking, so stdout works). Fixed metadata: reproducible.

    The framing is ``tarfile``'s in stream mode (``w|``, PAX): each entry's header as
    ``TarInfo.tobuf`` makes it, the data, zeros to a whole block; at the end two zero blocks
    and zeros to a whole record. A blob's bytes go from its file to the output inside the
    kernel when the output is a file descriptor (``copy_file_range``, else ``sendfile``),
    not through Python in 16 KiB pieces."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._fd: int | None = None
        try:
            fd = out.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is not None:
            out.flush()
            self._fd = fd
        self._offset = 0
        self._seen: set[str] = set()
        self.closed = False

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            self._out.write(data)
        else:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        self._offset += len(data)

    def _header(self, info: tarfile.TarInfo) -> None:
        self._write(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))

    def _dirs(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i]) + "/"
            if d not in self._seen:
                self._seen.add(d)
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                self._header(info)

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        return info

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self._write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def add_bytes(self, name: str, data: bytes) -> None:
        if name in self._seen:
            return
        self._dirs(name)
        self._seen.add(name)
        self._header(self._info(name, len(data)))
        self._write(data)
        self._pad(len(data))

    def add_blob(self, store: Store, digest: str, size: int) -> None:
        if _blob_name(digest) in self._seen:
            return
        with open_blob(store, digest) as f:
            self._add_entry(_blob_name(digest), f, size)

    def add_file(self, desc: _Desc, path: str) -> None:
        """Blob ``desc`` from file ``path`` (its bytes, whatever the file's name)."""
        if _blob_name(desc.digest) in self._seen:
            return
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise NotFoundError(f"blob not found: {desc.digest}") from None
        with f:
            self._add_entry(_blob_name(desc.digest), f, desc.size)

    def _add_entry(self, name: str, src: BinaryIO, size: int) -> None:
        self._dirs(name)
        self._seen.add(name)
        self._header(self._info(name, size))
        self._copy(src, size)
        self._pad(size)

    def _copy(self, src: BinaryIO, size: int) -> None:
        """``size`` bytes of ``src`` (from its start) to the output; StoreError if it has
        fewer."""
        done = 0
        if self._fd is not None:
            done = _kernel_copy(src.fileno(), self._fd, size)
            self._offset += done
            if done < size:
                src.seek(done)
        while done < size:
            chunk = src.read(min(size - done, 1 << 20))
            if not chunk:
                raise StoreError(f"a blob is shorter than its {size} bytes")
            self._write(chunk)
            done += len(chunk)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        if self._offset % tarfile.RECORDSIZE:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - self._offset % tarfile.RECORDSIZE))
        if self._fd is None:
            self._out.flush()

    def abort(self) -> None:
        """Give up after an error: write nothing more."""
        self.closed = True


def _kernel_copy(src_fd: int, dst_fd: int, size: int) -> int:
    """Copy up to ``size`` bytes from ``src_fd``'s start to ``dst_fd`` (at its offset)
    inside the kernel; returns how many were copied (fewer where it cannot)."""
    done = 0
    for call in (os.copy_file_range, os.sendfile):
        try:
            while done < size:
                if call is os.sendfile:
                    n = os.sendfile(dst_fd, src_fd, done, size - done)
                else:
                    n = os.copy_file_range(src_fd, dst_fd, size - done, done)
                if n == 0:
                    return done
                done += n
            return done
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                                 errno.EBADF):
                raise
    return done


class _DirSink:
    """Writes a layout directory; blobs are hard-linked from the store when they can be."""

    def __init__(self, root: Path) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True)

    def add_bytes(self, name: str, data: bytes) -> None:
        target = self._root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def add_blob(self, store: Store, digest: str, size: int) -> None:
        target = self._root / _blob_name(digest)
        if target.exists() and target.stat().st_size == size:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(blob_path(store, digest), tmp)
        except OSError:
            with open_blob(store, digest) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, target)

    def close(self) -> None:
        pass


# Layers compressed at once: isal and zstd release the GIL, so two threads keep both cores
# of the build machines busy (zstd uses two threads of its own per layer as well).
_COMPRESS_THREADS = 2
# Layers compressed at once when each also streams to an upload: an upload runs slower than
# isal, so the compressions wait on their uploads, and a registry takes several uploads at
# once faster than one after another.
_TEE_THREADS = 3


def compressed_layer(store: Store, diff_id: str, compression: Compression) -> _Desc:
    """The layer blob for ``compression``: a form the store already has, or compressed now
    and recorded with the layer (so the next export reuses it and prune knows it)."""
    return compressed_layers(store, [diff_id], compression)[0]


class BlobTee(Protocol):
    """Where a layer's compressed bytes go as well as into the store while they are made
    (a streamed upload): ``write`` each piece, then ``finish(digest, size)`` once the blob
    is committed, or ``abort()`` when it failed. ``write`` must not keep the buffer."""

    def write(self, data: bytes, /) -> object: ...

    def finish(self, digest: str, size: int) -> None: ...

    def abort(self) -> None: ...


def compressed_layers(
    store: Store, diff_ids: Sequence[str], compression: Compression,
    tee: Callable[[str], BlobTee | None] | None = None,
) -> list[_Desc]:
    """:func:`compressed_layer` for each of ``diff_ids``, the compression of several layers
    on ``_COMPRESS_THREADS`` threads. A layer that only a snapshot holds (a fresh build's)
    is streamed from the snapshot straight into the compressor, its tar checked against the
    diff id on the way; no uncompressed blob is written. The new blobs are committed as one
    :class:`~dockyard.store.blobs.BlobBatch` (each fsynced, the directory once) and recorded
    after it. Call under the store's build lock (a snapshot read must not be pruned).

    ``tee(diff_id)`` may give a :class:`BlobTee` for a layer compressed now: its compressed
    bytes go there too, as they are made (an upload overlapping the compression). Then up to
    ``_TEE_THREADS`` layers are compressed at once: each runs at its upload's pace."""
    if compression == "uncompressed":
        return [_tar_desc(store, d) for d in diff_ids]
    media = _MEDIA[compression]
    kind: Literal["gzip", "zstd"] = "gzip" if compression == "gzip" else "zstd"
    with store.build_lock():  # shared: no prune takes a snapshot we read from meanwhile
        return _compressed_layers(store, diff_ids, media, kind, tee)


# ``ready(desc, path)``: a layer's blob is complete in file ``path`` (its place in the store,
# or for a blob made now its temp file, until the batch ends), called in layer order.
_Ready = Callable[["_Desc", str], None]


def _compressed_layers(
    store: Store, diff_ids: Sequence[str], media: str, kind: Literal["gzip", "zstd"],
    tee: Callable[[str], BlobTee | None] | None = None, ready: _Ready | None = None,
) -> list[_Desc]:
    found: dict[str, _Desc] = {}
    unrecorded: set[str] = set()  # layers without a record (their tar's blob is stored)
    queued: set[str] = set()

    def to_compress() -> Iterator[tuple[str, Callable[[BinaryIO], int]]]:
        """The layers to compress now, each with how to write its tar, looked up in turn
        (their records read at once)."""
        records = store.layers.get_many(diff_ids)
        for diff_id in diff_ids:
            if diff_id in found or diff_id in queued:
                continue
            layer = records.get(diff_id)
            if layer is not None:
                form = store.layers.checked_form(diff_id, kind, layer)  # pulled: once it matched
                if form is not None:
                    found[diff_id] = _Desc(media, form.digest, form.size)
                    continue
            queued.add(diff_id)
            write_tar = _tar_source(store, diff_id, layer)
            if layer is None and store.get_layer(diff_id) is None:  # _tar_source may add it
                unrecorded.add(diff_id)
            yield diff_id, write_tar

    several = len(set(diff_ids)) > 1
    if tee is None:
        # each layer compressed as soon as it is looked up, while the next ones are
        with _Compressor(store, kind, _COMPRESS_THREADS if several else 0) as compressor:
            for diff_id, write_tar in to_compress():
                compressor.submit(diff_id, write_tar)
            if ready is not None:  # in layer order, each as soon as it is there
                for diff_id in dict.fromkeys(diff_ids):
                    desc = found.get(diff_id)
                    if desc is not None:
                        ready(desc, str(blob_path(store, desc.digest)))
                    else:
                        digest, size, path = compressor.result(diff_id)
                        ready(_Desc(media, digest, size), path)
            made = compressor.results()
    else:
        jobs = dict(to_compress())
        tees = {d: tee(d) for d in jobs}
        threads = _TEE_THREADS if any(t is not None for t in tees.values()) \
            else _COMPRESS_THREADS
        try:
            with _Compressor(store, kind, threads if len(jobs) > 1 else 0,
                             done=lambda d: tees.pop(d, None)) as compressor:
                for diff_id, write_tar in jobs.items():
                    compressor.submit(diff_id, write_tar, tees.get(diff_id))
                made = compressor.results()
        finally:
            for out in tees.values():  # a layer that failed, or was never compressed
                if out is not None:
                    out.abort()
    if made:
        for diff_id, (_, _, tar_size) in made.items():
            if diff_id in unrecorded and store.get_layer(diff_id) is None:
                store.put_layer(diff_id, tar_size)
        store.put_layer_blobs([(diff_id, kind, digest, size)
                               for diff_id, (digest, size, _) in made.items()])
        for diff_id, (digest, size, _) in made.items():
            found[diff_id] = _Desc(media, digest, size)
    return [found[d] for d in diff_ids]


def _tar_desc(store: Store, diff_id: str) -> _Desc:
    store.ensure_layer_blob(diff_id)
    return _Desc(LAYER_TAR, diff_id, store.blobs.size(diff_id))


def _tar_source(store: Store, diff_id: str,
                layer: LayerRecord | None = None) -> Callable[[BinaryIO], int]:
    """How to write layer ``diff_id``'s tar (returning its size): from its blob, else from a
    snapshot (checked against the diff id), else from a blob made now (a remote form is
    downloaded). ``layer``: its record, when the caller has it."""
    if not store.blobs.has(diff_id):
        sources = store.layers.snapshot_tars(diff_id, layer)
        if len(sources) == 1:
            def from_snapshot(out: BinaryIO) -> int:
                try:
                    return sources[0].write(out)
                except StoreError as err:
                    raise StoreError(f"layer {diff_id} cannot be regenerated (no blob is"
                                     f" stored): {err}") from err

            return from_snapshot
        store.ensure_layer_blob(diff_id)  # several snapshots to try, a remote form, or none

    def from_blob(out: BinaryIO) -> int:
        size = 0
        with open_blob(store, diff_id) as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
                size += len(chunk)
        return size

    return from_blob


class _Compressor:
    """Compresses layer tars into new blobs of one :class:`~dockyard.store.blobs.BlobBatch`,
    on ``threads`` threads (none: in the caller's), each as soon as it is submitted.
    :meth:`results` waits for them: ``{diff_id: (digest, size, tar size)}``; the blobs are
    in place once the ``with`` block ends without an error. ``done(diff_id)`` is called when
    a layer's blob is complete (after its :class:`BlobTee`, if any, is finished)."""

    def __init__(self, store: Store, kind: Literal["gzip", "zstd"], threads: int,
                 done: Callable[[str], object] | None = None) -> None:
        self._store = store
        self._kind = kind
        self._threads = threads
        self._done = done
        self._jobs: dict[str, Any] = {}  # diff id -> a future, or the result itself
        self._paths: dict[str, str] = {}  # diff id -> its blob's temp file, once complete
        self._stack = contextlib.ExitStack()
        self._pool: Any = None

    def __enter__(self) -> _Compressor:
        self._batch = self._stack.enter_context(self._store.blobs.batch())
        if self._threads:
            # left before the batch (its exit waits for the running jobs)
            self._pool = self._stack.enter_context(_Workers(self._threads))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)  # type: ignore[arg-type]

    def _one(self, diff_id: str, write_tar: Callable[[BinaryIO], int],
             out: BlobTee | None) -> tuple[str, int, int]:
        with self._batch.writer() as w:
            dst: Any = w if out is None else _Tee(w, out)
            with compressing(dst, self._kind) as sink:
                tar_size = write_tar(sink)
            digest, size = w.commit()
            self._paths[diff_id] = w.temp_path
        if out is not None:
            out.finish(digest, size)
        if self._done is not None:
            self._done(diff_id)
        return digest, size, tar_size

    def submit(self, diff_id: str, write_tar: Callable[[BinaryIO], int],
               out: BlobTee | None = None) -> None:
        """Compress layer ``diff_id``, whose tar ``write_tar`` writes (returning its size);
        its compressed bytes go to ``out`` as well."""
        if self._pool is None:
            self._jobs[diff_id] = self._one(diff_id, write_tar, out)
        else:
            self._jobs[diff_id] = self._pool.submit(self._one, diff_id, write_tar, out)

    def result(self, diff_id: str) -> tuple[str, int, str]:
        """Wait for layer ``diff_id``: its blob's digest, size and temp file (complete, in
        place only when the batch ends). Its error, if it failed."""
        job = self._jobs[diff_id]
        digest, size, _ = job if self._pool is None else job.result()
        return digest, size, self._paths[diff_id]

    def results(self) -> dict[str, tuple[str, int, int]]:
        """Wait for every job (the first error is raised)."""
        if self._pool is None:
            return dict(self._jobs)
        return {d: f.result() for d, f in self._jobs.items()}


class _Job:
    """A job of :class:`_Workers`; :meth:`result` waits for it."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.value: Any = None
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as err:  # raised by result(), in the caller's thread
            self.error = err
        finally:
            self.finished.set()

    def result(self) -> Any:
        """The job's return value, once it ran; what it raised, raised again."""
        self.finished.wait()
        if self.error is not None:
            raise self.error
        return self.value


class _Workers:
    """``threads`` threads running jobs in the order they are submitted: what
    ``concurrent.futures.ThreadPoolExecutor`` did here, without importing it (and
    ``logging``, which it imports) on the way to an export. Leaving the ``with`` block waits
    for the running jobs; after an error, the ones not started yet never run."""

    def __init__(self, threads: int) -> None:
        self._cond = threading.Condition()
        self._queue: collections.deque[_Job] = collections.deque()
        self._closing = False
        self._threads = [threading.Thread(target=self._work, name=f"dockyard-compress_{i}",
                                          daemon=True) for i in range(threads)]

    def __enter__(self) -> _Workers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        with self._cond:
            self._closing = True
            if exc_type is not None:
                self._queue.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Job:
        job = _Job(fn, args)
        with self._cond:
            self._queue.append(job)
            self._cond.notify()
        return job

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                job = self._queue.popleft()
            job.run()


class _Tee:
    """The compressor's output, to the blob writer and to a :class:`BlobTee`."""

    def __init__(self, writer: BinaryIO, out: BlobTee) -> None:
        self._writer = writer
        self._out = out

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        n = self._writer.write(data)
        self._out.write(data if isinstance(data, bytes) else bytes(data))
        return n

    def flush(self) -> None:
        self._writer.flush()


def _manifest_for(
    store: Store, image: StoredImage, compression: Compression, ready: _Ready | None = None,
) -> tuple[bytes, list[_Desc]]:
    diff_ids = [layer.diff_id for layer in image.layers]
    if ready is None or compression == "uncompressed":
        layers = compressed_layers(store, diff_ids, compression)
    else:
        kind: Literal["gzip", "zstd"] = "gzip" if compression == "gzip" else "zstd"
        with store.build_lock():
            layers = _compressed_layers(store, diff_ids, _MEDIA[compression], kind,
                                        ready=ready)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_OCI,
        "config": {"mediaType": CONFIG_OCI, "digest": image.config_digest,
                   "size": len(image.config_bytes)},
        "layers": [d.to_dict() for d in layers],
    }
    return canonical(manifest), layers


def _platform_of(text: str) -> dict[str, str]:
    os_, _, rest = text.partition("/")
    arch, _, variant = rest.partition("/")
    out = {"architecture": arch, "os": os_}
    if variant:
        out["variant"] = variant
    return out


def _platform(config: dict[str, Any]) -> dict[str, str]:
    platform = {"architecture": str(config.get("architecture", "amd64")),
                "os": str(config.get("os", "linux"))}
    if config.get("variant"):
        platform["variant"] = str(config["variant"])
    return platform


def _write_layout(
    sink: _Sink, store: Store, images: Sequence[ArchiveImage], compression: Compression,
) -> list[tuple[ArchiveImage, list[_Desc]]]:
    sink.add_bytes("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
    entries: list[dict[str, Any]] = []
    written: list[tuple[ArchiveImage, list[_Desc]]] = []
    for item in images:
        base: dict[str, Any]
        if item.platforms:
            children = []
            for platform, image in item.platforms:
                desc, layers = _write_image(sink, store, image, compression)
                children.append({**desc, "platform": _platform_of(platform)})
                written.append((ArchiveImage(image, ()), layers))
            index_bytes = canonical({"schemaVersion": 2, "mediaType": INDEX_OCI,
                                     "manifests": children})
            index_digest = sha256_bytes(index_bytes)
            sink.add_bytes(_blob_name(index_digest), index_bytes)
            base = {"mediaType": INDEX_OCI, "digest": index_digest, "size": len(index_bytes)}
        else:
            desc, layers = _write_image(sink, store, item.image, compression)
            base = {**desc, "platform": _platform(item.image.config)}
            written.append((item, layers))
        if not item.names:
            entries.append(base)
        for name in item.names:
            ref = parse_reference(name)
            annotations = {ANNOTATION_IMAGE_NAME: str(ref)}
            if ref.tag:
                annotations[ANNOTATION_REF_NAME] = ref.tag
            entries.append({**base, "annotations": annotations})
    index = {"schemaVersion": 2, "mediaType": INDEX_OCI, "manifests": entries}
    sink.add_bytes("index.json", canonical(index))
    return written


def _write_image(
    sink: _Sink, store: Store, image: StoredImage, compression: Compression,
) -> tuple[dict[str, Any], list[_Desc]]:
    """Write one image's blobs; returns its manifest's descriptor and its layers. An
    archive gets each layer as soon as it and the layers before it are compressed (the
    same bytes in the same order; the copies overlap the compression)."""
    ready = sink.add_file if isinstance(sink, _TarSink) else None
    manifest, layers = _manifest_for(store, image, compression, ready)
    for layer in layers:
        sink.add_blob(store, layer.digest, layer.size)  # those not written yet
    sink.add_bytes(_blob_name(image.config_digest), image.config_bytes)
    manifest_digest = sha256_bytes(manifest)
    sink.add_bytes(_blob_name(manifest_digest), manifest)
    return {"mediaType": MANIFEST_OCI, "digest": manifest_digest, "size": len(manifest)}, layers


@contextlib.contextmanager
def _sink_for(root: Path, dest: str | Path | BinaryIO, *, as_tar: bool) -> Iterator[_Sink]:
    if not isinstance(dest, str | Path):
        with _tar_sink(dest) as tar_sink:
            yield tar_sink
        return
    path = Path(dest)
    if not as_tar:
        yield _DirSink(path)
        return
    if path.is_dir():
        raise StoreError(f"{path} is a directory; an archive needs a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    with no_space("the archive", path), atomic_output(root, path) as tmp, \
            open(tmp, "wb") as f, _tar_sink(f) as file_sink:
        yield file_sink


@contextlib.contextmanager
def _tar_sink(out: BinaryIO) -> Iterator[_TarSink]:
    sink = _TarSink(out)
    try:
        yield sink
    except BaseException:
        sink.abort()
        raise
    sink.close()


def write_oci_layout(
    store: Store,
    images: Sequence[ArchiveImage],
    dest: str | Path | BinaryIO,
    *,
    as_tar: bool = True,
    compression: Compression = "gzip",
) -> None:
    """Write an OCI image layout: a tar at ``dest`` (a path or a binary stream), or with
    ``as_tar=False`` a directory (blobs already there are kept; index.json is replaced)."""
    with _sink_for(store.root, dest, as_tar=as_tar) as sink:
        _write_layout(sink, store, images, compression)


def write_docker_archive(
    store: Store, images: Sequence[ArchiveImage], dest: str | Path | BinaryIO,
) -> None:
    """Write a ``docker load`` archive (Docker 25's format; see the module docstring).

    A multi-platform image is held whole by the layout part (``index.json`` leads to its
    index, as a containerd image store loads it); ``manifest.json``, which has no notion of
    platforms, lists every platform's image but gives the names only to the default one (the
    host's platform, else the first), so a classic ``docker load`` tags a runnable image."""
    with _sink_for(store.root, dest, as_tar=True) as sink:
        written = _write_layout(sink, store, images, "uncompressed")
        names_of: dict[str, tuple[str, ...]] = {}
        for item in images:
            if item.platforms:
                default = next((img for plat, img in item.platforms if plat == _HOST),
                               item.platforms[0][1])
                names_of[default.id] = item.names
            else:
                names_of[item.image.id] = item.names
        manifest = [
            {
                "Config": _blob_name(item.image.config_digest),
                "RepoTags": [_repo_tag(n) for n in names_of.get(item.image.id, ())
                             if parse_reference(n).tag],
                "Layers": [_blob_name(d.digest) for d in layers],
            }
            for item, layers in written
        ]
        sink.add_bytes("manifest.json", json.dumps(manifest).encode())


def _repo_tag(name: str) -> str:
    ref = parse_reference(name)
    if ref.digest:  # RepoTags hold name:tag only
        return f"{ref.familiar.split('@', 1)[0]}"
    return ref.familiar
