"""Read an exported image and compare two of them: the conformance suite's judge.

Pure (no root, no daemons): it reads a ``docker save`` archive or an OCI image-layout tar,
flattens the layers the way an overlay mount would show them (whiteouts and opaque
directories applied), and lists every difference between two images in

* the final filesystem: per path the type, mode including special bits, uid, gid, size,
  content sha256, link target (symlink target or device numbers), and hardlink groups;
* the image config fields a user can observe (``CONFIG_FIELDS``);
* the number of non-empty layers (layers that change the filesystem, timestamps aside).

Timestamps are never compared. ``IGNORED_PATHS`` lists the few paths skipped on purpose;
tests/conformance/README.md explains each entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

CONFIG_FIELDS: tuple[str, ...] = (
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
)

# Fields whose empty value ({} or []) means the same as "not set" to every consumer.
_EMPTY_IS_UNSET = {"ExposedPorts", "Volumes", "Labels", "OnBuild", "Env"}

# path -> reason. Keep short; every entry is explained in tests/conformance/README.md.
IGNORED_PATHS: Mapping[str, str] = {}

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


@dataclass(frozen=True)
class FileEntry:
    """One path of the flattened filesystem, without timestamps."""

    kind: str  # file, dir, symlink, char, block, fifo
    mode: int  # permission and special bits (0o7777)
    uid: int
    gid: int
    size: int  # regular files only, else 0
    sha256: str | None  # regular files only
    link: str | None  # symlink target, or "major:minor" for devices

    def describe(self) -> str:
        """A one-line rendering for difference reports."""
        parts = [self.kind, f"{self.mode:04o}", f"{self.uid}:{self.gid}"]
        if self.kind == "file":
            parts.append(f"{self.size}B {(self.sha256 or '')[:19]}")
        if self.link is not None:
            parts.append(f"-> {self.link}")
        return " ".join(parts)


@dataclass(frozen=True)
class ImageSnapshot:
    """What the comparison looks at in one image."""

    config: Mapping[str, Any]  # the image config's "config" object
    files: Mapping[str, FileEntry]  # absolute path -> entry
    hardlinks: tuple[tuple[str, ...], ...]  # groups (sorted) of paths sharing one inode
    # Per layer, in order: entries that change the tree. A directory restated with the same
    # type/mode/owner (only its mtime moved) is no change: dockerd 20.10's BuildKit puts an
    # unchanged /etc into every RUN layer (its /etc/hosts and resolv.conf mounts touch it).
    layer_changes: tuple[frozenset[str], ...]
    raw_config: Mapping[str, Any] = field(default_factory=dict)  # the whole config JSON

    @property
    def nonempty_layers(self) -> int:
        """Layers that change the filesystem (timestamps aside)."""
        return sum(1 for paths in self.layer_changes if paths)


@dataclass(frozen=True)
class Difference:
    """One observed difference; ``area`` is fs, hardlinks, config or layers."""

    area: str
    subject: str
    reference: str
    candidate: str

    def __str__(self) -> str:
        return f"{self.area} {self.subject}: reference={self.reference} candidate={self.candidate}"


# ----------------------------------------------------------------------------- flattening


def normalize_member_path(name: str) -> str:
    """Tar member name -> absolute normalized path ("./a/b/" -> "/a/b", "." -> "/")."""
    p = posixpath.normpath("/" + name.lstrip("/"))
    return "/" if p in ("/", "//") else p.rstrip("/")


@dataclass
class _Node:
    entry: FileEntry
    inode: int


class FlatTree:
    """A filesystem built by applying layer tars in order, as overlayfs would present it."""

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {"/": _Node(FileEntry("dir", 0o755, 0, 0, 0, None, None), 0)}
        self._next_inode = 1

    def _remove(self, path: str) -> None:
        self._nodes.pop(path, None)
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self._nodes if p.startswith(prefix)]:
            del self._nodes[p]

    def _clear_children(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self._nodes if p.startswith(prefix)]:
            del self._nodes[p]

    def _ensure_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        missing: list[str] = []
        while parent not in self._nodes:
            missing.append(parent)
            parent = posixpath.dirname(parent)
        for p in reversed(missing):
            self._nodes[p] = _Node(FileEntry("dir", 0o755, 0, 0, 0, None, None), self._new_inode())

    def _new_inode(self) -> int:
        self._next_inode += 1
        return self._next_inode

    def apply_layer(self, fileobj: IO[bytes]) -> frozenset[str]:
        """Apply one (possibly compressed) layer tar stream; returns the paths it changed
        (see ``ImageSnapshot.layer_changes``).

        Whiteouts and opaque markers act on what lower layers left, so they are collected
        first and applied before this layer's own entries, as containerd's applier does.
        """
        members: list[tuple[tarfile.TarInfo, str | None]] = []
        with _open_tar_stream(fileobj) as tar:
            for info in tar:
                digest = None
                if info.isreg():
                    f = tar.extractfile(info)
                    assert f is not None
                    digest = _sha256_stream(f)
                members.append((info, digest))
        deletions: list[str] = []
        opaques: list[str] = []
        additions: list[tuple[tarfile.TarInfo, str | None]] = []
        for info, digest in members:
            path = normalize_member_path(info.name)
            base = posixpath.basename(path)
            if base == OPAQUE_MARKER:
                opaques.append(posixpath.dirname(path))
            elif base.startswith(WHITEOUT_PREFIX):
                deletions.append(posixpath.join(posixpath.dirname(path), base[len(WHITEOUT_PREFIX):]))
            else:
                additions.append((info, digest))
        for d in opaques:
            self._clear_children(d)
        for d in deletions:
            self._remove(d)
        changes = {*opaques, *deletions}
        for info, digest in additions:
            if self._add(info, digest):
                changes.add(normalize_member_path(info.name))
        return frozenset(changes)

    def _add(self, info: tarfile.TarInfo, digest: str | None) -> bool:
        path = normalize_member_path(info.name)
        if info.islnk():
            target = normalize_member_path(info.linkname)
            src = self._nodes.get(target)
            if src is None:
                raise ValueError(f"hardlink {path} -> {target}: target not in the tree")
            if path != "/":
                self._remove(path)
                self._ensure_parents(path)
                self._nodes[path] = _Node(src.entry, src.inode)
            return True
        entry = _entry_from_info(info, digest)
        old = self._nodes.get(path)
        if old is not None and old.entry.kind == "dir" and entry.kind == "dir":
            # A directory over a directory merges: only its metadata changes.
            self._nodes[path] = _Node(entry, old.inode)
            return old.entry != entry
        if path != "/":
            self._remove(path)
            self._ensure_parents(path)
        self._nodes[path] = _Node(entry, self._new_inode())
        return True

    def files(self) -> dict[str, FileEntry]:
        """Path -> entry for every path in the tree."""
        return {p: n.entry for p, n in sorted(self._nodes.items())}

    def hardlink_groups(self) -> tuple[tuple[str, ...], ...]:
        """Groups of two or more non-directory paths that share an inode."""
        by_inode: dict[int, list[str]] = {}
        for p, n in self._nodes.items():
            if n.entry.kind != "dir":
                by_inode.setdefault(n.inode, []).append(p)
        groups = [tuple(sorted(ps)) for ps in by_inode.values() if len(ps) > 1]
        return tuple(sorted(groups))


def _entry_from_info(info: tarfile.TarInfo, digest: str | None) -> FileEntry:
    mode = info.mode & 0o7777
    if info.isreg():
        return FileEntry("file", mode, info.uid, info.gid, info.size, digest, None)
    if info.isdir():
        return FileEntry("dir", mode, info.uid, info.gid, 0, None, None)
    if info.issym():
        return FileEntry("symlink", mode, info.uid, info.gid, 0, None, info.linkname)
    if info.ischr():
        return FileEntry("char", mode, info.uid, info.gid, 0, None, f"{info.devmajor}:{info.devminor}")
    if info.isblk():
        return FileEntry("block", mode, info.uid, info.gid, 0, None, f"{info.devmajor}:{info.devminor}")
    if info.isfifo():
        return FileEntry("fifo", mode, info.uid, info.gid, 0, None, None)
    raise ValueError(f"unsupported tar entry type {info.type!r} for {info.name}")


def _sha256_stream(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(1 << 20):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@contextmanager
def _open_tar_stream(fileobj: IO[bytes]) -> Iterator[tarfile.TarFile]:
    """A tar reader over a plain, gzip, bzip2, xz or zstd stream (sniffed)."""
    buffered: Any = fileobj if hasattr(fileobj, "peek") else io.BufferedReader(cast(Any, fileobj))
    head = buffered.peek(4)[:4]
    if head == _ZSTD_MAGIC:
        import zstandard

        stream: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(buffered)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            yield tar
        return
    with tarfile.open(fileobj=buffered, mode="r|*") as tar:
        yield tar


# ----------------------------------------------------------------------------- archives


class ArchiveError(Exception):
    """The archive is not a docker-save or OCI image-layout tar we can read."""


def load_image_archive(path: Path, ref: str | None = None) -> ImageSnapshot:
    """Read a ``docker save`` tar or an OCI image-layout tar (or directory) into a snapshot.

    With several images in the archive, ``ref`` picks one by its tag (docker) or its
    ``org.opencontainers.image.ref.name`` / ``io.containerd.image.name`` annotation (OCI).
    """
    if path.is_dir():
        return _load_layout(_DirReader(path), ref)
    with tarfile.open(path, "r:*") as tar:
        reader = _TarReader(tar)
        if reader.exists("manifest.json") and not reader.exists("index.json"):
            return _load_docker(reader, ref)
        if reader.exists("index.json"):
            return _load_layout(reader, ref)
        if reader.exists("manifest.json"):
            return _load_docker(reader, ref)
    raise ArchiveError(f"{path}: neither manifest.json nor index.json found")


class _Reader:
    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def json(self, name: str) -> Any:
        with self.open(name) as f:
            return json.load(f)


class _TarReader(_Reader):
    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar
        self._names = {posixpath.normpath(m.name): m for m in tar.getmembers()}

    def exists(self, name: str) -> bool:
        return posixpath.normpath(name) in self._names

    def open(self, name: str) -> IO[bytes]:
        member = self._names.get(posixpath.normpath(name))
        if member is None:
            raise ArchiveError(f"archive has no {name}")
        while member.issym() or member.islnk():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
            if member.islnk():
                target = posixpath.normpath(member.linkname)
            member = self._names[target]
        f = self._tar.extractfile(member)
        if f is None:
            raise ArchiveError(f"{name} is not a regular file")
        return f


class _DirReader(_Reader):
    def __init__(self, root: Path) -> None:
        self._root = root

    def exists(self, name: str) -> bool:
        return (self._root / name).exists()

    def open(self, name: str) -> IO[bytes]:
        return (self._root / name).open("rb")


def _snapshot(config_json: Mapping[str, Any], layers: Iterable[Callable[[], IO[bytes]]]) -> ImageSnapshot:
    tree = FlatTree()
    counts = []
    for opener in layers:
        with opener() as f:
            counts.append(tree.apply_layer(f))
    return ImageSnapshot(
        config=dict(config_json.get("config") or {}),
        files=tree.files(),
        hardlinks=tree.hardlink_groups(),
        layer_changes=tuple(counts),
        raw_config=dict(config_json),
    )


def _load_docker(reader: _Reader, ref: str | None) -> ImageSnapshot:
    manifest = reader.json("manifest.json")
    if not manifest:
        raise ArchiveError("manifest.json is empty")
    chosen = manifest[0]
    if ref is not None:
        for m in manifest:
            if any(_same_ref(ref, t) for t in m.get("RepoTags") or []):
                chosen = m
                break
        else:
            raise ArchiveError(f"no image tagged {ref} in the archive")
    config = reader.json(chosen["Config"])
    return _snapshot(config, [_opener(reader, name) for name in chosen["Layers"]])


def _same_ref(wanted: str, name: str) -> bool:
    """``conformance/x:latest`` matches itself, ``docker.io/conformance/x:latest`` and
    ``localhost/conformance/x:latest`` (buildah's spelling)."""
    return name == wanted or name.endswith("/" + wanted)


def _opener(reader: _Reader, name: str) -> Callable[[], IO[bytes]]:
    return lambda: reader.open(name)


def _blob(digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    return f"blobs/{algo}/{hexd}"


_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_REF_ANNOTATIONS = ("org.opencontainers.image.ref.name", "io.containerd.image.name")


def _load_layout(reader: _Reader, ref: str | None) -> ImageSnapshot:
    index = reader.json("index.json")
    manifests = index.get("manifests") or []
    if not manifests:
        raise ArchiveError("index.json lists no manifests")
    desc = manifests[0]
    if ref is not None:
        for m in manifests:
            names = {(m.get("annotations") or {}).get(a) for a in _REF_ANNOTATIONS}
            if any(n and _same_ref(ref, n) for n in names):
                desc = m
                break
        else:
            raise ArchiveError(f"no manifest named {ref} in index.json")
    doc = reader.json(_blob(desc["digest"]))
    while doc.get("mediaType") in _INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
        doc = reader.json(_blob(doc["manifests"][0]["digest"]))
    config = reader.json(_blob(doc["config"]["digest"]))
    return _snapshot(config, [_opener(reader, _blob(layer["digest"])) for layer in doc["layers"]])


# ----------------------------------------------------------------------------- comparison


def drop_mount_stubs(snap: ImageSnapshot, stubs: Iterable[str]) -> ImageSnapshot:
    """``snap`` without the empty directories an old BuildKit leaves at RUN --mount targets.

    dockerd 20.10's BuildKit keeps the directories it made for mount targets (and their new
    parents); BuildKit since v0.11 removes them (moby/buildkit#3307, #3314). Each stub must be
    an empty directory apart from other stubs, or ValueError is raised: a stub that holds
    anything is not a stub, and hiding it would hide a real difference.
    """
    stub_set = {normalize_member_path(s) for s in stubs}
    files = dict(snap.files)
    for stub in sorted(stub_set):
        entry = files.get(stub)
        if entry is None or entry.kind != "dir":
            raise ValueError(f"mount stub {stub} is not a directory in the reference")
        inner = [p for p in files if p.startswith(stub + "/") and p not in stub_set]
        if inner:
            raise ValueError(f"mount stub {stub} is not empty: {inner[:3]}")
    for stub in stub_set:
        del files[stub]
    # A layer whose only change was a stub no longer counts as changing anything.
    changes = tuple(paths - stub_set for paths in snap.layer_changes)
    return ImageSnapshot(snap.config, files, snap.hardlinks, changes, snap.raw_config)


def normalize_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The compared config fields, with "unset" spelled one way.

    Missing and null are the same; for maps and OnBuild/Env an empty value is the same as
    unset; Healthcheck fields that are zero are dropped (Docker omits them when unset).
    """
    out: dict[str, Any] = {}
    for key in CONFIG_FIELDS:
        value = config.get(key)
        if key in _EMPTY_IS_UNSET and not value:
            value = None
        if key == "Healthcheck" and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if v not in (0, None, "")}
        if key in ("WorkingDir", "User") and value == "":
            value = None
        if key == "StopSignal" and value == "":
            value = None
        out[key] = value
    return out


def compare_snapshots(
    reference: ImageSnapshot,
    candidate: ImageSnapshot,
    *,
    ignored_paths: Mapping[str, str] = IGNORED_PATHS,
) -> list[Difference]:
    """Every difference between two images, reference first; empty when they match."""
    diffs: list[Difference] = []
    diffs.extend(compare_files(reference.files, candidate.files, ignored_paths=ignored_paths))
    ref_links = _filter_groups(reference.hardlinks, ignored_paths)
    cand_links = _filter_groups(candidate.hardlinks, ignored_paths)
    for group in sorted(set(ref_links) - set(cand_links)):
        diffs.append(Difference("hardlinks", " ".join(group), "linked", _group_state(group, cand_links)))
    for group in sorted(set(cand_links) - set(ref_links)):
        diffs.append(Difference("hardlinks", " ".join(group), _group_state(group, ref_links), "linked"))
    ref_cfg = normalize_config(reference.config)
    cand_cfg = normalize_config(candidate.config)
    for key in CONFIG_FIELDS:
        if ref_cfg[key] != cand_cfg[key]:
            diffs.append(
                Difference("config", key, json.dumps(ref_cfg[key]), json.dumps(cand_cfg[key]))
            )
    if reference.nonempty_layers != candidate.nonempty_layers:
        diffs.append(
            Difference(
                "layers",
                "layers that change the filesystem",
                str(reference.nonempty_layers),
                str(candidate.nonempty_layers),
            )
        )
    return diffs


def _is_ignored(path: str, ignored_paths: Mapping[str, str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in ignored_paths)


def _filter_groups(
    groups: Iterable[tuple[str, ...]], ignored_paths: Mapping[str, str]
) -> set[tuple[str, ...]]:
    out = set()
    for g in groups:
        kept = tuple(p for p in g if not _is_ignored(p, ignored_paths))
        if len(kept) > 1:
            out.add(kept)
    return out


def _group_state(group: tuple[str, ...], groups: set[tuple[str, ...]]) -> str:
    for g in groups:
        if set(g) & set(group):
            return "linked as " + " ".join(g)
    return "not linked"


def compare_files(
    reference: Mapping[str, FileEntry],
    candidate: Mapping[str, FileEntry],
    *,
    ignored_paths: Mapping[str, str] = IGNORED_PATHS,
) -> list[Difference]:
    """Per-path differences: missing, extra, or differing type/mode/owner/size/content/link."""
    diffs: list[Difference] = []
    for path in sorted(set(reference) | set(candidate)):
        if _is_ignored(path, ignored_paths):
            continue
        ref = reference.get(path)
        cand = candidate.get(path)
        if ref == cand:
            continue
        if ref is None:
            assert cand is not None
            diffs.append(Difference("fs", path, "absent", cand.describe()))
        elif cand is None:
            diffs.append(Difference("fs", path, ref.describe(), "absent"))
        else:
            diffs.append(Difference("fs", path, ref.describe(), cand.describe()))
    return diffs


def format_report(diffs: Iterable[Difference], *, limit: int = 60) -> str:
    """Human-readable listing of differences, truncated after ``limit`` lines."""
    lines = [str(d) for d in diffs]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return "\n".join(lines)


def snapshot_summary(snap: ImageSnapshot) -> dict[str, Any]:
    """A JSON-able summary (files, hardlinks, config, layer counts) for debugging reports."""
    return {
        "config": normalize_config(snap.config),
        "layer_changes": [len(paths) for paths in snap.layer_changes],
        "hardlinks": [list(g) for g in snap.hardlinks],
        "files": {p: e.describe() for p, e in snap.files.items()},
    }
