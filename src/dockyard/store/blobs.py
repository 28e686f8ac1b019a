"""Content-addressed blobs under ``<root>/blobs/sha256/<hex>``.

A blob becomes visible only complete and verified, as containerd's content store does: it is
written to a private temp file in ``<root>/tmp/`` (same file system), hashed while written,
checked against the expected digest and size, fsynced, then renamed into place. A writer that
fails or is abandoned removes its temp file; a crash leaves it in ``tmp/``, which ``prune``
empties. Two writers of the same blob race harmlessly: both renames carry identical bytes,
and a writer that finds the blob already there just drops its temp file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from dockyard.errors import NotFoundError, StoreError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["BlobStore", "BlobWriter", "check_digest"]

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_BUFFER = 1 << 20


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

    def __init__(self, blobs: BlobStore, fd: int, tmp_path: Path) -> None:
        super().__init__(io.FileIO(fd, "wb", closefd=True), buffer_size=_BUFFER)
        self._blobs = blobs
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
    def committed(self) -> tuple[str, int] | None:
        """(digest, size) once committed."""
        return self._result

    def commit(
        self, expected_digest: str | None = None, expected_size: int | None = None
    ) -> tuple[str, int]:
        """Verify, fsync and move the blob into place; returns (digest, size).

        Raises StoreError (and discards the data) on a digest or size mismatch.
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

    def _install(self, tmp_path: Path, digest: str) -> None:
        final = self.path(digest)
        if final.exists():
            os.unlink(tmp_path)
            return
        os.chmod(tmp_path, 0o644)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
