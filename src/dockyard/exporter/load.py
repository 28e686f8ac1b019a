"""Reading images into the store: ``docker load`` archives, OCI layouts (tar or directory),
and ``docker import`` root filesystem tarballs.

Every blob is verified: the archive blob against its digest (manifest, config, compressed
layer), and each layer, decompressed, against the config's ``rootfs.diff_ids`` as it is
written to the store (the store only makes a blob visible once its digest matched). An
image record is written last, after all its blobs are in, so a bad archive leaves no image
and no partial blob behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform as _platform
import posixpath
import shlex
import shutil
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, NamedTuple, Protocol, cast

from dockyard._fs import no_space
from dockyard.errors import (
    DockyardError,
    LayerError,
    NoSpaceError,
    NotFoundError,
    StoreError,
    UsageError,
)
from dockyard.exporter._stored import (
    CONFIG_OCI,
    INDEX_OCI,
    LAYER_TAR,
    LIST_DOCKER,
    MANIFEST_DOCKER,
    MANIFEST_OCI,
    canonical,
    sha256_bytes,
)
from dockyard.image.reference import parse_reference
from dockyard.layers.apply import check_tar, shown
from dockyard.layers.compress import open_decompressed, sniff
from dockyard.limits import current as current_limits
from dockyard.limits import hint
from dockyard.store.db import Store

__all__ = ["LoadedImage", "host_platform", "import_rootfs", "load_archive"]

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def host_platform() -> tuple[str, str]:
    """``(os, architecture)`` of this host in OCI spelling, e.g. ``("linux", "amd64")``."""
    machine = _platform.machine().lower()
    return "linux", _ARCH.get(machine, machine)


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """An image written to the store by :func:`load_archive` or :func:`import_rootfs`."""

    id: str
    names: tuple[str, ...]


class _Archive(Protocol):
    label: str

    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> IO[bytes]: ...


def _clean_name(name: str, label: str) -> str:
    """A member name from the archive's own JSON, refused if it could leave the archive."""
    norm = posixpath.normpath(name[2:] if name.startswith("./") else name)
    if name.startswith("/") or norm == ".." or norm.startswith("../") or norm in ("", "."):
        raise StoreError(f"{label}: the archive refers to an unsafe path {shown(name)}")
    return norm


class _Member(NamedTuple):
    """Where a file's bytes are in the archive (or the entry a link points at)."""

    offset: int
    size: int
    link: str | None  # symlink or hardlink target, normalized against the archive root
    kind: str  # "file", "symlink", "hardlink", "other"


_MAX_LINKS = 40


class _TarArchive:
    """A seekable, uncompressed archive file, indexed once: name -> offset and size only
    (never every header object), so memory grows with the entry count by a few dozen bytes
    an entry, and the entry count is held to the limits."""

    def __init__(self, f: BinaryIO, label: str) -> None:
        self._f = f
        self.label = label
        self._members: dict[str, _Member] = {}
        limit = current_limits().max_entries
        try:
            tf = tarfile.open(fileobj=f, mode="r:", bufsize=1 << 16)  # noqa: SIM115
            count = 0
            while True:
                member = tf.next()
                if member is None:
                    break
                tf.members.clear()  # type: ignore[attr-defined]
                count += 1
                if limit and count > limit:
                    raise StoreError(f"{label}: more than {limit:,} entries "
                                     f"({hint('max_entries')})")
                name = posixpath.normpath(member.name.lstrip("/"))
                if member.issym():
                    target = posixpath.normpath(
                        posixpath.join(posixpath.dirname(name), member.linkname))
                    self._members[name] = _Member(0, 0, target, "symlink")
                elif member.islnk():
                    target = posixpath.normpath(member.linkname.lstrip("/"))
                    self._members[name] = _Member(0, 0, target, "hardlink")
                elif member.isreg() and member.sparse is None:
                    self._members[name] = _Member(member.offset_data, member.size, None, "file")
                else:
                    self._members[name] = _Member(0, 0, None, "other")
        except tarfile.TarError as err:
            raise StoreError(f"{label}: not a tar archive ({_tar_reason(err)})") from None
        except DockyardError:
            raise
        except (OSError, EOFError, ValueError) as err:
            raise StoreError(f"{label}: cannot read the archive: {err}") from None

    def _find(self, name: str) -> tuple[str, _Member] | None:
        cur = _clean_name(name, self.label)
        for _ in range(_MAX_LINKS):
            member = self._members.get(cur)
            if member is None or member.link is None:
                return None if member is None else (cur, member)
            if member.link == ".." or member.link.startswith(("../", "/")):
                raise StoreError(f"{self.label}: {shown(cur)} links outside the archive")
            cur = member.link
        raise StoreError(f"{self.label}: {shown(name)}: too many links")

    def exists(self, name: str) -> bool:
        found = self._find(name)
        return found is not None and found[1].kind == "file"

    def open(self, name: str) -> IO[bytes]:
        found = self._find(name)
        if found is None:
            raise StoreError(f"{self.label}: the archive has no {shown(name)}")
        if found[1].kind != "file":
            raise StoreError(f"{self.label}: {shown(found[0])} is not a regular file")
        return cast(IO[bytes], _Section(self._f, found[1].offset, found[1].size))


