"""The build cache seen from the user's side: list it, measure it, prune it by a policy.

What a cache record costs is its layer: the bytes of every stored form of its ``diff_id``
(for a snapshot-backed layer with no blob yet, the size of its tar).
A layer that an image also uses (tagged or not) is *shared*: deleting the record frees none
of it, so "reclaimable" and ``--keep-storage`` count only layers no image uses, each once.

Pruning (:func:`prune_cache`) picks records by a :class:`PrunePolicy`:

* ``all``: every record, and the ``RUN --mount=type=cache`` directories;
* ``older_than``: records not used (hit or made) within that many seconds;
* ``keep_storage``: the least recently used records go, one by one, until the unshared
  layers of the records left fit in that many bytes (applied after ``older_than``);
* neither (the default, like ``docker builder prune`` without ``-a``): records whose
  layer is part of no tagged image (the step's filesystem chain is not a prefix of a tagged
  image's chain). Records that made no layer cost nothing and stay.

Every mode also drops records whose layer is gone from the store, no blob and no snapshot to
write it from (they can never hit).
Records are chosen and deleted under the store's exclusive lock; then the store's garbage
collection (:func:`dockyard.store.gc.prune`) removes blobs nothing references any more, and
committed snapshots whose chain no image or remaining record uses are removed too, except
the one a used layer without a blob is written from (its only copy). Tagged
(and untagged) images always stay, with everything they reference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dockyard.errors import DockyardError, NotFoundError, StoreError, UsageError
from dockyard.image.oci import chain_ids
from dockyard.quick import record_uses
from dockyard.store.db import CacheRecord, LayerSnapshot, Store
from dockyard.store.gc import prune as gc_prune

__all__ = [
    "CACHE_MOUNT_KIND",
    "CacheEntry",
    "CachePruneReport",
    "CacheUsage",
    "KindUsage",
    "PrunePolicy",
    "SnapshotSweeper",
    "cache_entries",
    "cache_usage",
    "parse_duration",
    "parse_size",
    "prune_cache",
    "select_for_prune",
    "sweep_snapshots",
]

CACHE_MOUNT_KIND = "cache mount"

# --- parsing sizes and durations -------------------------------------------------------

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")

_DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w)")


def parse_size(text: str) -> int:
    """Bytes in a size such as ``10GB``, ``500MB``, ``1.5GiB`` or ``1024``.

    Units are case-insensitive; ``k``/``kB``, ``M``/``MB``... are decimal (as dockyard prints
    sizes), ``KiB``, ``MiB``, ``GiB``, ``TiB`` binary. Raises UsageError.
    """
    m = _SIZE_RE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _SIZE_UNITS:
        raise UsageError(f"invalid size {text!r} (use e.g. 10GB, 500MB, 1.5GiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``24h``, ``7d``, ``30m``, ``1h30m`` or ``1.5h``.

    Units: ms, s, m, h, d (24 h), w (7 d); every number needs one (``0`` alone is allowed).
    Raises UsageError.
    """
    s = text.strip().lower()
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise UsageError(f"invalid duration {text!r} (use e.g. 30m, 24h, 7d)")
    return total


# --- what the cache holds ----------------------------------------------------------------


@dataclass(frozen=True)
class CacheEntry:
    """One cache record with what it costs and what uses it."""

    record: CacheRecord
    kind: str  # the instruction that made it: RUN, COPY, ADD, ... ("" if unknown)
    size: int  # bytes on disk of its layer (every stored form); 0 without a layer
    layer_missing: bool  # it names a layer whose blobs are all gone
    in_tagged_image: bool  # its filesystem chain is part of a tagged image
    shared: bool  # its layer is used by an image too, so deleting it frees nothing

    @property
    def has_layer(self) -> bool:
        """Whether the step made a layer."""
        return bool(self.record.diff_id)

    @property
    def reclaimable(self) -> int:
        """Bytes deleting this record (alone) could free."""
        return 0 if self.shared else self.size


def _kind(record: CacheRecord) -> str:
    instruction = record.result.get("instruction") if record.result else None
    if isinstance(instruction, str) and instruction:
        return instruction.upper()
    first = record.description.split(maxsplit=1)
    return first[0].upper() if first and first[0].isalpha() else ""


