"""Crafted bad archives: the corpus behind tests/integration/test_bad_archives.py and the
tar-header fuzzing in tests/unit/test_fuzz_archives.py.

Each maker returns the archive's bytes. Names that try to leave the target point at
``ESCAPE`` (relative) or at the absolute ``sentinel`` directory the test watches.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "Entry",
    "docker_archive",
    "oci_archive",
    "sha",
    "tar_bytes",
]


@dataclass
class Entry:
    """One tar entry to write."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    mode: int = 0o644
    pax: dict[str, str] = field(default_factory=dict)
    size: int | None = None  # the header's size, if not len(data)
    devmajor: int = 0
    devminor: int = 0


def tar_bytes(entries: Iterable[Entry], *, fmt: int = tarfile.PAX_FORMAT,
              end: bool = True) -> bytes:
    """A tar of ``entries`` (names may be anything: no normalisation)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.linkname = e.linkname
            info.mode = e.mode
            info.mtime = 1_600_000_000
            info.size = len(e.data) if e.type == tarfile.REGTYPE else 0
            info.devmajor, info.devminor = e.devmajor, e.devminor
            info.pax_headers = dict(e.pax)
            tf.addfile(info, io.BytesIO(e.data) if info.size else None)
    data = out.getvalue()
    if not end:
        data = data.rstrip(b"\0")
        data += b"\0" * (-len(data) % 512)
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar_files(files: dict[str, bytes | str]) -> bytes:
    """A plain tar of ``files`` (str values are symlink targets)."""
    entries = []
    for name, content in files.items():
        if isinstance(content, str):
            entries.append(Entry(name, type=tarfile.SYMTYPE, linkname=content))
        else:
            entries.append(Entry(name, content))
    return tar_bytes(entries)


LAYER = tar_bytes([Entry("hello.txt", b"hello\n")])


def docker_archive(
    *,
    manifest: object | None = None,
    config: object | None = None,
    config_bytes: bytes | None = None,
    layer: bytes = LAYER,
    extra: dict[str, bytes | str] | None = None,
    drop: Iterable[str] = (),
) -> bytes:
    """A ``docker save`` archive; ``manifest``/``config`` replace the right documents."""
    layer_name = "layer0/layer.tar"
    cfg = config if config is not None else {
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
    }
    cbytes = config_bytes if config_bytes is not None else json.dumps(cfg).encode()
    config_name = hashlib.sha256(cbytes).hexdigest() + ".json"
    man = manifest if manifest is not None else [
        {"Config": config_name, "RepoTags": ["bad/archive:1"], "Layers": [layer_name]},
    ]
    files: dict[str, bytes | str] = {
        "manifest.json": json.dumps(man).encode() if not isinstance(man, bytes) else man,
        config_name: cbytes,
        layer_name: layer,
    }
    files.update(extra or {})
    for name in drop:
        files.pop(name, None)
    return _tar_files(files)


def oci_archive(
    *,
    index: object | None = None,
    manifest: object | None = None,
    config: object | None = None,
    layer: bytes = LAYER,
    layer_digest: str | None = None,
    extra: dict[str, bytes | str] | None = None,
) -> bytes:
    """An OCI layout tar; ``index``/``manifest``/``config`` replace the right documents."""
    cfg = config if config is not None else {
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
    }
    cbytes = json.dumps(cfg).encode()
    man = manifest if manifest is not None else {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(cbytes), "size": len(cbytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest or sha(layer), "size": len(layer)}],
    }
    mbytes = json.dumps(man).encode()
    idx = index if index is not None else {
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sha(mbytes), "size": len(mbytes),
                       "annotations": {"io.containerd.image.name": "bad/oci:1"}}],
    }
    files: dict[str, bytes | str] = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": json.dumps(idx).encode(),
        f"blobs/sha256/{sha(cbytes)[7:]}": cbytes,
        f"blobs/sha256/{sha(mbytes)[7:]}": mbytes,
        f"blobs/sha256/{sha(layer)[7:]}": layer,
    }
    files.update(extra or {})
    return _tar_files(files)


def corrupt_gzip(data: bytes) -> bytes:
    raw = gzip.compress(data)
    mid = len(raw) // 2
    return raw[:20] + bytes(b ^ 0x5A for b in raw[20:mid]) + raw[mid:]


def gzip_bomb(zero_bytes: int) -> bytes:
    """A tar holding one file of ``zero_bytes`` zeros, gzipped (~1000:1)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[arg-type]
        info = tarfile.TarInfo("zeros")
        info.size = zero_bytes

        class _Zeros(io.RawIOBase):
            left = zero_bytes

            def readinto(self, b: bytearray) -> int:  # type: ignore[override]
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        tf.addfile(info, _Zeros())  # type: ignore[arg-type]
    return out.getvalue()


def with_header_field(data: bytes, offset: int, value: bytes, block: int = 0, *,
                      fix: bool = True) -> bytes:
    """``data`` with bytes at ``offset`` of header ``block`` replaced, checksum redone (unless
    ``fix`` is false)."""
    buf = bytearray(data)
    start = block * 512
    buf[start + offset:start + offset + len(value)] = value
    if not fix:
        return bytes(buf)
    buf[start + 148:start + 156] = b" " * 8
    chk = sum(buf[start:start + 512])
    buf[start + 148:start + 156] = b"%06o\0 " % chk
    return bytes(buf)


def sparse_tar(apparent: int, blocks: list[tuple[int, bytes]]) -> bytes:
    """An old-GNU sparse tar (type S) of one file ``sparse`` of ``apparent`` bytes holding
    ``blocks`` (offset, data); at most 4 blocks (no extension headers)."""
    assert len(blocks) <= 4
    hdr = bytearray(512)
    hdr[0:6] = b"sparse"
    hdr[100:108] = b"0000644\0"
    hdr[108:116] = b"0000000\0"
    hdr[116:124] = b"0000000\0"
    stored = sum(len(d) for _, d in blocks)
    hdr[124:136] = b"%011o\0" % stored
    hdr[136:148] = b"%011o\0" % 1_600_000_000
    hdr[156:157] = b"S"
    hdr[257:265] = b"ustar  \0"
    for i, (off, d) in enumerate(blocks):
        base = 386 + i * 24
        hdr[base:base + 12] = b"%011o\0" % off
        hdr[base + 12:base + 24] = b"%011o\0" % len(d)
    hdr[482] = 0  # no extension headers
    hdr[483:495] = b"%011o\0" % apparent
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    body = b"".join(d for _, d in blocks)
    body += b"\0" * (-len(body) % 512)
    return bytes(hdr) + body + b"\0" * 1024


def compressors() -> dict[str, Callable[[bytes], bytes]]:
    return {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}