class _Section(io.RawIOBase):
    """Bytes ``offset .. offset+size`` of a shared file (one reader at a time)."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self._f = f
        self._pos = offset
        self._end = offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._end - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._pos)
        data = self._f.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _tar_reason(err: BaseException) -> str:
    text = str(err)
    if "truncated" in text or "unexpected end" in text:
        return "it ends too early"
    if "bad checksum" in text or "invalid header" in text or "empty file" in text:
        return "no valid tar header"
    return text.splitlines()[0] if text else type(err).__name__


class _DirArchive:
    def __init__(self, root: Path) -> None:
        self._root = root
        self.label = str(root)

    def _path(self, name: str) -> Path:
        clean = _clean_name(name, self.label)
        path = self._root / clean
        # Every component must be inside the layout: no symlink on the way.
        cur = self._root
        for part in Path(clean).parts:
            cur = cur / part
            if cur.is_symlink():
                raise StoreError(f"{self.label}: layout entry {shown(name)} is a symlink")
        return path

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def open(self, name: str) -> IO[bytes]:
        path = self._path(name)
        if path.exists() and not path.is_file():
            raise StoreError(f"{self.label}: {shown(name)} is not a regular file")
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise StoreError(f"{self.label}: the layout has no {shown(name)}") from None
        except OSError as err:
            raise StoreError(f"{self.label}: cannot read {shown(name)}: {err.strerror}"
                             ) from None


def _read(archive: _Archive, name: str, digest: str | None = None, limit: int = 16 << 20) -> bytes:
    with archive.open(name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise StoreError(f"{archive.label}: {shown(name)} is too large for a JSON document")
    if digest is not None and sha256_bytes(data) != digest:
        raise StoreError(f"{archive.label}: digest mismatch for {shown(name)}: expected "
                         f"{digest}, got {sha256_bytes(data)}")
    return data


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise StoreError(f"{what} is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise StoreError(f"{what} is not valid JSON: {err}") from None


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StoreError(f"{what} is not a JSON object")
    return value


def _list(value: Any, what: str, *, optional: bool = False) -> list[Any]:
    if value is None and optional:
        return []
    if not isinstance(value, list):
        raise StoreError(f"{what} is not a JSON list")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise StoreError(f"{what} is missing or not a string")
    return value


def _blob_name(digest: str, what: str) -> str:
    algo, _, hex_ = digest.partition(":")
    if algo != "sha256" or len(hex_) != 64 or any(c not in "0123456789abcdef" for c in hex_):
        raise StoreError(f"{what}: unsupported digest {shown(digest)}")
    return f"blobs/{algo}/{hex_}"


class _HashingReader:
    """Reads through, hashing the raw bytes (the compressed blob's digest)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._hash.update(data)
        return data

    def drain(self) -> str:
        while self.read(_CHUNK):
            pass
        return "sha256:" + self._hash.hexdigest()


class _Tee:
    """Reads ``src`` and writes every byte read to ``sink`` too."""

    def __init__(self, src: BinaryIO, sink: IO[bytes]) -> None:
        self._src = src
        self._sink = sink

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self._sink.write(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _store_tar(store: Store, stream: BinaryIO, what: str, expected: str | None) -> str:
    """Decompress ``stream`` into a new blob while checking it is a tar within the limits;
    returns the blob's digest (the layer's diff_id). StoreError names ``what``."""
    try:
        with no_space(f"{what} into the store", store.blobs.tmp), store.blobs.writer() as w:
            tee = _Tee(open_decompressed(stream), w)
            check_tar(cast(BinaryIO, tee))
            tee.drain()
            digest, _ = w.commit(expected)
    except NoSpaceError:
        raise
    except LayerError as err:
        raise StoreError(f"{what}: {err}") from None
    except NotFoundError:
        raise
    except StoreError as err:
        if expected is not None and "mismatch" in str(err):
            raise StoreError(f"{what} does not match its diff_id ({err})") from None
        raise
    return digest


def _store_layer(
    store: Store, archive: _Archive, name: str, diff_id: str, blob_digest: str | None,
) -> int:
    """Write one archive layer to the store as the uncompressed tar ``diff_id``."""
    what = f"{archive.label}: layer {shown(name)}"
    with archive.open(name) as raw:
        reader = _HashingReader(raw)
        if not store.blobs.has(diff_id):
            _store_tar(store, cast(BinaryIO, reader), what, diff_id)
        got = reader.drain()
    if blob_digest is not None and got != blob_digest:
        raise StoreError(f"{what}: digest mismatch: expected {blob_digest}, got {got}")
    return store.blobs.size(diff_id)


def _names(value: Any, what: str) -> list[str]:
    """Image names from an archive, each checked."""
    names = []
    for item in _list(value, what, optional=True):
        name = _str(item, what)
        try:
            names.append(str(parse_reference(name)))
        except UsageError as err:
            raise StoreError(f"{what}: {err}") from None
    return names


def _commit_image(
    store: Store, config_bytes: bytes, layer_sizes: Sequence[tuple[str, int]],
    names: Sequence[str],
) -> LoadedImage:
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_OCI,
        "config": {"mediaType": CONFIG_OCI, "digest": sha256_bytes(config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_TAR, "digest": d, "size": s} for d, s in layer_sizes],
    }
    full = tuple(dict.fromkeys(str(parse_reference(n)) for n in names))
    _check_markers(store, [digest for digest, _ in layer_sizes])
    with no_space("an image into the store", store.root):
        store.blobs.put_bytes(config_bytes)
        record = store.put_image(canonical(manifest), config_bytes, full)
    return LoadedImage(record.id, full)


def _check_markers(store: Store, diff_ids: Sequence[str]) -> None:
    """Refuse an image whose layers have a whiteout reached through a symlink, as every
    unpack would (``layers/markers.py``), before its record is written."""
    from dockyard.layers.apply import iter_layer_entries
    from dockyard.layers.markers import MarkerCheck

    check = MarkerCheck()
    for diff_id in diff_ids:
        with store.blobs.open(diff_id) as f:
            try:
                check.layer(iter_layer_entries(f))
            except LayerError as err:
                raise LayerError(f"layer {diff_id}: {err}") from None


def _diff_ids(config: Any, what: str) -> list[str]:
    try:
        diff_ids = config["rootfs"]["diff_ids"]
    except (KeyError, TypeError, IndexError):
        raise StoreError(f"{what}: config has no rootfs.diff_ids") from None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise StoreError(f"{what}: rootfs.diff_ids is not a list of digests")
    for d in diff_ids:
        _blob_name(d, f"{what}: rootfs.diff_ids")
    return diff_ids


def _load_docker(store: Store, archive: _Archive) -> list[LoadedImage]:
    where = f"{archive.label}: manifest.json"
    entries = _list(_json(_read(archive, "manifest.json"), where), where)
    if not entries:
        raise StoreError(f"{where} lists no images")
    loaded: list[LoadedImage] = []
    for i, raw_entry in enumerate(entries):
        entry = _obj(raw_entry, f"{where}: entry {i}")
        config_name = _str(entry.get("Config"), f"{where}: entry {i}: Config")
        hex_ = posixpath.basename(config_name).removesuffix(".json")
        expected = f"sha256:{hex_}" if len(hex_) == 64 else None
        config_bytes = _read(archive, config_name, expected)
        config_what = f"{archive.label}: {shown(config_name)}"
        diff_ids = _diff_ids(_json(config_bytes, config_what), config_what)
        layers = [_str(x, f"{where}: entry {i}: Layers")
                  for x in _list(entry.get("Layers"), f"{where}: entry {i}: Layers",
                                 optional=True)]
        if len(layers) != len(diff_ids):
            raise StoreError(f"{config_what}: {len(layers)} layers but {len(diff_ids)} "
                             "diff_ids")
        names = _names(entry.get("RepoTags"), f"{where}: entry {i}: RepoTags")
        sizes = []
        for name, diff_id in zip(layers, diff_ids, strict=True):
            base = posixpath.basename(name)
            blob = f"sha256:{base}" if name.startswith("blobs/sha256/") else None
            sizes.append((diff_id, _store_layer(store, archive, name, diff_id, blob)))
        loaded.append(_commit_image(store, config_bytes, sizes, names))
    return loaded


def _platform_matches(desc: dict[str, Any]) -> bool:
    plat = desc.get("platform")
    if not isinstance(plat, dict):
        return False
    host_os, host_arch = host_platform()
    return bool(plat.get("os") == host_os and plat.get("architecture") == host_arch)


def _name_of(annotations: Any) -> str | None:
    if not isinstance(annotations, dict):
        return None
    name = annotations.get(ANNOTATION_IMAGE_NAME)
    if isinstance(name, str) and name:
        try:
            parse_reference(name)
        except UsageError:
            return None
        return name
    ref = annotations.get(ANNOTATION_REF_NAME)
    # A bare tag ("latest") is not a name; a full reference ("example.com/app:1") is.
    if isinstance(ref, str) and (":" in ref or "/" in ref):
        try:
            parse_reference(ref)
        except UsageError:
            return None
        return ref
    return None


def _resolve_manifest(archive: _Archive, desc: dict[str, Any], depth: int = 0) -> bytes:
    """The manifest bytes a descriptor leads to (through indexes, host platform first)."""
    if depth > 4:
        raise StoreError(f"{archive.label}: index nesting too deep")
    digest = _str(desc.get("digest"), f"{archive.label}: a descriptor's digest")
    what = f"{archive.label}: {digest}"
    data = _read(archive, _blob_name(digest, what), digest)
    doc = _obj(_json(data, what), what)
    media = desc.get("mediaType") or doc.get("mediaType")
    if media in (INDEX_OCI, LIST_DOCKER) or "manifests" in doc:
        children = [d for d in _list(doc.get("manifests"), f"{what}: manifests")
                    if isinstance(d, dict)]
        chosen = [d for d in children if _platform_matches(d)] or \
            [d for d in children if "platform" not in d]
        if not chosen:
            host = "/".join(host_platform())
            raise StoreError(f"{archive.label}: no image for the host platform {host}")
        return _resolve_manifest(archive, chosen[0], depth + 1)
    return data


def _is_index(desc: dict[str, Any]) -> bool:
    return desc.get("mediaType") in (INDEX_OCI, LIST_DOCKER)


def _load_platforms(
    store: Store, archive: _Archive, desc: dict[str, Any], names: Sequence[str],
) -> LoadedImage:
    """A multi-platform image: every platform image the archive holds, under one index."""
    digest = _str(desc.get("digest"), f"{archive.label}: an index digest")
    what = f"{archive.label}: index {digest}"
    doc = _obj(_json(_read(archive, _blob_name(digest, what), digest), what), what)
    images: list[tuple[str, str]] = []
    others: list[str] = []
    for item in _list(doc.get("manifests"), f"{what}: manifests", optional=True):
        child = _obj(item, f"{what}: an entry")
        plat = child.get("platform")
        if not isinstance(plat, dict) or child.get("mediaType") not in (MANIFEST_OCI,
                                                                         MANIFEST_DOCKER):
            continue
        if plat.get("os") != "linux":  # dockyard builds and runs Linux images only
            others.append(f"{plat.get('os')}/{plat.get('architecture')}")
            continue
        child_digest = _str(child.get("digest"), f"{what}: an entry's digest")
        name = _blob_name(child_digest, what)
        if not archive.exists(name):
            continue  # a layout may hold only some platforms of an index
        loaded = _load_manifest(store, archive, _read(archive, name, child_digest), (),
                                child_digest)
        text = f"{_str(plat.get('os'), what)}/{_str(plat.get('architecture'), what)}"
        if plat.get("variant"):
            text += f"/{_str(plat['variant'], what)}"
        images.append((text, loaded.id))
    if not images:
        host = "/".join(host_platform())
        have = f" (it has {', '.join(others)})" if others else ""
        raise StoreError(f"{what}: no image for the host platform {host} or any Linux "
                         f"platform in the archive{have}")
    full = tuple(dict.fromkeys(str(parse_reference(n)) for n in names))
    store.put_platform_images(images, full)
    default = store.get_image(full[0]).id if full else images[0][1]
    return LoadedImage(default, full)


def _load_manifest(
    store: Store, archive: _Archive, manifest_bytes: bytes, names: Sequence[str], digest: str,
) -> LoadedImage:
    what = f"{archive.label}: manifest {digest}"
    manifest = _obj(_json(manifest_bytes, what), what)
    config_desc = _obj(manifest.get("config"), f"{what}: config")
    config_digest = _str(config_desc.get("digest"), f"{what}: config digest")
    config_what = f"{archive.label}: config {config_digest}"
    config_bytes = _read(archive, _blob_name(config_digest, config_what), config_digest)
    diff_ids = _diff_ids(_json(config_bytes, config_what), config_what)
    layer_descs = [_obj(d, f"{what}: a layer")
                   for d in _list(manifest.get("layers"), f"{what}: layers", optional=True)]
    if len(layer_descs) != len(diff_ids):
        raise StoreError(f"{what} has {len(layer_descs)} layers but the config has "
                         f"{len(diff_ids)} diff_ids")
    sizes = []
    for ldesc, diff_id in zip(layer_descs, diff_ids, strict=True):
        layer_digest = _str(ldesc.get("digest"), f"{what}: a layer's digest")
        sizes.append((diff_id, _store_layer(store, archive, _blob_name(layer_digest, what),
                                            diff_id, layer_digest)))
    return _commit_image(store, config_bytes, sizes, names)


def _load_oci(store: Store, archive: _Archive) -> list[LoadedImage]:
    where = f"{archive.label}: index.json"
    index = _obj(_json(_read(archive, "index.json"), where), where)
    descs = [d for d in _list(index.get("manifests"), f"{where}: manifests", optional=True)
             if isinstance(d, dict)]
    if not descs:
        raise StoreError(f"{where} lists no images")
    # Several entries may name the same manifest (one per tag): load it once, tag it all.
    by_digest: dict[str, list[str]] = {}
    order: list[dict[str, Any]] = []
    for desc in descs:
        digest = _str(desc.get("digest"), f"{where}: a manifest's digest")
        if digest not in by_digest:
            by_digest[digest] = []
            order.append(desc)
        name = _name_of(desc.get("annotations"))
        if name:
            by_digest[digest].append(name)
    loaded: list[LoadedImage] = []
    for desc in order:
        names = by_digest[str(desc["digest"])]
        if _is_index(desc):
            loaded.append(_load_platforms(store, archive, desc, names))
            continue
        loaded.append(_load_manifest(store, archive, _resolve_manifest(archive, desc), names,
                                     str(desc["digest"])))
    return loaded


@contextlib.contextmanager
def _open_archive(store: Store, source: str | Path | BinaryIO) -> Iterator[_Archive]:
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            # is_dir raises where a parent is unreadable (an ordinary user's load)
            is_dir = path.is_dir()
            f = None if is_dir else open(path, "rb")  # noqa: SIM115
        except OSError as err:
            raise UsageError(f"cannot open {path}: {err.strerror}") from None
        if f is None:
            yield _DirArchive(path)
            return
        with f:
            head = f.read(6)
            f.seek(0)
            if sniff(head) == "none":
                yield _TarArchive(cast(BinaryIO, f), str(path))
                return
            # A compressed archive is read out of order: unpack it next to the blobs first.
            with _spooled(store, cast(BinaryIO, f), str(path)) as spool:
                yield _TarArchive(spool, str(path))
        return
    # A pipe cannot seek, and an archive is read out of order: spool it next to the blobs.
    with _spooled(store, source, "-") as spool:
        yield _TarArchive(spool, "-")


@contextlib.contextmanager
def _spooled(store: Store, source: BinaryIO, label: str) -> Iterator[BinaryIO]:
    """The archive, decompressed (within the limits) into a temp file in the store."""
    import tempfile

    store.blobs.ensure()
    with tempfile.TemporaryFile(dir=store.blobs.tmp) as tmp:
        try:
            with no_space(f"the archive {label} into a temp file", store.blobs.tmp):
                shutil.copyfileobj(open_decompressed(source), tmp, _CHUNK)
        except LayerError as err:
            raise StoreError(f"{label}: {err}") from None
        tmp.seek(0)
        yield cast(BinaryIO, tmp)


def _holds_an_index(archive: _Archive) -> bool:
    index = _json(_read(archive, "index.json"), f"{archive.label}: index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    return isinstance(manifests, list) and any(
        isinstance(d, dict) and _is_index(d) for d in manifests)


def load_archive(store: Store, source: str | Path | BinaryIO) -> list[LoadedImage]:
    """Load every image of a docker archive or OCI layout (tar, directory, or stream).

    A bad archive is a StoreError naming the archive and what is wrong with it; a full disk
    a NoSpaceError. Memory stays bounded: the archive is indexed by name, offset and size."""
    with _open_archive(store, source) as archive:
        if archive.exists("index.json") and _holds_an_index(archive):
            return _load_oci(store, archive)  # multi-platform: manifest.json cannot say it
        if archive.exists("manifest.json"):
            return _load_docker(store, archive)
        if archive.exists("index.json"):
            return _load_oci(store, archive)
        label = archive.label
    raise StoreError(f"{label}: not an image archive (neither manifest.json nor index.json)")


_CHANGE_KEYS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER",
                "VOLUME", "WORKDIR")


