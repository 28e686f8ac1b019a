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
from typing import IO, Any, BinaryIO, Protocol, cast

from dockyard.errors import LayerError, StoreError, UsageError
from dockyard.exporter._stored import (
    CONFIG_OCI,
    INDEX_OCI,
    LAYER_TAR,
    LIST_DOCKER,
    MANIFEST_OCI,
    canonical,
    sha256_bytes,
)
from dockyard.image.reference import parse_reference
from dockyard.layers.compress import open_decompressed
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
    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> IO[bytes]: ...


def _clean_name(name: str) -> str:
    """A member name from the archive's own JSON, refused if it could leave the archive."""
    norm = posixpath.normpath(name.lstrip("./") if name.startswith("./") else name)
    if name.startswith("/") or norm.startswith("..") or norm in ("", "."):
        raise StoreError(f"archive refers to an unsafe path {name!r}")
    return norm


class _TarArchive:
    def __init__(self, f: BinaryIO) -> None:
        try:
            self._tar = tarfile.open(fileobj=f, mode="r:*")  # noqa: SIM115 - lives with f
            self._members = {posixpath.normpath(m.name.lstrip("/")): m
                             for m in self._tar.getmembers()}
        except tarfile.TarError as err:
            raise StoreError(f"not an image archive: {err}") from err

    def exists(self, name: str) -> bool:
        return _clean_name(name) in self._members

    def open(self, name: str) -> IO[bytes]:
        member = self._members.get(_clean_name(name))
        if member is None:
            raise StoreError(f"archive is missing {name}")
        f = self._tar.extractfile(member)
        if f is None:
            raise StoreError(f"archive entry {name} is not a file")
        return f


class _DirArchive:
    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, name: str) -> Path:
        path = self._root / _clean_name(name)
        if path.is_symlink():
            raise StoreError(f"layout entry {name} is a symlink")
        return path

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def open(self, name: str) -> IO[bytes]:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise StoreError(f"layout is missing {name}") from None


