"""ADD's archive handling, and tarball build contexts: detect a (compressed) tar the way Docker
does, and unpack it with the one safe applier (``dockyard.layers.apply.apply_layer``).

Docker treats a local ADD source as an archive when it decompresses (gzip, bzip2, xz, zstd or
plain) and its first tar header reads; anything else is copied as a plain file. Entries
keep the ownership recorded in the archive (``--chown`` only applies to the destination
directory), ``.wh.`` whiteouts delete, and no entry can write outside the destination. The
archive is held to the limits of :mod:`dockyard.limits` like any layer.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from dockyard.errors import ContextError, DockyardError, LayerError, NoSpaceError

__all__ = ["extract_archive", "is_archive"]


def is_archive(path: Path) -> bool:
    """Docker's isArchivePath: decompresses and has a readable first tar header."""
    from dockyard.layers.compress import open_decompressed

    try:
        with (
            open(path, "rb") as raw,
            open_decompressed(raw) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            return tar.next() is not None
    except (DockyardError, tarfile.TarError, OSError, EOFError, ValueError):
        return False


def extract_archive(
    archive: Path, dest: Path, *, devices: bool = True, name: str | None = None
) -> None:
    """Unpack ``archive`` (any compression) into the existing directory ``dest``, safely.

    ``devices=False`` refuses device nodes (a build context is unpacked on the host, outside
    the store). A bad archive is a ContextError naming it (``name``, default its file name)
    and the problem."""
    from dockyard.layers.apply import apply_layer

    name = name or archive.name
    try:
        with open(archive, "rb") as raw:
            apply_layer(raw, dest, overlay_whiteouts=False, devices=devices)
    except NoSpaceError:
        raise
    except LayerError as err:
        raise ContextError(f"failed to extract {name}: {err}") from None
    except OSError as err:
        raise ContextError(f"failed to extract {name}: {err.strerror}") from None

