"""Layer compression (only where an output or a push needs it) and decompression by magic.

gzip goes through ``isal.igzip`` (several times faster than zlib), zstd through
``zstandard`` with two worker threads. Output is deterministic: gzip headers carry mtime 0
and no file name, and zstd's multi-threaded framing depends only on level and thread count.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import lzma
from collections.abc import Iterator
from typing import BinaryIO, Final, Literal, Protocol, cast

from dockyard.errors import DockyardError, LayerError
from dockyard.layers._tarfmt import HashingWriter
from dockyard.limits import Limits, hint, human_bytes
from dockyard.limits import current as current_limits

__all__ = ["GZIP_LEVEL", "ZSTD_LEVEL", "ZSTD_THREADS", "Decompressed", "compress",
           "compressing", "open_decompressed", "sniff"]

# Measured on a 2-core machine (bench/bench_layers.py): on text-like data isal level 1 runs
# at ~290-340 MiB/s for a 0.456 ratio, level 2 at ~260 MiB/s for 0.418, zlib level 6 at
# ~15 MiB/s for 0.402. Export and push pay for compression, so speed wins.
GZIP_LEVEL: Final = 1
ZSTD_LEVEL: Final = 3
ZSTD_THREADS: Final = 2
_CHUNK: Final = 1 << 20

_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC: Final = b"BZh"
_XZ_MAGIC: Final = b"\xfd7zXZ\x00"

Kind = Literal["gzip", "zstd", "bzip2", "xz", "none"]


def compress(
    src: BinaryIO, dst: BinaryIO, kind: Literal["gzip", "zstd", "none"]
) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` compressed with ``kind``; return ``(digest, size)`` of what
    was written to ``dst``."""
    out = HashingWriter(dst)
    with compressing(out, kind) as sink:
        _pump(src, sink)
    digest = out.digest()
    return digest, out.size


# Spare ``_CHUNK``-byte piece buffers, kept between layers: a new one per layer (and the
# compressor's output) made glibc give the memory back and fault it in again for the next
# layer, ~360 page faults a layer in an export of layers100.
_SPARE_BUFFERS: list[bytearray] = []
_MAX_SPARE_BUFFERS: Final = 4


class _Rechunked:
    """Hands the compressor exactly ``_CHUNK``-byte pieces (the last one shorter), however
    the bytes are written: the compressed stream then does not depend on the writer's
    pieces, and a tar streamed in gives the bytes :func:`compress` gives for its file.
    The pieces are gathered in a buffer of fixed size, reused by the next stream."""

    def __init__(self, out: _Sink) -> None:
        self._out = out
        try:
            self._buf = _SPARE_BUFFERS.pop()
        except IndexError:
            self._buf = bytearray(_CHUNK)
        self._fill = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        n = view.nbytes
        buf, fill, done = self._buf, self._fill, 0
        while done < n:
            take = min(n - done, _CHUNK - fill)
            buf[fill:fill + take] = view[done:done + take]
            fill += take
            done += take
            if fill == _CHUNK:
                self._emit(buf)
                fill = 0
        self._fill = fill
        return n

    def flush(self) -> None:
        """Nothing to do: the rest goes to the compressor only at the end (:meth:`_end`)."""

    def _emit(self, piece: bytes | bytearray | memoryview) -> None:
        self._out.write(piece)

    def _end(self) -> None:
        if self._fill:
            with memoryview(self._buf) as view:
                self._emit(view[:self._fill])
            self._fill = 0
        if len(_SPARE_BUFFERS) < _MAX_SPARE_BUFFERS:
            _SPARE_BUFFERS.append(self._buf)


@contextlib.contextmanager
def compressing(
    dst: BinaryIO | HashingWriter, kind: Literal["gzip", "zstd", "none"]
) -> Iterator[BinaryIO]:
    """A file to write uncompressed bytes to; they reach ``dst`` compressed with ``kind``
    (whole when the block ends without an error). Same bytes as :func:`compress`."""
    if kind == "gzip":
        gz = _Gzip(dst)
        yield cast(BinaryIO, gz)
        gz._end()
    elif kind == "zstd":
        import zstandard

        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=ZSTD_THREADS)
        with cctx.stream_writer(cast(BinaryIO, dst), closefd=False) as zw:
            sink = _Rechunked(zw)
            yield cast(BinaryIO, sink)
            sink._end()
    elif kind == "none":
        sink = _Rechunked(dst)
        yield cast(BinaryIO, sink)
        sink._end()
    else:
        raise LayerError(f"unknown compression {kind!r}")


