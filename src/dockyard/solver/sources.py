"""Content digests of the files a step reads: a selection of a build context, or of the
filesystem a list of layers makes. Shared by the ops (COPY's sources, RUN's bind mounts).

A selection over layers never changes (layers are content-addressed), so its digest is kept
as a cache record of kind ``selection`` and a cached ``COPY --from`` mounts nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dockyard.context.context import BuildContext
from dockyard.solver import keys
from dockyard.store.db import Store


class SourceDigests:
    """Selection digests for one solve, with a memo shared by its stages (thread-safe)."""

    def __init__(
        self,
        store: Store,
        stat_cache: Callable[[], Any],
        view_of: Callable[[list[str]], contextlib.AbstractContextManager[Path]],
        cache: Any = None,
        on_record: Callable[[Any], None] | None = None,
    ) -> None:
        self.store = store
        # where selection records are looked up and kept (the solve's cache backend: an
        # imported cache may know the digest, so a cached COPY --from downloads nothing)
        self._cache = cache
        self._on_record = on_record or (lambda record: None)
        self._stat_cache = stat_cache  # opened on first use: a cached build may need none
        self._view_of = view_of
        self._lock = threading.Lock()
        self._memo: dict[str, Any] = {}

    def context(self, ctx: BuildContext, sources: list[str], excludes: tuple[str, ...],
                *, parents: bool = False) -> Any:
        """The :class:`~dockyard.context.hashing.SelectionDigest` of ``sources`` in a build
        context (after its ``.dockerignore`` and ``excludes``; owners count as 0:0, the
        context directory's own metadata not at all); ``parents``: ``COPY --parents``."""
        from dockyard.context.hashing import digest_selection

        return digest_selection(
            ctx.root, sources, excludes, self._stat_cache(), ignore=ctx.ignore, zero_owner=True,
            context=True, parents=parents,
        )

    def layers(self, diff_ids: list[str], sources: list[str], excludes: tuple[str, ...],
               *, parents: bool = False) -> Any:
        """The selection digest of ``sources`` in the filesystem made of ``diff_ids``
        (``parents``: ``COPY --parents``).

        Layers are content-addressed, so the answer never changes: it is kept as a cache
        record and a cached build's ``COPY --from`` mounts nothing."""
        from dockyard.context.hashing import (
            DIGEST_VERSION,
            FileMeta,
            SelectionDigest,
            digest_selection,
        )
        from dockyard.store.db import CacheRecord, PackedManifest

        memo_doc: dict[str, Any] = {
            "v": keys.KEY_VERSION, "kind": "selection", "digest": DIGEST_VERSION,
            "layers": diff_ids, "sources": list(sources), "excludes": list(excludes),
        }
        if parents:
            memo_doc["parents"] = True
        memo_key = keys.digest_of(memo_doc)
        with self._lock:
            cached = self._memo.get(memo_key)
        if cached is not None:
            return cached
        record = (self._cache.lookup(memo_key) if self._cache is not None
                  else self.store.get_cache_record(memo_key))
        packed = record.result.get("files") if record is not None else None
        if record is not None and isinstance(packed, str):
            dirs = record.result.get("parents") or {}
            cached = SelectionDigest(
                str(record.result.get("selection")),
                LazyFileMetas(PackedManifest(packed)),
                parents={str(k): FileMeta.from_json(v) for k, v in dict(dirs).items()},
            )
            if self._cache is not None:
                self._cache.mark_used(memo_key)
            self._on_record(record)
        else:
            from dockyard.context.hashing import iter_manifest_json

            with self._view_of(diff_ids) as root:
                cached = digest_selection(
                    root, list(sources), excludes, self._stat_cache(),
                    follow_root_symlinks=True, ignore=None, zero_owner=False,
                    parents=parents,
                )
            now = time.time()
            result: dict[str, Any] = {
                "instruction": "selection", "selection": cached.digest,
                "files": PackedManifest.pack(dict(iter_manifest_json(cached.files))).packed,
            }
            if cached.parents:
                result["parents"] = dict(iter_manifest_json(cached.parents))
            record = CacheRecord(
                key=memo_key, diff_id=None, chain_id=None,
                result=result,
                description=f"files of {' '.join(sources)} in a stage or image",
                created=now, last_used=now,
            )
            if self._cache is not None:
                self._cache.save(record)
            else:
                self.store.put_cache_record(record)
            self._on_record(record)
        with self._lock:
            self._memo[memo_key] = cached
        return cached


class LazyFileMetas(Mapping[str, Any]):
    """A stored selection manifest (path -> FileMeta), decoded only if a miss is explained."""

    def __init__(self, packed: Mapping[str, Any]) -> None:
        self._packed = packed
        self._data: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            from dockyard.context.hashing import FileMeta

            self._data = {k: FileMeta.from_json(v) for k, v in self._packed.items()}
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())