def _command(rest: str) -> list[str]:
    if rest.lstrip().startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", rest]


def _pairs(rest: str, what: str) -> list[tuple[str, str]]:
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        if len(words) < 2:
            raise UsageError(f"{what} needs a value: {rest!r}")
        return [(words[0], rest.split(None, 1)[1].strip())]
    out = []
    for w in words:
        key, sep, value = w.partition("=")
        if not sep or not key:
            raise UsageError(f"{what}: {w!r} is not KEY=VALUE")
        out.append((key, value))
    return out


def apply_changes(config: dict[str, Any], changes: Sequence[str]) -> None:
    """Apply ``docker import -c`` Dockerfile instructions to a config's ``config`` section."""
    run = config.setdefault("config", {})
    for change in changes:
        keyword, _, rest = change.strip().partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword not in _CHANGE_KEYS:
            raise UsageError(f"{keyword} is not a valid change command "
                             f"(one of {', '.join(_CHANGE_KEYS)})")
        if keyword == "CMD":
            run["Cmd"] = _command(rest)
        elif keyword == "ENTRYPOINT":
            run["Entrypoint"] = _command(rest)
        elif keyword == "ENV":
            env = [e for e in run.get("Env") or []]
            for key, value in _pairs(rest, "ENV"):
                env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
            run["Env"] = env
        elif keyword == "LABEL":
            labels = run.setdefault("Labels", {})
            labels.update(_pairs(rest, "LABEL"))
        elif keyword == "EXPOSE":
            ports = run.setdefault("ExposedPorts", {})
            for port in rest.split():
                ports[port if "/" in port else f"{port}/tcp"] = {}
        elif keyword == "VOLUME":
            vols = run.setdefault("Volumes", {})
            paths = _command(rest) if rest.startswith("[") else rest.split()
            for path in paths:
                vols[path] = {}
        elif keyword == "USER":
            run["User"] = rest
        elif keyword == "WORKDIR":
            run["WorkingDir"] = rest
        elif keyword == "STOPSIGNAL":
            run["StopSignal"] = rest
        elif keyword == "ONBUILD":
            run.setdefault("OnBuild", []).append(rest)