def _layer_disk_size(store: Store, diff_id: str) -> tuple[int, bool]:
    """(bytes of the stored forms of the layer, whether any form is there)."""
    digests: set[str] = {diff_id}
    layer = store.get_layer(diff_id)
    if layer is not None:
        digests.update(b.digest for b in layer.blobs.values())
        digests.update(b.digest for b in layer.pulled)
    size = 0
    present = False
    for digest in sorted(digests):
        if store.blobs.has(digest):
            present = True
            with contextlib.suppress(OSError):
                size += store.blobs.size(digest)
    if not present and layer is not None and layer.snapshots:
        # Snapshot-backed (no blob yet): its bytes on disk are the snapshot's diff, about
        # the size of its tar.
        return layer.size or 0, True
    return size, present


@dataclass(frozen=True)
class _ImageUse:
    tagged_chains: frozenset[str]
    tagged_layers: frozenset[str]
    image_layers: frozenset[str]
    image_chains: frozenset[str]


def _image_use(store: Store) -> _ImageUse:
    tagged_chains: set[str] = set()
    tagged_layers: set[str] = set()
    image_layers: set[str] = set()
    image_chains: set[str] = set()
    for image in store.list_images():
        try:
            diff_ids = list(store.read_config(image).diff_ids)
        except DockyardError:
            continue  # a damaged image: gc keeps what it can name; we claim nothing more
        chains = chain_ids(diff_ids)
        image_layers.update(diff_ids)
        image_chains.update(chains)
        if image.names:
            tagged_layers.update(diff_ids)
            tagged_chains.update(chains)
    return _ImageUse(
        frozenset(tagged_chains),
        frozenset(tagged_layers),
        frozenset(image_layers),
        frozenset(image_chains),
    )


def cache_entries(store: Store) -> list[CacheEntry]:
    """Every cache record with its cost and users, least recently used first."""
    use = _image_use(store)
    sizes: dict[str, tuple[int, bool]] = {}
    entries: list[CacheEntry] = []
    # a build answered by the up-to-date check used its steps' records without touching them
    quick_uses = record_uses(str(store.root))
    for record in store.list_cache_records():
        if quick_uses.get(record.key, 0.0) > record.last_used:
            record = dataclasses.replace(record, last_used=quick_uses[record.key])
        size, present, in_tagged, shared = 0, True, False, False
        if record.diff_id:
            if record.diff_id not in sizes:
                sizes[record.diff_id] = _layer_disk_size(store, record.diff_id)
            size, present = sizes[record.diff_id]
            shared = record.diff_id in use.image_layers
            in_tagged = (
                record.chain_id in use.tagged_chains
                if record.chain_id
                else record.diff_id in use.tagged_layers
            )
        entries.append(
            CacheEntry(
                record=record,
                kind=_kind(record),
                size=size,
                layer_missing=bool(record.diff_id) and not present,
                in_tagged_image=in_tagged,
                shared=shared,
            )
        )
    return entries


@dataclass(frozen=True)
class KindUsage:
    """Disk use of one kind of cache (an instruction, or the cache mounts)."""

    kind: str
    records: int
    size: int  # distinct layers (or directories) of this kind
    reclaimable: int  # of which no image uses


@dataclass(frozen=True)
class CacheUsage:
    """``cache du``: the whole build cache and its parts."""

    records: int
    size: int  # distinct layers of all records, plus the cache mounts
    reclaimable: int
    kinds: tuple[KindUsage, ...]


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                total += st.st_blocks * 512 if st.st_blocks else st.st_size
    return total


def _unique(entries: Iterable[CacheEntry]) -> tuple[int, int]:
    """(size, reclaimable) of the distinct layers of ``entries``."""
    seen: dict[str, CacheEntry] = {}
    for e in entries:
        if e.record.diff_id and e.record.diff_id not in seen:
            seen[e.record.diff_id] = e
    return sum(e.size for e in seen.values()), sum(e.reclaimable for e in seen.values())


