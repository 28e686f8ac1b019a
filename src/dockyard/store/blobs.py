"""Content-addressed blobs under ``<root>/blobs/sha256/<hex>``.

A blob becomes visible only complete and verified, as containerd's content store does: it is
written to a private temp file in ``<root>/tmp/`` (same file system), hashed while written,
checked against the expected digest and size, fsynced, then renamed into place. A writer that
fails or is abandoned removes its temp file; a crash leaves it in ``tmp/``, which ``prune``
empties. Two writers of the same blob race harmlessly: both renames carry identical bytes,
and a writer that finds the blob already there just drops its temp file.

A :class:`BlobBatch` commits several blobs together (the export's compressed layers): each
blob is still fsynced before it is renamed into place, but the fsyncs run on a thread of
their own while the writers go on, and the directory is fsynced once for the whole batch
instead of once per blob. A crash before the batch ends leaves temp files only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from dockyard.errors import NotFoundError, StoreError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["BlobBatch", "BlobStore", "BlobWriter", "check_digest"]

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_BUFFER = 1 << 20
_BATCH_BUFFER = 64 << 10


def check_digest(digest: str) -> str:
    """Return the hex part of a ``sha256:<hex>`` digest; StoreError for anything else.

    Every path built from a digest goes through here, so a crafted digest can never name a
    file outside the blob directory.
    """
    if not _DIGEST_RE.fullmatch(digest):
        raise StoreError(f"invalid digest {digest!r} (expected sha256:<64 hex digits>)")
    return digest[7:]


class BlobWriter(io.BufferedWriter):
    """A buffered file that hashes what is written; finish with :meth:`commit`.

    It is a real binary file object, so it can be handed to anything that writes to a
    ``BinaryIO`` (the tar writer, the compressor, an HTTP download loop).
    """

    def __init__(
        self, blobs: BlobStore, fd: int, tmp_path: Path, batch: BlobBatch | None = None,
        buffer_size: int = _BUFFER,
    ) -> None:
        super().__init__(io.FileIO(fd, "wb", closefd=True), buffer_size=buffer_size)
        self._blobs = blobs
        self._batch = batch
        self._tmp_path = tmp_path
        self._hash = hashlib.sha256()
        self._size = 0
        self._result: tuple[str, int] | None = None

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        written = super().write(view)
        self._hash.update(view[:written])
        self._size += written
        return written

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    @property
    def digest(self) -> str:
        """Digest of the bytes written so far."""
        return "sha256:" + self._hash.hexdigest()

    @property
    def temp_path(self) -> str:
        """The temp file the bytes are written to (and stay in, for a writer of a batch,
        until the batch ends: they can be read back from it meanwhile)."""
        return str(self._tmp_path)

    @property
    def committed(self) -> tuple[str, int] | None:
        """(digest, size) once committed."""
        return self._result

    def commit(
        self, expected_digest: str | None = None, expected_size: int | None = None
    ) -> tuple[str, int]:
        """Verify, fsync and move the blob into place; returns (digest, size).

        Raises StoreError (and discards the data) on a digest or size mismatch. A writer of
        a :class:`BlobBatch` hands the blob to its batch instead: it is fsynced on the
        batch's thread and becomes visible when the batch ends.
        """
        if self._result is not None:
            return self._result
        digest, size = self.digest, self._size
        try:
            if expected_size is not None and size != expected_size:
                raise StoreError(
                    f"blob size mismatch: expected {expected_size} bytes, got {size}"
                    + (f" for {expected_digest}" if expected_digest else "")
                )
            if expected_digest is not None and digest != expected_digest:
                raise StoreError(f"blob digest mismatch: expected {expected_digest}, got {digest}")
            self.flush()
            if self._batch is not None:
                self._batch._add(os.dup(self.fileno()), self._tmp_path, digest)
                self.close()
            else:
                os.fsync(self.fileno())
                self.close()
                self._blobs._install(self._tmp_path, digest)
        except BaseException:
            self.abort()
            raise
        self._result = (digest, size)
        return self._result

    def abort(self) -> None:
        """Throw the data away (nothing becomes visible). Safe to call twice."""
        with contextlib.suppress(OSError, ValueError):
            self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp_path)


class BlobStore:
    """The blob directory of a store root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "blobs" / "sha256"
        self.tmp = root / "tmp"

    def ensure(self) -> None:
        """Create the directories."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (whether or not it exists)."""
        return self.dir / check_digest(digest)

    def has(self, digest: str) -> bool:
        """Whether the blob is present."""
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        """The blob's size in bytes. NotFoundError if absent."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob not found: {digest}") from None

    def open(self, digest: str) -> BinaryIO:
        """Open the blob for reading. NotFoundError if absent."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob not found: {digest}") from None

    def read_bytes(self, digest: str) -> bytes:
        """The whole blob (for small documents: manifests, configs)."""
        with self.open(digest) as f:
            return f.read()

    def delete(self, digest: str) -> bool:
        """Remove the blob; False if it was not there."""
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            return False
        return True

    def iter_digests(self) -> Iterator[str]:
        """Every blob present (names that are not digests are skipped)."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in entries:
            digest = "sha256:" + entry.name
            if _DIGEST_RE.fullmatch(digest):
                yield digest

    @contextlib.contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        """Write a new blob: ``with blobs.writer() as w: w.write(...); w.commit(...)``.

        Leaving the block without :meth:`BlobWriter.commit` (or with an exception) discards
        everything written.
        """
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="blob-", dir=self.tmp)
        writer = BlobWriter(self, fd, Path(name))
        try:
            yield writer
        finally:
            if writer.committed is None:
                writer.abort()

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> str:
        """Store ``data``; returns its digest. Skips the write when it is present already."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected_digest is not None and digest != expected_digest:
            raise StoreError(f"blob digest mismatch: expected {expected_digest}, got {digest}")
        if self.has(digest):
            return digest
        with self.writer() as w:
            w.write(data)
            w.commit(digest, len(data))
        return digest

    def put_stream(
        self,
        stream: BinaryIO,
        expected_digest: str | None = None,
        expected_size: int | None = None,
    ) -> tuple[str, int]:
        """Copy ``stream`` into a new blob, verified; returns (digest, size)."""
        with self.writer() as w:
            shutil.copyfileobj(stream, w, _BUFFER)
            return w.commit(expected_digest, expected_size)

    @contextlib.contextmanager
    def batch(self) -> Iterator[BlobBatch]:
        """Commit several blobs together (see :class:`BlobBatch`). Leaving the block with an
        exception discards every blob of the batch that is not in place yet."""
        batch = BlobBatch(self)
        try:
            yield batch
            batch._finish()
        finally:
            batch._discard()

    def _install(self, tmp_path: Path, digest: str, *, sync_dir: bool = True) -> bool:
        """Rename a complete, fsynced temp file into place; False if the blob was there."""
        final = self.path(digest)
        if final.exists():
            os.unlink(tmp_path)
            return False
        os.chmod(tmp_path, 0o644)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)
        if sync_dir:
            self._sync_dir()
        return True

    def _sync_dir(self) -> None:
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class BlobBatch:
    """Blobs committed together (:meth:`BlobStore.batch`); writers may run on several threads.

    Every blob is verified and fsynced before it is renamed into place, as a lone writer's:
    only the waiting moves. A committed writer's file is fsynced on the batch's own thread
    (so the writers go on compressing meanwhile), and the batch's end renames the blobs into
    place and fsyncs the directory once. Until then none of them is visible, so rows that
    name them are written after the batch."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        self._lock = threading.Lock()
        self._pending: list[tuple[int, Path, str]] = []  # (fd, temp path, digest)
        self._synced: list[tuple[Path, str]] = []
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closing = False
        self._temps: set[Path] = set()
        self._tmp_ready = False
        self._serial = 0

    @contextlib.contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        """A writer whose :meth:`BlobWriter.commit` hands the blob to this batch. Its buffer
        is small: a batch's writers are fed compressed pieces of ~1 MiB, which go straight
        to the file (a 1 MiB buffer per blob cost an allocation and its page faults)."""
        if not self._tmp_ready:
            self._blobs.tmp.mkdir(parents=True, exist_ok=True)
            self._tmp_ready = True
        fd, name = self._temp_file()
        writer = BlobWriter(self._blobs, fd, Path(name), batch=self,
                            buffer_size=_BATCH_BUFFER)
        with self._lock:
            self._temps.add(Path(name))
        try:
            yield writer
        finally:
            if writer.committed is None:
                writer.abort()

    def _temp_file(self) -> tuple[int, str]:
        """A new temp file for a blob of the batch: ``mkstemp``'s guarantees (created here,
        exclusively, mode 0600) with a name from a counter instead of six random letters
        (``random.choices`` was 2% of an export of 100 small layers)."""
        base = f"{self._blobs.tmp}/blob-{os.getpid()}-{id(self):x}-"
        while True:
            with self._lock:
                self._serial += 1
                name = f"{base}{self._serial}"
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue  # left by a process that had this pid before
            return fd, name

    def _add(self, fd: int, tmp_path: Path, digest: str) -> None:
        with self._cond:
            if self._error is not None:
                os.close(fd)
                raise StoreError(f"blob batch failed: {self._error}")
            self._pending.append((fd, tmp_path, digest))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._sync_loop, name="dockyard-blob-sync", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _sync_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                fd, tmp_path, digest = self._pending.pop(0)
            try:
                if self._error is None:
                    os.fsync(fd)
            except BaseException as err:  # reported by _finish
                with self._cond:
                    self._error = err
            finally:
                os.close(fd)
            with self._cond:
                self._synced.append((tmp_path, digest))

    def _join(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _finish(self) -> None:
        self._join()
        if self._error is not None:
            raise StoreError(f"cannot write a blob: {self._error}") from self._error
        installed = False
        for tmp_path, digest in self._synced:
            installed |= self._blobs._install(tmp_path, digest, sync_dir=False)
            self._temps.discard(tmp_path)
        self._synced.clear()
        if installed:
            self._blobs._sync_dir()

    def _discard(self) -> None:
        self._join()
        for tmp_path in self._temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
        self._temps.clear()