def import_rootfs(
    store: Store,
    source: str | Path | BinaryIO,
    names: Sequence[str],
    *,
    changes: Sequence[str] = (),
    message: str | None = None,
    platform: tuple[str, str] | None = None,
) -> LoadedImage:
    """``docker import``: a root filesystem tarball (any compression) as a one-layer image."""
    label = str(source) if isinstance(source, str | Path) else "-"
    f: BinaryIO
    if isinstance(source, str | Path):
        try:
            f = cast(BinaryIO, open(source, "rb"))  # noqa: SIM115
        except OSError as err:
            raise UsageError(f"cannot open {source}: {err.strerror}") from None
    else:
        f = source
    with contextlib.ExitStack() as stack:
        if f is not source:
            stack.enter_context(f)
        try:
            diff_id = _store_tar(store, f, label, None)
        except StoreError as err:
            raise LayerError(str(err)) from None
    os_name, arch = platform or host_platform()
    # SOURCE_DATE_EPOCH makes imports reproducible: same tarball, same image id.
    sde = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = int(sde) if sde.isdigit() else None
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    config: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "created": now,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": now, "comment": message or f"Imported from {label}"}],
    }
    apply_changes(config, changes)
    if not config["config"]:
        config["config"] = {}
    config_bytes = canonical(config)
    return _commit_image(store, config_bytes, [(diff_id, store.blobs.size(diff_id))], names)


def stdin_binary() -> BinaryIO:
    """The process's stdin as a binary stream."""
    return sys.stdin.buffer
