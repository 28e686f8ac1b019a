"""``store check [--repair]``: is the store consistent, and what did crashes leave behind?

Checked, under the store's exclusive lock (no build runs meanwhile):

* **blobs**: every file under ``blobs/sha256/`` hashes to its name; nothing else is there;
* **references**: every image's manifest, config and layers are present (a layer is present
  as a blob, a compressed form or a committed snapshot it is the diff of, or is known by where
  an imported build cache keeps it, downloaded when needed, or as the compressed blob a pull
  stored, its diff id checked on first use); every name points
  at an image; every stored form of a layer is a present, uncorrupted blob of the recorded
  size; every snapshot a layer names exists; every cache record's layer is present;
* **snapshots**: the snapshot table (``snapshots/snapshots/meta.db``) against the
  directories: records without a directory, directories without a record, removals a crash
  interrupted, snapshots whose parent is gone;
* **leftovers** of killed processes (:func:`leftovers`, which ``prune`` runs too): mounts
  below the store, containers and their bundles, secret directories, uncommitted snapshots,
  temp files in ``tmp/``, hidden ``.dockyard-tmp`` outputs beside export destinations.

``repair`` removes leftovers and what nothing references (the garbage collection of
``prune``), and drops records whose content is gone: a corrupt blob no tagged image uses, an
untagged image missing a part, a layer form whose blob is gone, a cache record whose layer is
gone, a snapshot record without its directory. It never removes what a tagged image uses: a
tagged image with missing or corrupt content is reported, to be pulled or built again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from dockyard._fs import remove_tree, tree_size
from dockyard.errors import DockyardError
from dockyard.store.db import Store
from dockyard.store.leftover_runs import Finding, run_leftovers

__all__ = ["CheckReport", "Finding", "check_store", "leftovers", "run_leftovers"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class CheckReport:
    """What ``check_store`` found (and, with ``repair``, fixed)."""

    findings: tuple[Finding, ...]
    blobs: int = 0
    images: int = 0
    layers: int = 0
    cache_records: int = 0
    snapshots: int = 0
    garbage_blobs: int = 0  # blobs nothing references (prune frees them; not an error)
    garbage_bytes: int = 0
    freed_bytes: int = 0  # by the repair, garbage collection included

    @property
    def ok(self) -> bool:
        """Nothing wrong is left (every finding was repaired, or there was none)."""
        return all(f.repaired for f in self.findings)


# --- leftovers of killed processes (shared with prune) -----------------------------------


def _meta(store: Store) -> object | None:
    from dockyard.snapshot._meta import MetaTable

    if not (store.snapshots_dir / "snapshots").is_dir():
        return None
    return MetaTable(store.snapshots_dir)


def leftovers(store: Store, *, remove: bool) -> list[Finding]:
    """What killed processes left in the store (and beside export destinations); with
    ``remove`` it goes. Call under the store's exclusive lock: then no dockyard process
    uses any of it."""
    from dockyard.exporter._pending import pending
    from dockyard.exporter._pending import sweep as sweep_outputs
    from dockyard.snapshot._meta import MetaTable

    found = run_leftovers(store, remove=remove)

    table = _meta(store)
    if isinstance(table, MetaTable):
        records = table.all()
        for key in sorted(k for k, r in records.items() if r.kind != "committed"):
            rec = records[key]
            size = tree_size(table.dir / str(rec.id))
            done = False
            if remove:
                with contextlib.suppress(DockyardError, OSError):
                    table.remove(key)
                    done = True
            found.append(Finding("snapshot-uncommitted",
                                 f"snapshot {key} ({rec.kind}) was left by a killed build",
                                 repaired=done, bytes=size))
        unrecorded, removing, missing = table.orphans()
        dirs = [table.dir / str(i) for i in [*unrecorded, *removing]]
        sizes = {d: tree_size(d) for d in dirs}
        swept = table.sweep() if remove else (0, 0)
        for sid in unrecorded:
            found.append(Finding("snapshot-orphan",
                                 f"snapshot directory {table.dir / str(sid)} has no record",
                                 repaired=bool(remove and swept),
                                 bytes=sizes[table.dir / str(sid)]))
        for sid in removing:
            found.append(Finding("snapshot-removing",
                                 f"snapshot directory {table.dir / str(sid)} was being removed",
                                 repaired=bool(remove), bytes=sizes[table.dir / str(sid)]))
        del missing  # uncommitted ones are reported above, committed ones by the check

    tmp = store.blobs.tmp
    for entry in sorted(os.listdir(tmp)) if tmp.is_dir() else []:
        size = tree_size(tmp / entry)
        if remove:
            remove_tree(tmp / entry, ignore_errors=True)
        found.append(Finding("temp-file", f"temp file {tmp / entry} was left behind",
                             repaired=remove and not os.path.lexists(tmp / entry), bytes=size))

    outputs = [p for p in pending(store.root) if not p.alive]
    sizes = {p.path: tree_size(p.path) for p in outputs}
    if remove:
        sweep_outputs(store.root)
    for p in outputs:
        found.append(Finding("output-temp", f"unfinished output {p.path} was left behind",
                             repaired=remove, bytes=sizes[p.path]))
    return found


# --- the check ---------------------------------------------------------------------------


@dataclass
class _State:
    findings: list[Finding] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)  # blobs whose bytes are not their digest
    tagged_blobs: set[str] = field(default_factory=set)
    fixes: list[Callable[[], None]] = field(default_factory=list)

    def add(self, kind: str, message: str, fix: Callable[[], None] | None,
            size: int = 0) -> None:
        self.findings.append(Finding(kind, message, repairable=fix is not None, bytes=size))
        self.fixes.append(fix or (lambda: None))


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _present(store: Store, digest: str, corrupt: set[str]) -> bool:
    return digest not in corrupt and store.blobs.has(digest)


def check_store(store: Store, *, repair: bool = False, timeout: float | None = 60.0
                ) -> CheckReport:
    """Check the store (see the module docstring); with ``repair``, fix what can be fixed
    and collect the garbage. Waits up to ``timeout`` seconds for running builds."""
    with store.exclusive_lock(timeout):
        first = _check_locked(store, repair=repair)
    if not repair:
        return first
    from dockyard.store.gc import prune as gc_prune

    gc = gc_prune(store, all_cache=False, timeout=timeout)
    swept = _sweep(store, timeout)
    # What is still wrong after the repair (a tagged image's lost layer) stays reported.
    with store.exclusive_lock(timeout):
        after = _check_locked(store, repair=False)
    still = {(f.kind, f.message) for f in after.findings}
    seen = {(f.kind, f.message) for f in first.findings}
    findings = [replace(f, repaired=(f.kind, f.message) not in still) for f in first.findings]
    findings += [f for f in after.findings if (f.kind, f.message) not in seen]
    return replace(after, findings=tuple(findings),
                   freed_bytes=first.freed_bytes + gc.bytes_freed + swept)


def _sweep(store: Store, timeout: float | None) -> int:
    """Committed snapshots nothing uses (prune's snapshot sweep); returns the bytes freed."""
    from dockyard.snapshot import open_snapshotter
    from dockyard.store.cache_gc import sweep_snapshots

    if _meta(store) is None:
        return 0
    snapshotter = open_snapshotter(store.snapshots_dir, "auto")
    with store.exclusive_lock(timeout):
        _, freed = sweep_snapshots(store, snapshotter)
    return freed


def _check_locked(store: Store, *, repair: bool) -> CheckReport:
    state = _State()
    lefts = leftovers(store, remove=repair)
    freed = sum(f.bytes for f in lefts if f.repaired)
    _check_database(store, state)
    blobs = _check_blobs(store, state)
    images, live_layers = _check_images(store, state)
    live_layers.update(r.diff_id for r in store.list_cache_records() if r.diff_id)
    layers = _check_layers(store, state, live_layers)
    records = _check_cache(store, state)
    snapshots = _check_snapshots(store, state)
    if repair:
        done = []
        for finding, fix in zip(state.findings, state.fixes, strict=True):
            ok = False
            if finding.repairable:
                with contextlib.suppress(DockyardError, OSError):
                    fix()
                    ok = True
            if ok:
                freed += finding.bytes
            done.append(Finding(finding.kind, finding.message, finding.repairable, ok,
                                finding.bytes))
        state.findings = done
    garbage, garbage_bytes = _garbage(store, live_layers)
    return CheckReport(
        findings=tuple(lefts + state.findings), blobs=blobs, images=images, layers=layers,
        cache_records=records, snapshots=snapshots, garbage_blobs=garbage,
        garbage_bytes=garbage_bytes, freed_bytes=freed,
    )


def _check_database(store: Store, state: _State) -> None:
    conn = store.database.conn
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except Exception as err:  # sqlite3.DatabaseError: the file is not a database
        state.add("database", f"the store database {store.db_path} cannot be read: {err}", None)
        return
    problems = [r[0] for r in rows if r[0] != "ok"]
    for text in problems[:10]:
        state.add("database", f"the store database {store.db_path} is damaged: {text}", None)
    for name, image_id in conn.execute(
            "SELECT name, image_id FROM names WHERE image_id NOT IN (SELECT id FROM images)"):
        def fix(name: str = name) -> None:
            with contextlib.suppress(DockyardError):
                store.untag(name)
        state.add("name-dangling", f"name {name} points at {image_id}, which is not stored",
                  fix)


def _check_blobs(store: Store, state: _State) -> int:
    count = 0
    directory = store.blobs.dir
    for entry in sorted(os.scandir(directory), key=lambda e: e.name) if directory.is_dir() else []:
        path = Path(entry.path)
        digest = "sha256:" + entry.name
        if len(entry.name) != 64 or any(c not in "0123456789abcdef" for c in entry.name) or \
                not entry.is_file(follow_symlinks=False):
            size = tree_size(path)
            state.add("blob-stray", f"{path} is not a blob", partial(_unlink, path), size)
            continue
        count += 1
        try:
            got = _hash(path)
        except OSError as err:
            state.add("blob-unreadable", f"blob {digest} cannot be read: {err.strerror}", None)
            state.corrupt.add(digest)
            continue
        if got != digest:
            state.corrupt.add(digest)
    return count


def _unlink(path: Path) -> None:
    remove_tree(path)


def _check_images(store: Store, state: _State) -> tuple[int, set[str]]:
    from dockyard.errors import NotFoundError

    images = store.list_images()
    live_layers: set[str] = set()
    corrupt_reported: set[str] = set()
    # what tagged images use is never removed, even when it is damaged
    for image in images:
        if not image.names:
            continue
        state.tagged_blobs.update((image.id, image.manifest_digest))
        with contextlib.suppress(DockyardError):
            manifest = store.read_manifest(image)
            state.tagged_blobs.update(d.digest for d in manifest.layers)
            config = store.read_config(image)
            for diff_id in config.diff_ids:
                state.tagged_blobs.add(diff_id)
                layer = store.get_layer(diff_id)
                if layer is not None:
                    state.tagged_blobs.update(b.digest for b in layer.blobs.values())
                    state.tagged_blobs.update(b.digest for b in layer.pulled)
    for image in images:
        name = ", ".join(image.names) if image.names else f"untagged image {image.short_id}"
        problems: list[str] = []
        for digest, what in ((image.manifest_digest, "manifest"), (image.id, "config")):
            if digest in state.corrupt:
                problems.append(f"its {what} blob {digest} is corrupt")
            elif not store.blobs.has(digest):
                problems.append(f"its {what} blob {digest} is missing")
        diff_ids: list[str] = []
        if not problems:
            try:
                diff_ids = list(store.read_config(image).diff_ids)
                manifest = store.read_manifest(image)
            except DockyardError as err:
                problems.append(f"its documents cannot be read ({err})")
            else:
                problems += _size_problems(store, image.manifest_digest, image.manifest_size,
                                           "manifest")
                problems += _size_problems(store, manifest.config.digest,
                                           manifest.config.size, "config")
                for desc in manifest.layers:
                    problems += _size_problems(store, desc.digest, desc.size, "layer")
        for diff_id in diff_ids:
            live_layers.add(diff_id)
            if not _layer_present(store, diff_id, state.corrupt):
                problems.append(f"its layer {diff_id} is gone")
        for digest in (image.id, image.manifest_digest):
            if digest in state.corrupt:
                corrupt_reported.add(digest)
        if not problems:
            continue
        text = f"{name}: " + "; ".join(problems)
        if image.names:
            state.add("image-broken", text + " (pull or build it again)", None)
        else:
            def fix(image_id: str = image.id) -> None:
                with contextlib.suppress(NotFoundError):
                    store.remove_image(image_id)
            state.add("image-broken", text, fix)
    for digest in sorted(state.corrupt - corrupt_reported):
        if digest in state.tagged_blobs:
            state.add("blob-corrupt", f"blob {digest} is corrupt (its content has another "
                      "digest) and a tagged image uses it", None)
        else:
            path = store.blobs.path(digest)
            state.add("blob-corrupt", f"blob {digest} is corrupt (its content has another "
                      "digest)", partial(_unlink, path), tree_size(path))
    return len(images), live_layers


def _size_problems(store: Store, digest: str, recorded: int, what: str) -> list[str]:
    """A present blob whose size is not the one its descriptor records."""
    try:
        size = store.blobs.size(digest)
    except DockyardError:
        return []  # absent: a snapshot-backed layer, or reported as missing
    if size == recorded:
        return []
    return [f"its {what} blob {digest} has {size} bytes, not the {recorded} recorded"]


def _layer_present(store: Store, diff_id: str, corrupt: set[str]) -> bool:
    if _present(store, diff_id, corrupt):
        return True
    layer = store.get_layer(diff_id)
    if layer is None:
        return False
    if any(_present(store, b.digest, corrupt)
           for b in (*layer.blobs.values(), *layer.pulled)):
        return True
    if any(_snapshot_exists(store, s.snapshotter, s.chain_id) for s in layer.snapshots):
        return True
    # a layer hit through --cache-from and not needed yet: recorded where it is kept, and
    # downloaded (verified) when its bytes are needed (docs/cache.md, "Lazy import"); the
    # check does not reach out to a registry for it
    return bool(layer.remotes)


def _snapshot_exists(store: Store, snapshotter: str, chain_id: str) -> bool:
    from dockyard.snapshot._meta import MetaTable

    table = _meta(store)
    if not isinstance(table, MetaTable):
        return False
    rec = table.find(chain_id)
    return rec is not None and rec.kind == "committed" and (table.dir / str(rec.id)).is_dir()


def _check_layers(store: Store, state: _State, live: set[str]) -> int:
    ids = store.list_layer_ids()
    for diff_id in ids:
        layer = store.get_layer(diff_id)
        if layer is None or diff_id not in live:
            continue  # a layer nothing uses is garbage (prune forgets it), not wrong
        for compression, form in layer.blobs.items():
            problem = None
            if form.digest in state.corrupt:
                problem = "is corrupt"
            elif not store.blobs.has(form.digest):
                problem = "is missing"
            else:
                with contextlib.suppress(OSError):
                    size = store.blobs.size(form.digest)
                    if size != form.size:
                        problem = f"has {size} bytes, not the {form.size} recorded"
            if problem is None:
                continue
            def fix(d: str = diff_id, c: str = compression) -> None:
                store.layers.forget_blob(d, c)
            state.add("layer-form", f"layer {diff_id}: its {compression} blob {form.digest} "
                      f"{problem}", fix)
        for pulled in layer.pulled:
            if pulled.digest in state.corrupt:
                problem = "is corrupt"
            elif not store.blobs.has(pulled.digest):
                problem = "is missing"
            else:
                continue
            def forget(d: str = diff_id, b: str = pulled.digest) -> None:
                store.layers.forget_pulled(d, b)
            state.add("layer-form", f"layer {diff_id}: the blob {pulled.digest} a pull "
                      f"stored for it {problem}", forget)
        for source in layer.snapshots:
            if _snapshot_exists(store, source.snapshotter, source.chain_id):
                continue
            def drop(chain: str = source.chain_id, kind: str = source.snapshotter) -> None:
                store.forget_snapshot_layers(chain, kind)
            state.add("layer-snapshot", f"layer {diff_id} is recorded as the diff of snapshot "
                      f"{source.chain_id}, which is gone", drop)
    return len(ids)


def _check_cache(store: Store, state: _State) -> int:
    records = store.list_cache_records()
    for record in records:
        if not record.diff_id or _layer_present(store, record.diff_id, state.corrupt):
            continue
        def fix(key: str = record.key) -> None:
            store.delete_cache_records([key])
        state.add("cache-record", f"cache record of \"{record.description[:60]}\" names layer "
                  f"{record.diff_id}, which is gone", fix)
    return len(records)


def _check_snapshots(store: Store, state: _State) -> int:
    from dockyard.snapshot._meta import MetaTable

    table = _meta(store)
    if not isinstance(table, MetaTable):
        return 0
    records = table.all()
    for key, rec in sorted(records.items()):
        if rec.kind != "committed":
            continue
        problem = None
        if not (table.dir / str(rec.id)).is_dir():
            problem = "has no directory"
        elif rec.parent is not None and (records.get(rec.parent) is None
                                         or records[rec.parent].kind != "committed"):
            problem = f"is built on snapshot {rec.parent}, which is gone"
        if problem is None:
            continue
        def fix(k: str = key) -> None:
            for gone in table.forget(k):
                store.forget_snapshot_layers(gone, None)
        state.add("snapshot", f"committed snapshot {key} {problem}", fix)
    return len(records)


def _garbage(store: Store, live_layers: set[str]) -> tuple[int, int]:
    """Blobs no image or cache record references: prune's to free, not an error."""
    live: set[str] = set()
    for image in store.list_images():
        live.update((image.id, image.manifest_digest))
        with contextlib.suppress(DockyardError):
            live.update(d.digest for d in store.read_manifest(image).layers)
    layers = set(live_layers)
    layers.update(r.diff_id for r in store.list_cache_records() if r.diff_id)
    for diff_id in layers:
        live.add(diff_id)
        layer = store.get_layer(diff_id)
        if layer is not None:
            live.update(b.digest for b in layer.blobs.values())
            live.update(b.digest for b in layer.pulled)
    count = size = 0
    for digest in store.blobs.iter_digests():
        if digest not in live:
            count += 1
            with contextlib.suppress(OSError):
                size += store.blobs.size(digest)
    return count, size