def cache_usage(store: Store, entries: Sequence[CacheEntry] | None = None) -> CacheUsage:
    """Totals per kind (biggest first) and overall; ``RUN --mount=type=cache`` directories
    are the kind :data:`CACHE_MOUNT_KIND` (``prune --all`` removes them)."""
    if entries is None:
        entries = cache_entries(store)
    by_kind: dict[str, list[CacheEntry]] = {}
    for e in entries:
        by_kind.setdefault(e.kind or "OTHER", []).append(e)
    kinds: list[KindUsage] = []
    for kind, group in by_kind.items():
        size, reclaimable = _unique(group)
        kinds.append(KindUsage(kind, len(group), size, reclaimable))
    mounts_size = 0
    mounts = 0
    if store.cache_dir.is_dir():
        for entry in store.cache_dir.iterdir():
            mounts += 1
            mounts_size += _tree_size(entry) if entry.is_dir() else 0
    if mounts:
        kinds.append(KindUsage(CACHE_MOUNT_KIND, mounts, mounts_size, mounts_size))
    kinds.sort(key=lambda k: (-k.size, k.kind))
    size, reclaimable = _unique(entries)
    return CacheUsage(
        records=len(entries),
        size=size + mounts_size,
        reclaimable=reclaimable + mounts_size,
        kinds=tuple(kinds),
    )


# --- choosing what to prune --------------------------------------------------------------


@dataclass(frozen=True)
class PrunePolicy:
    """Which records ``cache prune`` deletes (see the module docstring)."""

    all: bool = False
    keep_storage: int | None = None  # bytes
    older_than: float | None = None  # seconds

    @property
    def is_default(self) -> bool:
        """No option given: prune what no tagged image uses."""
        return not self.all and self.keep_storage is None and self.older_than is None


def select_for_prune(
    entries: Sequence[CacheEntry], policy: PrunePolicy, now: float
) -> list[CacheEntry]:
    """The entries ``policy`` deletes, in the order given (callers pass LRU order)."""
    if policy.all:
        return list(entries)
    cutoff = None if policy.older_than is None else now - policy.older_than

    def doomed(e: CacheEntry) -> bool:
        if e.layer_missing:
            return True
        if policy.is_default:
            return e.has_layer and not e.in_tagged_image
        return cutoff is not None and e.record.last_used < cutoff

    chosen: set[str] = {e.record.key for e in entries if doomed(e)}
    if policy.keep_storage is not None:
        remaining = [e for e in entries if e.record.key not in chosen]
        # How many remaining records use each layer: its bytes are freed with the last one.
        users: dict[str, int] = {}
        for e in remaining:
            if e.record.diff_id:
                users[e.record.diff_id] = users.get(e.record.diff_id, 0) + 1
        _, held = _unique(remaining)
        for e in sorted(remaining, key=lambda x: (x.record.last_used, x.record.key)):
            if held <= policy.keep_storage:
                break
            chosen.add(e.record.key)
            diff_id = e.record.diff_id
            if diff_id:
                users[diff_id] -= 1
                if users[diff_id] == 0:
                    held -= e.reclaimable
    return [e for e in entries if e.record.key in chosen]


# --- pruning -----------------------------------------------------------------------------


class SnapshotSweeper(Protocol):
    """What :func:`sweep_snapshots` needs of a snapshotter (overlay and native have it)."""

    def committed(self) -> list[str]: ...

    def fs_dir(self, key: str) -> Path: ...

    def remove(self, key: str) -> None: ...