def _read(archive: _Archive, name: str, digest: str | None = None, limit: int = 16 << 20) -> bytes:
    with archive.open(name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise StoreError(f"{name} is too large for a JSON document")
    if digest is not None and sha256_bytes(data) != digest:
        raise StoreError(f"digest mismatch for {name}: expected {digest}, got "
                         f"{sha256_bytes(data)}")
    return data


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise StoreError(f"{what} is not valid JSON: {err}") from None


def _blob_name(digest: str) -> str:
    algo, _, hex_ = digest.partition(":")
    if algo != "sha256" or len(hex_) != 64:
        raise StoreError(f"unsupported digest {digest!r}")
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


def _store_layer(
    store: Store, archive: _Archive, name: str, diff_id: str, blob_digest: str | None,
) -> int:
    """Write one archive layer to the store as the uncompressed tar ``diff_id``."""
    with archive.open(name) as raw:
        reader = _HashingReader(raw)
        if not store.blobs.has(diff_id):
            stream = open_decompressed(cast(BinaryIO, reader))
            try:
                store.blobs.put_stream(stream, diff_id)
            except (OSError, EOFError, ValueError) as err:
                raise StoreError(f"layer {name} cannot be decompressed: {err}") from err
            except StoreError as err:
                raise StoreError(f"layer {name} does not match its diff_id: {err}") from err
        got = reader.drain()
    if blob_digest is not None and got != blob_digest:
        raise StoreError(f"digest mismatch for {name}: expected {blob_digest}, got {got}")
    return store.blobs.size(diff_id)


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
    store.blobs.put_bytes(config_bytes)
    record = store.put_image(canonical(manifest), config_bytes, full)
    return LoadedImage(record.id, full)


def _diff_ids(config: Any, what: str) -> list[str]:
    try:
        diff_ids = config["rootfs"]["diff_ids"]
    except (KeyError, TypeError):
        raise StoreError(f"{what}: config has no rootfs.diff_ids") from None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise StoreError(f"{what}: rootfs.diff_ids is not a list of digests")
    return diff_ids


def _load_docker(store: Store, archive: _Archive) -> list[LoadedImage]:
    entries = _json(_read(archive, "manifest.json"), "manifest.json")
    if not isinstance(entries, list):
        raise StoreError("manifest.json is not a list")
    loaded: list[LoadedImage] = []
    for entry in entries:
        config_name = str(entry["Config"])
        hex_ = posixpath.basename(config_name).removesuffix(".json")
        expected = f"sha256:{hex_}" if len(hex_) == 64 else None
        config_bytes = _read(archive, config_name, expected)
        diff_ids = _diff_ids(_json(config_bytes, config_name), config_name)
        layers = [str(x) for x in entry.get("Layers") or []]
        if len(layers) != len(diff_ids):
            raise StoreError(f"{config_name}: {len(layers)} layers but {len(diff_ids)} "
                             "diff_ids")
        sizes = []
        for name, diff_id in zip(layers, diff_ids, strict=True):
            base = posixpath.basename(name)
            blob = f"sha256:{base}" if name.startswith("blobs/sha256/") else None
            sizes.append((diff_id, _store_layer(store, archive, name, diff_id, blob)))
        loaded.append(_commit_image(store, config_bytes, sizes, entry.get("RepoTags") or []))
    return loaded


def _platform_matches(desc: dict[str, Any]) -> bool:
    plat = desc.get("platform")
    if not isinstance(plat, dict):
        return False
    host_os, host_arch = host_platform()
    return bool(plat.get("os") == host_os and plat.get("architecture") == host_arch)


def _name_of(annotations: dict[str, Any]) -> str | None:
    name = annotations.get(ANNOTATION_IMAGE_NAME)
    if isinstance(name, str) and name:
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
        raise StoreError("index nesting too deep")
    digest = str(desc.get("digest", ""))
    data = _read(archive, _blob_name(digest), digest)
    doc = _json(data, digest)
    media = desc.get("mediaType") or doc.get("mediaType")
    if media in (INDEX_OCI, LIST_DOCKER) or "manifests" in doc:
        children = [d for d in doc.get("manifests", []) if isinstance(d, dict)]
        chosen = [d for d in children if _platform_matches(d)] or \
            [d for d in children if "platform" not in d]
        if not chosen:
            host = "/".join(host_platform())
            raise StoreError(f"the archive has no image for the host platform {host}")
        return _resolve_manifest(archive, chosen[0], depth + 1)
    return data


def _load_oci(store: Store, archive: _Archive) -> list[LoadedImage]:
    index = _json(_read(archive, "index.json"), "index.json")
    descs = [d for d in index.get("manifests", []) if isinstance(d, dict)]
    if not descs:
        raise StoreError("index.json lists no images")
    # Several entries may name the same manifest (one per tag): load it once, tag it all.
    by_digest: dict[str, list[str]] = {}
    order: list[dict[str, Any]] = []
    for desc in descs:
        digest = str(desc.get("digest", ""))
        if digest not in by_digest:
            by_digest[digest] = []
            order.append(desc)
        name = _name_of(desc.get("annotations") or {})
        if name:
            by_digest[digest].append(name)
    loaded: list[LoadedImage] = []
    for desc in order:
        manifest_bytes = _resolve_manifest(archive, desc)
        manifest = _json(manifest_bytes, "manifest")
        config_digest = str(manifest["config"]["digest"])
        config_bytes = _read(archive, _blob_name(config_digest), config_digest)
        diff_ids = _diff_ids(_json(config_bytes, config_digest), config_digest)
        layer_descs = manifest.get("layers", [])
        if len(layer_descs) != len(diff_ids):
            raise StoreError(f"manifest has {len(layer_descs)} layers but the config has "
                             f"{len(diff_ids)} diff_ids")
        sizes = []
        for ldesc, diff_id in zip(layer_descs, diff_ids, strict=True):
            digest = str(ldesc["digest"])
            sizes.append((diff_id, _store_layer(store, archive, _blob_name(digest), diff_id,
                                                digest)))
        loaded.append(_commit_image(store, config_bytes, sizes, by_digest[str(desc["digest"])]))
    return loaded


@contextlib.contextmanager
def _open_archive(store: Store, source: str | Path | BinaryIO) -> Iterator[_Archive]:
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            yield _DirArchive(path)
            return
        try:
            f = open(path, "rb")  # noqa: SIM115
        except OSError as err:
            raise UsageError(f"cannot open {path}: {err.strerror}") from None
        with f:
            yield _TarArchive(f)
        return
    # A pipe cannot seek, and an archive is read out of order: spool it next to the blobs.
    store.blobs.ensure()
    with _spooled(store, source) as spool:
        yield _TarArchive(spool)


@contextlib.contextmanager
def _spooled(store: Store, source: BinaryIO) -> Iterator[BinaryIO]:
    import tempfile

    with tempfile.TemporaryFile(dir=store.root / "tmp") as tmp:
        shutil.copyfileobj(source, tmp, _CHUNK)
        tmp.seek(0)
        yield cast(BinaryIO, tmp)


def load_archive(store: Store, source: str | Path | BinaryIO) -> list[LoadedImage]:
    """Load every image of a docker archive or OCI layout (tar, directory, or stream)."""
    with _open_archive(store, source) as archive:
        if archive.exists("manifest.json"):
            return _load_docker(store, archive)
        if archive.exists("index.json"):
            return _load_oci(store, archive)
    raise StoreError("not an image archive: neither manifest.json nor index.json found")


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
            diff_id, _size = store.blobs.put_stream(open_decompressed(f))
        except (OSError, EOFError, ValueError) as err:
            raise LayerError(f"{label}: cannot read the archive: {err}") from err
    _check_tar(store, diff_id, label)
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


def _check_tar(store: Store, diff_id: str, label: str) -> None:
    try:
        with store.blobs.open(diff_id) as blob, tarfile.open(fileobj=blob, mode="r|") as tar:
            for _ in tar:
                pass
    except tarfile.TarError as err:
        raise LayerError(f"{label} is not a tar archive: {err}") from err


def stdin_binary() -> BinaryIO:
    """The process's stdin as a binary stream."""
    return sys.stdin.buffer
