"""The cache backend seam (``dockyard.solver.cache``): the solver looks every step up, reuses
it, and keeps new results only through its :class:`CacheBackend`; a record whose layer the
backend cannot fetch is a miss, and the step then runs and gives the same image."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from test_build_support import BASE, build, flatten, fresh_store, needs_runtime, write_tree

from dockyard.solver import solver as solver_mod
from dockyard.solver.cache import LocalCache
from dockyard.store.db import CacheRecord

pytestmark = needs_runtime

DOCKERFILE = f"""\
FROM {BASE}
COPY a.txt /a.txt
RUN cat /a.txt > /b.txt
"""


class Recording(LocalCache):  # a CacheBackend (the solver's attribute is typed so)
    """The local cache, with every call noted; ``lose_layers`` makes fetch fail."""

    calls: ClassVar[list[tuple[str, str]]] = []
    lose_layers: ClassVar[bool] = False

    def lookup(self, key: str) -> CacheRecord | None:
        Recording.calls.append(("lookup", key))
        return super().lookup(key)

    def fetch(self, record: CacheRecord) -> bool:
        Recording.calls.append(("fetch", record.key))
        return False if Recording.lose_layers and record.diff_id else super().fetch(record)

    def mark_used(self, key: str) -> None:
        Recording.calls.append(("mark_used", key))
        super().mark_used(key)

    def save(self, record: CacheRecord) -> None:
        Recording.calls.append(("save", record.key))
        super().save(record)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> type[Recording]:
    monkeypatch.setattr(solver_mod, "LocalCache", Recording)
    Recording.calls = []
    Recording.lose_layers = False
    return Recording


def test_steps_go_through_the_backend(recording: type[Recording], tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "a\n"})
    first = build(ctx, root, tags=["img"])
    keys = [s.key for s in first.steps]
    assert [c for c in recording.calls if c[0] == "save"] == [("save", k) for k in keys]
    assert [c for c in recording.calls if c[0] == "lookup"] == [("lookup", k) for k in keys]
    recording.calls = []
    second = build(ctx, root, tags=["img"])
    assert second.result.cached_all
    assert recording.calls == [c for k in keys
                               for c in (("lookup", k), ("fetch", k), ("mark_used", k))]


def test_a_layer_the_backend_cannot_fetch_is_a_miss(recording: type[Recording],
                                                   tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "a\n"})
    first = build(ctx, root, tags=["img"])
    recording.lose_layers = True
    second = build(ctx, root, tags=["img"])
    assert not any(s.cached for s in second.steps)
    assert all("its cache record was pruned" in (s.reason or "") for s in second.steps)
    assert [s.key for s in second.steps] == [s.key for s in first.steps]
    assert (flatten(root, "img", tmp_path / "fs") / "b.txt").read_text() == "a\n"