def sweep_snapshots(store: Store, snapshotter: SnapshotSweeper) -> tuple[int, int]:
    """Remove committed snapshots whose chain no image and no cache record uses; returns
    (snapshots removed, bytes freed). Call under the store's exclusive lock.

    A snapshot some kept snapshot is built on is refused by the snapshotter, so it stays;
    removal repeats until nothing more goes, so dead chains go from the top down. Active
    snapshots and views (a crashed build's) are left alone: they may still be mounted.
    """
    use = _image_use(store)
    records = store.list_cache_records()
    live: set[str] = set(use.image_chains)
    live.update(r.chain_id for r in records if r.chain_id)
    committed = snapshotter.committed()
    kind: str | None = getattr(snapshotter, "name", None)
    # A layer in use that has no tar blob lives only in a snapshot: keep one it can be made
    # from. A compressed form does not count: the tar cannot be had back from it (and an
    # export that streams a snapshot into the compressor keeps no tar).
    used_layers = set(use.image_layers) | {r.diff_id for r in records if r.diff_id}
    present = set(committed)
    for diff_id in sorted(used_layers):
        layer = store.get_layer(diff_id)
        if layer is None or not layer.snapshots:
            continue
        if store.blobs.has(diff_id):
            continue
        sources = [
            s.chain_id
            for s in layer.snapshots
            if s.chain_id in present and (kind is None or s.snapshotter == kind)
        ]
        if sources and not live.intersection(sources):
            live.add(sources[0])
    dead = [name for name in committed if name not in live]
    removed = 0
    freed = 0
    progress = True
    while dead and progress:
        progress = False
        for name in list(dead):
            backed = _layer_sources(store, name, kind)
            # Rows go first: a crash after them leaves an unclaimed snapshot (swept next
            # time), never a layer that claims a snapshot that is gone.
            store.forget_snapshot_layers(name, kind)
            try:
                size = _tree_size(snapshotter.fs_dir(name).parent)
                snapshotter.remove(name)
            except NotFoundError:
                continue  # already gone (its rows too, now)
            except StoreError:
                for diff_id, (size_, source) in backed:  # it stays: so do its rows
                    store.put_snapshot_layer(diff_id, size_, source)
                continue  # has children (still used)
            dead.remove(name)
            removed += 1
            freed += size
            progress = True
    return removed, freed


def _layer_sources(
    store: Store, chain_id: str, kind: str | None
) -> list[tuple[str, tuple[int, LayerSnapshot]]]:
    """The layers snapshot ``chain_id`` backs: (diff id, (tar size, source))."""
    out: list[tuple[str, tuple[int, LayerSnapshot]]] = []
    for diff_id in store.layers_backed_by(chain_id):
        layer = store.get_layer(diff_id)
        if layer is None:
            continue
        for source in layer.snapshots:
            if source.chain_id == chain_id and (kind is None or source.snapshotter == kind):
                out.append((diff_id, (layer.size or 0, source)))
    return out


@dataclass(frozen=True)
class CachePruneReport:
    """What ``cache prune`` removed."""

    records_removed: int = 0
    cache_mounts_removed: int = 0
    blobs_removed: int = 0
    snapshots_removed: int = 0
    bytes_freed: int = 0


def _remove_cache_mounts(store: Store) -> tuple[int, int]:
    count = 0
    freed = 0
    if store.cache_dir.is_dir():
        for entry in list(store.cache_dir.iterdir()):
            freed += _tree_size(entry) if entry.is_dir() else 0
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            count += 1
    return count, freed


def prune_cache(
    store: Store,
    policy: PrunePolicy,
    *,
    now: float | None = None,
    timeout: float | None = 60.0,
    snapshotter: SnapshotSweeper | None = None,
) -> CachePruneReport:
    """Delete the records ``policy`` picks, then collect garbage (see the module docstring).

    Each phase holds the store's exclusive lock (waiting up to ``timeout`` seconds for
    running builds, then StoreLockTimeout): choosing and deleting records (and with
    ``policy.all`` the cache mounts), the store's blob collection, and, when a
    ``snapshotter`` is given, the snapshot sweep. A build that starts between phases is
    safe: every phase decides what is alive afresh.
    """
    when = time.time() if now is None else now
    with store.exclusive_lock(timeout):
        chosen = select_for_prune(cache_entries(store), policy, when)
        records = store.delete_cache_records(e.record.key for e in chosen)
        mounts, mounts_freed = _remove_cache_mounts(store) if policy.all else (0, 0)
    report = gc_prune(store, all_cache=False, timeout=timeout)
    snaps, snaps_freed = 0, 0
    if snapshotter is not None:
        with store.exclusive_lock(timeout):
            snaps, snaps_freed = sweep_snapshots(store, snapshotter)
    return CachePruneReport(
        records_removed=records,
        cache_mounts_removed=mounts,
        blobs_removed=report.blobs_removed,
        snapshots_removed=snaps + report.snapshots_removed,
        bytes_freed=report.bytes_freed + mounts_freed + snaps_freed,
    )
