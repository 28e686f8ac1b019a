"""Checking a stack of layers, without unpacking it, for whiteouts and opaque markers
reached through a symlink: what the applier refuses at unpack (``layers/apply.py``), found
when an image is loaded, so ``load`` refuses the same images that ``build``, ``run``,
``export`` and ``cp`` refuse.

Only names matter: the check tracks which paths of the merged view are symlinks as layers
stack up (an entry replaces what was at its path, a whiteout removes it, an opaque marker
hides everything a lower layer put below its directory), and refuses a marker when any
directory on its way is a symlink at that moment.
"""

from __future__ import annotations

from collections.abc import Iterable

from dockyard.errors import LayerError
from dockyard.layers._tarfmt import WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX
from dockyard.layers.apply import LayerEntry

__all__ = ["MarkerCheck"]


class MarkerCheck:
    """Feed it the entries of each layer in order, bottom first (:meth:`layer`)."""

    def __init__(self) -> None:
        self._links: set[str] = set()

    def _drop_below(self, prefix: str, keep: set[str]) -> None:
        below = prefix + "/"
        self._links = {p for p in self._links if not p.startswith(below) or p in keep}

    def _through_link(self, parts: list[str]) -> str | None:
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if prefix in self._links:
                return prefix
        return None

    def layer(self, entries: Iterable[LayerEntry]) -> None:
        """Account for one layer; raises LayerError naming a marker reached through a
        symlink."""
        added: set[str] = set()
        for entry in entries:
            parts = entry.name.split("/") if entry.name else []
            if not parts:
                continue
            base = parts[-1]
            if base == WHITEOUT_OPAQUE or (
                    base.startswith(WHITEOUT_PREFIX)
                    and not base.startswith(WHITEOUT_META_PREFIX)):
                link = self._through_link(parts[:-1])
                if link is not None:
                    raise LayerError(
                        f"entry {entry.name!r}: whiteout reached through the symlink {link!r}")
                directory = "/".join(parts[:-1])
                if base == WHITEOUT_OPAQUE:
                    self._drop_below(directory, added)
                else:
                    target = "/".join([*parts[:-1], base[len(WHITEOUT_PREFIX):]])
                    if target not in added:
                        self._links.discard(target)
                        self._drop_below(target, added)
                continue
            if base.startswith(WHITEOUT_META_PREFIX):
                continue
            path = entry.name
            added.add(path)
            if entry.type == "symlink":
                self._links.add(path)
                self._drop_below(path, added)
            else:
                self._links.discard(path)