class _Gzip(_Rechunked):
    """gzip (isal, :data:`GZIP_LEVEL`) of what is written, to ``out``, in one call to the
    compressor per ``_CHUNK`` piece and one write of its output per piece.

    The bytes are those ``isal.igzip.IGzipFile(fileobj=out, mode="wb", compresslevel=1,
    mtime=0)`` writes when handed the same pieces (what this module used until 2026-12:
    digests of exported layers must not change): isal's own gzip framing (``wbits=31``)
    gives the same 10-byte header (no name, mtime 0, XFL 0, OS 255) and trailer (CRC-32,
    size mod 2**32), and the deflate stream depends only on the pieces, which are the
    same. A unit test pins the output. No Python file object between the pieces and the
    compressor (IGzipFile's header writes, a ``crc32`` call per piece): less Python per
    layer of an export."""

    def __init__(self, out: _Sink) -> None:
        from isal import isal_zlib

        super().__init__(out)
        self._compressor = isal_zlib.compressobj(
            GZIP_LEVEL, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS, isal_zlib.DEF_MEM_LEVEL,
            0)

    def _emit(self, piece: bytes | bytearray | memoryview) -> None:
        compressed = self._compressor.compress(piece)
        if compressed:
            self._out.write(compressed)

    def _end(self) -> None:
        super()._end()
        self._out.write(self._compressor.flush())


class _Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


def _pump(src: BinaryIO, dst: _Sink) -> None:
    while chunk := src.read(_CHUNK):
        dst.write(chunk)


def sniff(head: bytes) -> Kind:
    """The compression of a stream that starts with ``head`` (at least 6 bytes if present)."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(_BZIP2_MAGIC):
        return "bzip2"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    return "none"


class _Prefixed(io.RawIOBase):
    """A stream with bytes already read from it put back in front; counts what it gives."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            self.count += n
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


class Decompressed:
    """The uncompressed bytes of a stream, held to the :mod:`dockyard.limits`.

    Whatever the decompressor raises on bad data (isal's ``IsalError``, zstandard's
    ``ZstdError``, ``EOFError`` for a truncated stream, ``lzma.LZMAError``...) comes out as
    :class:`LayerError` ``corrupt gzip data: ...``; going past the size or ratio limit is a
    LayerError naming the limit and its flag. Callers add the file name.
    """

    def __init__(self, inner: BinaryIO, raw: _Prefixed, kind: Kind, limits: Limits) -> None:
        self._inner = inner
        self._raw = raw
        self.kind: Kind = kind
        self._limits = limits
        self.size = 0

    @property
    def compressed_size(self) -> int:
        """Bytes read from the underlying stream so far."""
        return self._raw.count

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return bool(self._inner.closed)

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._inner.read(n)
        except DockyardError:
            raise
        except Exception as err:
            raise self._corrupt(err) from err
        self.size += len(data)
        self._check()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _corrupt(self, err: BaseException) -> LayerError:
        text = str(err) or type(err).__name__
        if isinstance(err, EOFError):
            text = "the stream ends too early"
        what = "archive" if self.kind == "none" else f"{self.kind} data"
        return LayerError(f"corrupt {what}: {text}")

    def _check(self) -> None:
        lim = self._limits
        if lim.max_layer_size and self.size > lim.max_layer_size:
            raise LayerError(
                f"more than {human_bytes(lim.max_layer_size)} when decompressed "
                f"({hint('max_layer_size')})")
        if (self.kind != "none" and lim.max_ratio and self.size > lim.ratio_floor
                and self.size > lim.max_ratio * max(self._raw.count, 1)):
            raise LayerError(
                f"decompresses to more than {lim.max_ratio} times its size "
                f"({human_bytes(self.size)} from {human_bytes(self._raw.count)}): a "
                f"decompression bomb? ({hint('max_ratio')})")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._inner.close()

    def __enter__(self) -> Decompressed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_head(f: BinaryIO, n: int) -> bytes:
    head = b""
    while len(head) < n:
        chunk = f.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def open_decompressed(f: BinaryIO, limits: Limits | None = None) -> BinaryIO:
    """A readable stream of ``f``'s uncompressed bytes, whatever it is compressed with
    (gzip, zstd, bzip2, xz or nothing), found by its magic bytes, held to ``limits``
    (default: :func:`dockyard.limits.current`). It is a :class:`Decompressed`."""
    try:
        head = _read_head(f, 6)
    except DockyardError:
        raise
    except Exception as err:
        raise LayerError(f"cannot read: {err}") from err
    prefixed = _Prefixed(head, f)
    raw = io.BufferedReader(prefixed, buffer_size=_CHUNK)
    kind = sniff(head)
    inner: BinaryIO = cast(BinaryIO, raw)
    try:
        if kind == "gzip":
            from isal import igzip

            inner = cast(BinaryIO, igzip.IGzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]
        elif kind == "zstd":
            import zstandard

            dctx = zstandard.ZstdDecompressor()
            reader = dctx.stream_reader(raw, read_size=_CHUNK, read_across_frames=True)
            inner = cast(BinaryIO, io.BufferedReader(reader, buffer_size=_CHUNK))
        elif kind == "bzip2":
            inner = cast(BinaryIO, bz2.BZ2File(raw, mode="rb"))
        elif kind == "xz":
            inner = cast(BinaryIO, lzma.LZMAFile(raw, mode="rb"))  # noqa: SIM115
    except Exception as err:
        raise LayerError(f"corrupt {kind} data: {err}") from err
    return cast(BinaryIO, Decompressed(inner, prefixed, kind, limits or current_limits()))
