"""The snapshot table seen by several MetaTables (other processes, say): a write by one is
always seen by the others, and readers never see a half-changed table."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.errors import NotFoundError
from dockyard.snapshot._meta import MetaTable


def test_reads_follow_writes_of_another_table(tmp_path: Path) -> None:
    a, b = MetaTable(tmp_path, "overlay"), MetaTable(tmp_path, "overlay")
    a.create("one", "active", None)
    assert b.find("one") is not None and b.find("one").kind == "active"  # type: ignore[union-attr]
    for i in range(50):  # many quick saves: each one is a new file, so each is seen
        b.commit(f"c{i}", "one")
        assert a.get(f"c{i}").kind == "committed"
        b.create("one", "active", f"c{i}")
        assert a.get("one").parent == f"c{i}"
        a.remove("one")
        assert b.find("one") is None
        b.create("one", "active", None)
        if i:
            b.remove(f"c{i - 1}")
            with pytest.raises(NotFoundError):
                a.get(f"c{i - 1}")


def test_a_failed_write_leaves_the_cached_table_alone(tmp_path: Path) -> None:
    t = MetaTable(tmp_path, "overlay")
    t.create("base", "active", None)
    t.commit("base-c", "base")
    with pytest.raises(NotFoundError):
        t.create("x", "active", "missing-parent")
    assert set(t.all()) == {"base-c"}
    assert t.get("base-c").kind == "committed"
