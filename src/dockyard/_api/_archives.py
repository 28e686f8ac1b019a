"""Archives and files: ``save``, ``load``, ``import_``, ``export``, ``cp``.

A destination or source is a path or a binary file object (``sys.stdout.buffer``, a pipe,
``io.BytesIO``). Each call holds the store's shared lock while it reads or writes blobs,
so a concurrent ``prune`` waits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

from dockyard._api._common import Root, open_store, wanted_platform
from dockyard.errors import UsageError
from dockyard.rootless.namespace import in_namespace

__all__ = [
    "CopyResult",
    "ExportResult",
    "ImportResult",
    "LoadResult",
    "LoadedImage",
    "SaveResult",
    "cp",
    "export",
    "import_",
    "load",
    "save",
]

PathOrFile = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class LoadedImage:
    """An image written to the store, with its names (full references) and their familiar
    forms (``busybox:latest``), in the same order."""

    id: str
    names: tuple[str, ...]
    familiar_names: tuple[str, ...]


@dataclass(frozen=True)
class SaveResult:
    """The images written to the archive (each once, with every name asked for)."""

    images: tuple[LoadedImage, ...]
    format: str  # "docker" or "oci"


@dataclass(frozen=True)
class LoadResult:
    """The images read from the archive into the store."""

    images: tuple[LoadedImage, ...]


@dataclass(frozen=True)
class ImportResult:
    """The one-layer image made from a root filesystem tarball."""

    image_id: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class ExportResult:
    """The image whose flattened filesystem was written."""

    image_id: str


@dataclass(frozen=True)
class CopyResult:
    """What ``cp`` copied: ``path`` of ``image_id`` to ``dest`` (``"-"`` for a stream)."""

    image_id: str
    path: str
    dest: str


def _loaded(image_id: str, names: Sequence[str]) -> LoadedImage:
    from dockyard.image.reference import parse_reference

    return LoadedImage(image_id, tuple(names),
                       tuple(parse_reference(n).familiar for n in names))


def _looks_like_id(arg: str, image_id: str) -> bool:
    hex_id = image_id.removeprefix("sha256:")
    bare = arg.removeprefix("sha256:")
    return len(bare) >= 4 and hex_id.startswith(bare)


def _dest(dest: PathOrFile) -> str | BinaryIO:
    return os.fspath(dest) if isinstance(dest, str | os.PathLike) else dest


def _target(dest: PathOrFile) -> tuple[str, BinaryIO | None]:
    """``(path, None)`` for a path, ``("-", stream)`` for a binary file object."""
    if isinstance(dest, str | os.PathLike):
        return os.fspath(dest), None
    return "-", dest


@in_namespace
def save(
    images: Sequence[str],
    dest: PathOrFile,
    *,
    format: Literal["docker", "oci"] = "docker",
    root: Root = None,
) -> SaveResult:
    """Write ``images`` (names or ids) to one archive at ``dest``: a ``docker load`` tar
    (``format="docker"``) or an OCI image layout tar (``"oci"``). An image named by name
    carries that name in the archive; one named by id carries none."""
    from dockyard.exporter import (
        ArchiveImage,
        StoredImage,
        read_image,
        write_docker_archive,
        write_oci_layout,
    )
    from dockyard.image.reference import parse_reference

    if not images:
        raise UsageError("save: no image given")
    with open_store(root) as store:
        chosen: dict[str, ArchiveImage] = {}
        for arg in images:
            image = read_image(store, arg)
            names: tuple[str, ...] = ()
            if not _looks_like_id(arg, image.id):
                names = (str(parse_reference(arg)),)
            platforms: tuple[tuple[str, StoredImage], ...] = ()
            if names and store.get_index(arg) is not None:  # a multi-platform name: all of it
                platforms = tuple((plat, read_image(store, rec.id))
                                  for plat, rec in store.index_images(arg))
            key = image.id if not platforms else "index:" + names[0]
            prev = chosen.get(key)
            merged = (prev.names if prev else ()) + names
            chosen[key] = ArchiveImage(image, tuple(dict.fromkeys(merged)), platforms)
        with store.build_lock():
            if format == "oci":
                write_oci_layout(store, list(chosen.values()), _dest(dest))
            else:
                write_docker_archive(store, list(chosen.values()), _dest(dest))
    return SaveResult(tuple(_loaded(a.image.id, a.names) for a in chosen.values()), format)


def load(source: PathOrFile, *, root: Root = None) -> LoadResult:
    """Load every image of a docker archive or an OCI layout (a tar, a layout directory, or
    a stream of either) into the store, with the names the archive gives them."""
    from dockyard.exporter import load_archive

    with open_store(root) as store, store.build_lock():
        loaded = load_archive(store, _dest(source))
    return LoadResult(tuple(_loaded(image.id, image.names) for image in loaded))


def import_(
    source: PathOrFile,
    name: str | None = None,
    *,
    changes: Sequence[str] = (),
    message: str | None = None,
    platform: str | None = None,
    root: Root = None,
) -> ImportResult:
    """``docker import``: a root filesystem tarball (plain, gzip, zstd, bzip2 or xz) as a
    one-layer image named ``name``. ``changes`` are Dockerfile instructions applied to the
    config (``CMD``, ``ENV``, ``WORKDIR`` ...), ``message`` the history comment, ``platform``
    the ``os/arch`` to record (default the host's)."""
    from dockyard.exporter import import_rootfs

    parsed: tuple[str, str] | None = None
    if platform:
        os_name, _, arch = platform.partition("/")
        if not os_name or not arch:
            raise UsageError(f"--platform must be os/arch, not {platform!r}")
        parsed = (os_name, arch.split("/")[0])
    names = [name] if name else []
    with open_store(root) as store, store.build_lock():
        image = import_rootfs(store, _dest(source), names, changes=changes, message=message,
                              platform=parsed)
    return ImportResult(image.id, image.names)


@in_namespace
def export(image: str, dest: PathOrFile, *, root: Root = None,
           platform: str | None = None) -> ExportResult:
    """Write the flattened filesystem of ``image`` as a tar to ``dest`` (a path is written
    atomically: a temp file renamed into place). ``platform`` (``os/arch[/variant]``) picks
    that platform's image of a multi-platform name (default: the host's, else the first)."""
    from dockyard.exporter import OutputSpec, read_image
    from dockyard.exporter import export as write_output

    with open_store(root) as store:
        stored = read_image(store, image, wanted_platform(platform))
        target, stream = _target(dest)
        with store.build_lock():
            write_output(store, stored.id, OutputSpec(type="tar", dest=target), (),
                         stdout=stream)
    return ExportResult(stored.id)


@in_namespace
def cp(
    image: str,
    path: str,
    dest: PathOrFile,
    *,
    follow_link: bool = False,
    root: Root = None,
    warn: Callable[[str], None] | None = None,
    platform: str | None = None,
) -> CopyResult:
    """``docker cp`` out of an image: ``path`` (absolute in the image) to ``dest``.

    A binary file object as ``dest`` gets a tar of ``path`` (its base name as the top
    entry). Otherwise a file goes to ``dest`` (inside it if it is a directory); a directory
    to a missing ``dest`` becomes ``dest``, to an existing directory goes inside it, and
    ``PATH/.`` copies only its contents. ``follow_link`` follows a symlink at ``path``.
    A device node or FIFO of the image is never opened: it is made anew as a node (as
    root), or skipped with a message to ``warn``. ``platform`` (``os/arch[/variant]``)
    picks that platform's image of a multi-platform name (default: the host's, else the
    first).
    """
    from dockyard.exporter import copy_from_image, read_image

    target, stream = _target(dest)
    wanted = wanted_platform(platform)
    with open_store(root) as store:
        stored = read_image(store, image, wanted)
        with store.build_lock():
            copy_from_image(store, stored, path, target, stdout=stream,
                            follow_link=follow_link, warn=warn)
    if stream is not None:
        stream.flush()
    return CopyResult(stored.id, path, target)
