"""exporter room: outputs of a build and the archive commands (see docs/architecture.md).

``export(store, image_id, spec, names)`` writes one ``--output`` (parsed by
``parse_output``): an OCI layout (tar or directory), a ``docker load`` archive, the final
filesystem as a directory or a tar. Layers are compressed only here. Reading archives back
(``load``, ``import``) and copying paths out of an image (``cp``) live here too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from dockyard.exporter.spec import OutputSpec, parse_output

if TYPE_CHECKING:
    from dockyard.exporter._stored import StoredImage, read_image
    from dockyard.exporter.flatten import copy_from_image, flatten_to_dir, write_rootfs_tar
    from dockyard.exporter.layout import ArchiveImage, write_docker_archive, write_oci_layout
    from dockyard.exporter.load import LoadedImage, import_rootfs, load_archive
    from dockyard.store.db import Store

# The writers and readers are imported when first used (PEP 562): a build parses its
# --output spec (``dockyard.exporter.spec``) before its first cache lookup, and importing
# this package must not bring tarfile, the compressors, concurrent.futures and logging along
# (issue 18: the import path of a build before its first lookup).
_LAZY = {
    "StoredImage": "_stored", "read_image": "_stored",
    "copy_from_image": "flatten", "flatten_to_dir": "flatten", "write_rootfs_tar": "flatten",
    "ArchiveImage": "layout", "write_docker_archive": "layout", "write_oci_layout": "layout",
    "LoadedImage": "load", "import_rootfs": "load", "load_archive": "load",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

__all__ = [
    "ArchiveImage",
    "LoadedImage",
    "OutputSpec",
    "StoredImage",
    "copy_from_image",
    "export",
    "flatten_to_dir",
    "import_rootfs",
    "load_archive",
    "parse_output",
    "platform_dir",
    "read_image",
    "write_docker_archive",
    "write_oci_layout",
    "write_rootfs_tar",
]


def _dest(dest: str | None, stdout: BinaryIO | None) -> str | BinaryIO:
    if dest == "-":
        return stdout if stdout is not None else sys.stdout.buffer
    assert dest is not None  # parse_output requires dest for every type that writes
    return dest


def export(
    store: Store,
    image_id: str,
    spec: OutputSpec,
    names: Sequence[str],
    *,
    stdout: BinaryIO | None = None,
    platforms: Sequence[tuple[str, str]] = (),
) -> tuple[tuple[str, str], ...]:
    """Write the image ``image_id`` from the store as ``spec`` says, carrying ``names``
    (image references, e.g. the ``-t`` values) where the format has names.

    ``type=image`` writes nothing: the image is already in the store. ``type=registry`` (or
    ``push=true``) pushes it to every name's registry.

    ``platforms`` (``(os/arch[/variant], image id)`` pairs) makes the output a multi-platform
    image, as BuildKit writes one: an OCI index in ``oci`` and ``docker`` archives and in the
    registry, and one directory per platform (``linux_amd64``, ``linux_arm_v7``) for
    ``local`` and ``tar``; ``image_id`` is then the default platform's image.

    ``type=docker`` without ``dest`` loads the image into the Docker daemon
    (``exporter/daemon.py``). Returns what was pushed or loaded: ``(name, manifest digest)``
    pairs, or ``("loaded", the daemon's line)``."""
    from dockyard.exporter._stored import read_image
    from dockyard.exporter.flatten import flatten_to_dir, write_rootfs_tar
    from dockyard.exporter.layout import ArchiveImage, write_docker_archive, write_oci_layout

    all_names = tuple(names) + ((spec.name,) if spec.name else ())
    done: tuple[tuple[str, str], ...] = ()
    if spec.push:  # as buildx: the output's name= wins over the -t names
        done = _push(store, image_id, spec, (spec.name,) if spec.name else tuple(names),
                     platforms)
    if spec.type in ("image", "registry"):
        return done
    image = read_image(store, image_id)
    each = tuple((plat, read_image(store, pid)) for plat, pid in platforms)
    if spec.type == "docker" and spec.dest is None:
        return _load_into_daemon(store, image, all_names, each)
    if spec.type == "oci":
        write_oci_layout(store, [ArchiveImage(image, all_names, each)],
                         _dest(spec.dest, stdout), as_tar=spec.tar,
                         compression=spec.compression)
    elif spec.type == "docker":
        write_docker_archive(store, [ArchiveImage(image, all_names, each)],
                             _dest(spec.dest, stdout))
    elif spec.type == "local":
        assert spec.dest is not None
        if each:
            for plat, one in each:
                flatten_to_dir(store, one, Path(spec.dest) / platform_dir(plat))
        else:
            flatten_to_dir(store, image, Path(spec.dest))
    elif spec.type == "tar":
        dest = _dest(spec.dest, stdout)
        if isinstance(dest, str):
            _write_file_atomic(store, image, Path(dest), each)
        else:
            write_rootfs_tar(store, image, dest, each)
            dest.flush()
    return done


def platform_dir(platform: str) -> str:
    """The directory BuildKit's local and tar exporters give a platform: ``linux_arm_v7``."""
    return platform.replace("/", "_")


def _load_into_daemon(store: Store, image: StoredImage,
                      names: Sequence[str],
                      each: Sequence[tuple[str, StoredImage]] = (),
                      ) -> tuple[tuple[str, str], ...]:
    import tempfile

    from dockyard.exporter.daemon import DockerDaemon
    from dockyard.exporter.layout import ArchiveImage, write_docker_archive

    daemon = DockerDaemon.from_env()
    with tempfile.TemporaryFile(dir=store.root / "tmp") as archive:
        write_docker_archive(store, [ArchiveImage(image, tuple(names), tuple(each))], archive)
        archive.seek(0)
        return tuple(("loaded", line) for line in daemon.load(archive))


def _push(store: Store, image_id: str, spec: OutputSpec, names: Sequence[str],
          platforms: Sequence[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
    from dockyard.errors import UsageError
    from dockyard.image.reference import parse_reference
    from dockyard.registry import RegistryOptions, push

    targets = list(dict.fromkeys(n for name in names for n in name.split(",") if n.strip()))
    if not targets:
        raise UsageError("--output type=registry / push=true needs a name: -t NAME or name=NAME")
    pushed: list[tuple[str, str]] = []
    for target in targets:
        domain = parse_reference(target.strip()).domain
        options = RegistryOptions.from_env(
            insecure_registries=(domain,) if spec.insecure else ())
        result = push(store, image_id, target.strip(),
                      manifest_format="oci" if spec.oci_mediatypes else "docker",
                      compression=spec.compression, options=options, platforms=platforms)
        pushed.append((result.reference, result.digest))
    return tuple(pushed)


def _write_file_atomic(store: Store, image: StoredImage, path: Path,
                       each: Sequence[tuple[str, StoredImage]] = ()) -> None:
    from dockyard._fs import no_space
    from dockyard.exporter._pending import atomic_output
    from dockyard.exporter.flatten import write_rootfs_tar

    path.parent.mkdir(parents=True, exist_ok=True)
    with no_space("the output tar", path), atomic_output(store.root, path) as tmp, \
            open(tmp, "wb") as f:
        write_rootfs_tar(store, image, f, each)
