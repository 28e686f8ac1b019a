"""The snapshot table: ``<root>/snapshots/meta.json``, rewritten atomically under a file lock.

Kept apart from the store's database so the snapshot room owns its own consistency: a record
points at ``<root>/snapshots/<id>/``; ids are short integers so overlay option strings stay
short.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dockyard._fs import is_no_space, remove_tree
from dockyard.errors import NotFoundError, StoreError
from dockyard.snapshot.topdir import spread_subdirs

Kind = Literal["active", "view", "committed"]


@dataclass(frozen=True, slots=True)
class Record:
    """One snapshot: its directory id, kind and committed parent name."""

    id: int
    kind: Kind
    parent: str | None


class MetaTable:
    """Snapshot records, safe across threads and processes sharing one root."""

    def __init__(self, root: Path, driver: str = "") -> None:
        self.driver = driver
        self.dir = root / "snapshots"
        self.dir.mkdir(parents=True, exist_ok=True)
        spread_subdirs(self.dir)  # each snapshot in a block group of its own (see topdir.py)
        self._path = self.dir / "meta.json"
        self._lock_path = self.dir / "meta.lock"
        self._tlock = threading.RLock()
        # The last table read or written by this object, with the (inode, mtime, ctime, size) of
        # the file it came from: a read whose file is unchanged is not parsed again (every
        # save is a new file, so another process's write always shows).
        self._cached: tuple[tuple[int, int, int, int], dict[str, Any]] | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._tlock, open(self._lock_path, "a+b") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)

    def _load(self, *, for_write: bool = False) -> dict[str, Any]:
        """The table (call under the lock). Readers get a shared dict they must not change;
        ``for_write`` gives a private copy to change and :meth:`_save`."""
        try:
            with open(self._path, encoding="utf-8") as f:
                st = os.fstat(f.fileno())
                stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
                if not for_write and self._cached is not None and self._cached[0] == stamp:
                    return self._cached[1]
                data: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            return {"next": 1, "snapshots": {}}
        except ValueError as err:
            raise StoreError(f"corrupt snapshot table {self._path}: {err}") from err
        if not for_write:
            self._cached = (stamp, data)
        return data

    def _save(self, data: dict[str, Any]) -> None:
        tmp = self._path.with_suffix(".tmp")
        self._cached = None
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
            st = os.fstat(f.fileno())
        os.replace(tmp, self._path)
        self._cached = ((st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size), data)

    @staticmethod
    def _record(raw: dict[str, Any]) -> Record:
        return Record(int(raw["id"]), raw["kind"], raw.get("parent"))

    def recorded_driver(self) -> str | None:
        """The snapshotter that made the existing snapshots, if there are any."""
        with self._locked():
            data = self._load()
        return str(data.get("driver") or "") or None if data["snapshots"] else None

    def get(self, key: str) -> Record:
        """The record of ``key``; NotFoundError if there is none."""
        with self._locked():
            raw = self._load()["snapshots"].get(key)
        if raw is None:
            raise NotFoundError(f"snapshot {key} not found")
        return self._record(raw)

    def find(self, key: str) -> Record | None:
        """The record of ``key`` or None."""
        with self._locked():
            raw = self._load()["snapshots"].get(key)
        return None if raw is None else self._record(raw)

    def all(self) -> dict[str, Record]:
        """Every record by key."""
        with self._locked():
            snaps = self._load()["snapshots"]
        return {k: self._record(v) for k, v in snaps.items()}

    def create(self, key: str, kind: Kind, parent: str | None) -> Record:
        """Add ``key`` with a fresh directory id (and make ``<id>/``)."""
        with self._locked():
            data = self._load(for_write=True)
            # Overlay snapshots hold diffs, native ones whole trees: never mix them.
            used = data.setdefault("driver", self.driver)
            if self.driver and used and used != self.driver:
                raise StoreError(
                    f"the snapshots under {self.dir} were made by the {used} snapshotter, "
                    f"not {self.driver}",
                    )
            if key in data["snapshots"]:
                raise StoreError(f"snapshot {key} already exists")
            if parent is not None:
                praw = data["snapshots"].get(parent)
                if praw is None or praw["kind"] != "committed":
                    raise NotFoundError(f"parent snapshot {parent} not found (or not committed)")
            sid = int(data["next"])
            # A directory nothing records (left by a crash of an older dockyard) is never
            # reused; ``sweep`` removes it.
            while (self.dir / str(sid)).exists():
                sid += 1
            data["next"] = sid + 1
            data["snapshots"][key] = {"id": sid, "kind": kind, "parent": parent}
            # The record first, then the directory: a crash in between leaves a record whose
            # directory is missing (``sweep`` and ``store check`` drop it), never a directory
            # that blocks every later create.
            self._save(data)
            (self.dir / str(sid)).mkdir(parents=True, exist_ok=True)
        return Record(sid, kind, parent)

    def commit(self, name: str, key: str) -> Record:
        """Rename active ``key`` to committed ``name``."""
        with self._locked():
            data = self._load(for_write=True)
            raw = data["snapshots"].get(key)
            if raw is None or raw["kind"] != "active":
                raise NotFoundError(f"active snapshot {key} not found")
            if name in data["snapshots"]:
                raise StoreError(f"snapshot {name} already exists")
            del data["snapshots"][key]
            raw["kind"] = "committed"
            data["snapshots"][name] = raw
            self._save(data)
        return self._record(raw)

    def remove(self, key: str) -> None:
        """Delete ``key`` and its directory; refuses a snapshot others are built on.

        Mark, then sweep: the record moves to the table's ``removing`` list (so nothing uses
        it and its id is never given again), the directory goes, then the id leaves the list.
        A crash in between leaves an id that :meth:`sweep` finishes."""
        with self._locked():
            data = self._load(for_write=True)
            raw = data["snapshots"].get(key)
            if raw is None:
                raise NotFoundError(f"snapshot {key} not found")
            children = [k for k, v in data["snapshots"].items() if v.get("parent") == key]
            if children:
                raise StoreError(f"snapshot {key} has children: {', '.join(sorted(children))}")
            del data["snapshots"][key]
            sid = int(raw["id"])
            data.setdefault("removing", []).append(sid)
            try:
                self._save(data)
            except OSError as err:
                if not is_no_space(err) or raw["kind"] == "committed":
                    raise
                # A step that filled the disk cannot even be marked: empty its directory
                # first (nothing else ever uses an uncommitted snapshot), then mark.
                for entry in os.scandir(self.dir / str(sid)):
                    remove_tree(entry.path, ignore_errors=True)
                self._save(data)
        self._finish_removal([sid])

    def _finish_removal(self, ids: list[int]) -> int:
        """Delete the directories of ``ids`` (listed as removing), then unlist them; returns
        the bytes freed."""
        freed = 0
        done: list[int] = []
        for sid in ids:
            freed += remove_tree(self.dir / str(sid), ignore_errors=True)
            if not (self.dir / str(sid)).exists():
                done.append(sid)
        if done:
            with self._locked():
                data = self._load(for_write=True)
                data["removing"] = [i for i in data.get("removing", []) if i not in done]
                if not data["removing"]:
                    del data["removing"]
                self._save(data)
        return freed

    def forget(self, key: str) -> list[str]:
        """Drop the record of ``key`` and of every snapshot built on it (their content is
        lost: a directory is missing, or a parent is); their directories go as in
        :meth:`remove`. Returns the keys forgotten."""
        with self._locked():
            data = self._load(for_write=True)
            snaps = data["snapshots"]
            gone = [key] if key in snaps else []
            for name in gone:  # grows while children are found
                gone += [k for k, v in snaps.items() if v.get("parent") == name and k not in gone]
            ids = [int(snaps[k]["id"]) for k in gone]
            for k in gone:
                del snaps[k]
            if gone:
                data["removing"] = sorted(set(data.get("removing", [])) | set(ids))
                self._save(data)
        if gone:
            self._finish_removal(ids)
        return gone

    def orphans(self) -> tuple[list[int], list[int], list[str]]:
        """What a crash can leave: (directories no record names, ids still listed as
        removing, keys whose directory is missing)."""
        with self._locked():
            data = self._load()
            recorded = {int(v["id"]) for v in data["snapshots"].values()}
            removing = [int(i) for i in data.get("removing", [])]
            unrecorded = sorted(
                int(e.name) for e in os.scandir(self.dir)
                if e.name.isdigit() and int(e.name) not in recorded and int(e.name) not in removing
            )
            missing = sorted(k for k, v in data["snapshots"].items()
                             if not (self.dir / str(v["id"])).is_dir())
        return unrecorded, removing, missing

    def sweep(self, *, drop_missing: bool = True) -> tuple[int, int]:
        """Finish what crashes left: remove directories no record names and those still
        listed as removing, and (``drop_missing``) forget uncommitted records whose directory
        is gone. Returns (directories removed, bytes freed). Call with no build running
        (under the store's exclusive lock): an unrecorded directory is then a leftover."""
        with self._locked():
            data = self._load(for_write=True)
            recorded = {int(v["id"]) for v in data["snapshots"].values()}
            removing = [int(i) for i in data.get("removing", [])]
            orphans = [int(e.name) for e in os.scandir(self.dir)
                       if e.name.isdigit() and int(e.name) not in recorded
                       and int(e.name) not in removing]
            changed = bool(orphans)
            if drop_missing:
                for k, v in list(data["snapshots"].items()):
                    gone = not (self.dir / str(v["id"])).is_dir()
                    if gone and v["kind"] != "committed" and not any(
                            c.get("parent") == k for c in data["snapshots"].values()):
                        del data["snapshots"][k]
                        changed = True
            if changed:
                data["removing"] = sorted(set(removing) | set(orphans))
                self._save(data)
        ids = sorted(set(removing) | set(orphans))
        return len(ids), self._finish_removal(ids) if ids else 0

    def chain_ids(self, name: str) -> list[int]:
        """The directory ids of committed ``name`` and its ancestors, newest first (what
        :meth:`chain` gives, without a record per ancestor: a diff of each of 100 stacked
        layers asks for 5,050)."""
        out: list[int] = []
        with self._locked():
            snaps = self._load()["snapshots"]
        current: str | None = name
        while current is not None:
            raw = snaps.get(current)
            if raw is None:
                raise NotFoundError(f"snapshot {current} not found")
            out.append(int(raw["id"]))
            current = raw.get("parent")
        return out

    def chain(self, name: str | None) -> list[Record]:
        """Committed ``name`` and its ancestors, newest first."""
        out: list[Record] = []
        with self._locked():
            snaps = self._load()["snapshots"]
        while name is not None:
            raw = snaps.get(name)
            if raw is None:
                raise NotFoundError(f"snapshot {name} not found")
            rec = self._record(raw)
            out.append(rec)
            name = rec.parent
        return out


class MetaBacked:
    """What both snapshotters share: snapshots recorded in a :class:`MetaTable`, each in its
    own numbered directory below ``<root>/snapshots``."""

    def __init__(self, root: Path, driver: str) -> None:
        self.root = root
        self._meta = MetaTable(root, driver)

    def _dir(self, rec: Record) -> Path:
        return self._meta.dir / str(rec.id)

    def fs_dir(self, key: str) -> Path:
        """The snapshot's own directory (overlay: its upper or lower dir; native: its rootfs)."""
        return self._dir(self._meta.get(key)) / "fs"

    def exists(self, name: str) -> bool:
        """Whether a snapshot (active, view or committed) is recorded under ``name``."""
        return self._meta.find(name) is not None

    def committed(self) -> list[str]:
        """Names of all committed snapshots."""
        return sorted(k for k, r in self._meta.all().items() if r.kind == "committed")

    def uncommitted(self) -> list[str]:
        """Keys of active snapshots and views (after a crash: leftovers of killed builds)."""
        return sorted(k for k, r in self._meta.all().items() if r.kind != "committed")

