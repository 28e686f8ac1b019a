"""The snapshot table in SQLite (``snapshots/meta.db``): the one-time import of an older
dockyard's ``meta.json``, several processes at once, fork safety, what is durable when."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest

from dockyard.errors import NotFoundError, StoreError
from dockyard.snapshot._meta import MetaTable


def _old_table(root: Path, data: dict[str, object]) -> Path:
    d = root / "snapshots"
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps(data))
    return d


def test_an_older_json_table_is_imported_once(tmp_path: Path) -> None:
    d = _old_table(tmp_path, {
        "driver": "overlay", "next": 9, "removing": [5],
        "snapshots": {"base": {"id": 3, "kind": "committed", "parent": None},
                      "top": {"id": 4, "kind": "committed", "parent": "base"},
                      "work": {"id": 7, "kind": "active", "parent": "top"}}})
    for i in (3, 4, 5, 7):
        (d / str(i)).mkdir()
    table = MetaTable(tmp_path, "overlay")
    assert table.chain("work") == [table.get("work"), table.get("top"), table.get("base")]
    assert [r.id for r in table.chain("work")] == [7, 4, 3]
    assert table.get("work").kind == "active" and table.get("base").parent is None
    assert table.recorded_driver() == "overlay"
    assert table.removing() == [5]
    assert not (d / "meta.json").exists()
    assert table.create("new", "active", "top").id == 9  # ids go on from the old ``next``
    assert table.sweep()[0] == 1 and not (d / "5").exists()  # the old removal finishes
    again = MetaTable(tmp_path, "overlay")  # a second open imports nothing
    assert set(again.all()) == {"base", "top", "work", "new"}


def test_a_json_table_left_after_its_import_is_only_removed(tmp_path: Path) -> None:
    """A crash between the import's commit and the file's removal: the next open must not
    import the (by then stale) file again."""
    d = _old_table(tmp_path, {"next": 2, "snapshots": {
        "a": {"id": 1, "kind": "active", "parent": None}}})
    table = MetaTable(tmp_path, "overlay")
    table.commit("a-done", "a")
    table.close()
    (d / "meta.json").write_text(json.dumps({"next": 2, "snapshots": {
        "a": {"id": 1, "kind": "active", "parent": None}}}))
    table = MetaTable(tmp_path, "overlay")
    assert set(table.all()) == {"a-done"}
    assert not (d / "meta.json").exists()


@pytest.mark.parametrize("content", ["{not json", '{"snapshots": {"a": {"kind": "active"}}}',
                                     '{"snapshots": [1]}'])
def test_a_corrupt_json_table_is_a_clear_error_and_stays(tmp_path: Path, content: str) -> None:
    d = tmp_path / "snapshots"
    d.mkdir()
    (d / "meta.json").write_text(content)
    with pytest.raises(StoreError, match=r"corrupt snapshot table .*meta\.json"):
        MetaTable(tmp_path, "overlay").all()
    assert (d / "meta.json").read_text() == content  # nothing lost: it can be repaired
    with sqlite3.connect(d / "meta.db") as db:
        assert db.execute("SELECT count(*) FROM snapshots").fetchone() == (0,)


def _create_many(root: str, prefix: str, n: int) -> None:
    table = MetaTable(Path(root), "overlay")
    for i in range(n):
        table.create(f"{prefix}-{i}", "active", None)
        table.commit(f"{prefix}-{i}-c", f"{prefix}-{i}")


def test_processes_at_once_get_distinct_ids(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_create_many, args=(str(tmp_path), f"p{n}", 25))
             for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = MetaTable(tmp_path, "overlay").all()
    assert len(records) == 100
    ids = [r.id for r in records.values()]
    assert len(set(ids)) == 100
    assert all((tmp_path / "snapshots" / str(i)).is_dir() for i in ids)


def test_a_forked_child_uses_a_connection_of_its_own(tmp_path: Path) -> None:
    table = MetaTable(tmp_path, "overlay")
    table.create("parent-made", "active", None)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            table.create("child-made", "active", None)
            code = 0 if table.find("parent-made") is not None else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert table.find("child-made") is not None  # seen by the parent's connection too
    table.create("parent-again", "active", None)  # and the parent's still works


def test_chain_names_a_missing_ancestor(tmp_path: Path) -> None:
    table = MetaTable(tmp_path, "overlay")
    table.create("a", "active", None)
    table.commit("a-c", "a")
    table.create("b", "active", "a-c")
    table.commit("b-c", "b")
    with sqlite3.connect(tmp_path / "snapshots" / "meta.db") as db:
        db.execute("DELETE FROM snapshots WHERE key = 'a-c'")  # what no code path does
    with pytest.raises(NotFoundError, match="snapshot a-c not found"):
        table.chain_ids("b-c")
    with pytest.raises(NotFoundError, match="snapshot nope not found"):
        table.chain("nope")
    assert table.chain(None) == []


def test_commits_and_removals_are_durable_creates_need_not_be(tmp_path: Path) -> None:
    """A committed snapshot is named by the store's cache records: its row is on disk (the
    WAL fsynced) before commit returns. An active snapshot is named by nothing else, so its
    create skips the fsync (a lost row leaves an unrecorded directory, which sweep removes)."""
    table = MetaTable(tmp_path, "overlay")
    table.find("x")  # opens the connection
    seen: list[str] = []
    conn = table._db()
    conn.set_trace_callback(seen.append)

    def sync_of(op: str) -> str:
        pragmas = [s for s in seen if s.startswith("PRAGMA synchronous")]
        assert pragmas, op
        seen.clear()
        return pragmas[-1]

    table.create("k", "active", None)
    assert sync_of("create") == "PRAGMA synchronous=NORMAL"
    table.commit("k-c", "k")
    assert sync_of("commit") == "PRAGMA synchronous=FULL"
    table.create("v", "view", "k-c")
    seen.clear()
    table.remove("v")
    assert sync_of("remove") == "PRAGMA synchronous=FULL"
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_lost_create_leaves_a_directory_that_is_swept(tmp_path: Path) -> None:
    """What a power cut after a create (NORMAL: not yet fsynced) can leave: the directory
    without its row. The id is not given again; sweep removes the directory."""
    table = MetaTable(tmp_path, "overlay")
    rec = table.create("k", "active", None)
    (table.dir / str(rec.id) / "fs").mkdir()
    with sqlite3.connect(table.dir / "meta.db") as db:
        db.execute("DELETE FROM snapshots WHERE key = 'k'")
        db.execute("UPDATE props SET value = '1' WHERE name = 'next'")
    assert table.create("k2", "active", None).id != rec.id
    assert table.orphans()[0] == [rec.id]
    assert table.sweep()[0] == 1 and not (table.dir / str(rec.id)).exists()
