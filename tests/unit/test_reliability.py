"""Reliability pieces that need no root: the limits, trees of any depth, decompression
errors and bombs, sparse unpacking, the snapshot table's crash-safe order, ENOSPC mapping."""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
import sqlite3
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from badarchives import Entry, gzip_bomb, sparse_tar, tar_bytes
from dockyard import limits
from dockyard._fs import as_no_space, is_no_space, no_space, remove_tree, tree_size, walk
from dockyard.errors import LayerError, NoSpaceError, StoreError, UsageError
from dockyard.layers.apply import apply_layer, check_tar
from dockyard.layers.compress import open_decompressed
from dockyard.snapshot._meta import MetaTable


def _deep_tree(base: Path, depth: int) -> None:
    base.mkdir(parents=True, exist_ok=True)
    fd = os.open(base, os.O_RDONLY)
    cur = fd
    for _ in range(depth):
        os.mkdir("a", dir_fd=cur)
        with open(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=cur), "w") as f:
            f.write("x")
        nxt = os.open("a", os.O_RDONLY, dir_fd=cur)
        if cur != fd:
            os.close(cur)
        cur = nxt
    os.close(cur)
    if cur != fd:
        os.close(fd)


# --- limits ---------------------------------------------------------------------------


def test_limits_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for _, env in limits.FLAGS.values():
        monkeypatch.delenv(env, raising=False)
    assert limits.current() == limits.Limits()
    monkeypatch.setenv("DOCKYARD_MAX_LAYER_SIZE", "2GiB")
    monkeypatch.setenv("DOCKYARD_MAX_ENTRIES", "1_000")
    cur = limits.current()
    assert cur.max_layer_size == 2 << 30 and cur.max_entries == 1000
    monkeypatch.setenv("DOCKYARD_MAX_PATH_DEPTH", "deep")
    with pytest.raises(UsageError, match="--max-path-depth"):
        limits.current()


def test_limits_override_wins() -> None:
    with limits.override(max_entries=3) as lim:
        assert limits.current() is lim and lim.max_entries == 3
    assert limits.current().max_entries != 3


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("64GiB", 64 << 30), ("500MB", 500_000_000),
                                             ("1024", 1024), (" 3 k ", 3000)])
def test_parse_limit_size(text: str, value: int) -> None:
    assert limits.parse_limit_size(text) == value


@pytest.mark.parametrize("text", ["", "1.5GB", "-1", "3 parsecs"])
def test_parse_limit_size_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        limits.parse_limit_size(text)


def test_cli_limit_flag_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dockyard.cli.main import main

    monkeypatch.setattr(os, "environ", os.environ.copy())  # main sets the variable
    assert main(["--root", str(tmp_path), "--max-entries", "lots", "images"]) == 2


# --- trees of any depth ----------------------------------------------------------------


def test_remove_tree_any_depth(tmp_path: Path) -> None:
    top = tmp_path / "deep"
    _deep_tree(top, 2100)
    (top / "link").symlink_to("/etc")
    assert tree_size(top) > 0
    freed = remove_tree(top)
    assert freed > 2100 and not top.exists()
    assert Path("/etc/passwd").exists()


def test_remove_tree_files_symlinks_missing(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10000)
    assert remove_tree(f) > 0 and not f.exists()
    assert remove_tree(tmp_path / "missing") == 0
    d = tmp_path / "d"
    d.mkdir()
    link = tmp_path / "l"
    link.symlink_to(d)
    remove_tree(link)
    assert d.is_dir() and not link.exists()


def test_remove_tree_unreadable_dir(tmp_path: Path) -> None:
    d = tmp_path / "d" / "locked"
    d.mkdir(parents=True)
    (d / "x").write_text("x")
    d.chmod(0)
    remove_tree(tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_walk_matches_os_walk(tmp_path: Path) -> None:
    for rel in ("a/b/c", "a/d", "e"):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "f").write_text("x")
    (tmp_path / "a" / "ln").symlink_to("b")
    for topdown in (True, False):
        ours = sorted((p, sorted(d), sorted(f)) for p, d, f in walk(tmp_path, topdown=topdown))
        theirs = sorted((p, sorted(d), sorted(f))
                        for p, d, f in os.walk(tmp_path, topdown=topdown))
        assert ours == theirs
    order = [p for p, _, _ in walk(tmp_path, topdown=False)]
    assert order.index(str(tmp_path / "a" / "b" / "c")) < order.index(str(tmp_path / "a"))


def test_walk_depth_limit(tmp_path: Path) -> None:
    _deep_tree(tmp_path / "t", 30)
    with pytest.raises(LayerError, match="levels deep"):
        list(walk(tmp_path / "t", max_depth=10))


# --- a full disk ----------------------------------------------------------------------


def test_no_space_mapping(tmp_path: Path) -> None:
    err = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "blobs" / "x"))
    assert is_no_space(err)
    mapped = as_no_space(err, str(tmp_path))
    assert mapped is not None and str(mapped) == (
        f"no space left on device while writing a blob ({tmp_path}/blobs/x)")
    full = sqlite3.OperationalError("database or disk is full")
    db = as_no_space(full, str(tmp_path))
    assert db is not None and "the store database" in str(db)
    assert as_no_space(OSError(errno.EIO, "I/O error"), str(tmp_path)) is None
    with pytest.raises(NoSpaceError, match=r"while writing a layer \(/x\)"), no_space("a layer", "/x"):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with pytest.raises(OSError, match="I/O"), no_space("a layer", "/x"):
        raise OSError(errno.EIO, "I/O")


# --- decompression --------------------------------------------------------------------


def test_corrupt_gzip_is_a_layer_error() -> None:
    raw = gzip.compress(os.urandom(100_000))
    bad = raw[:30] + bytes(b ^ 0x55 for b in raw[30:200]) + raw[200:]
    with pytest.raises(LayerError, match="corrupt gzip data"):
        open_decompressed(io.BytesIO(bad)).read()
    with pytest.raises(LayerError, match="corrupt gzip data: the stream ends too early"):
        open_decompressed(io.BytesIO(raw[: len(raw) // 2])).read()


def test_gzip_bomb_stops_at_the_ratio() -> None:
    bomb = gzip_bomb(40 << 20)
    with limits.override(ratio_floor=1 << 20), pytest.raises(LayerError, match="--max-ratio"):
        stream = open_decompressed(io.BytesIO(bomb))
        while stream.read(1 << 20):
            pass


def test_size_limit_uncompressed() -> None:
    data = tar_bytes([Entry("a", b"x" * 300_000)])
    with limits.override(max_layer_size=100_000), pytest.raises(LayerError,
                                                                match="--max-layer-size"):
        check_tar(open_decompressed(io.BytesIO(data)))


# --- unpacking ------------------------------------------------------------------------


def test_sparse_entry_stays_sparse(tmp_path: Path) -> None:
    data = sparse_tar(1 << 30, [(4096, b"head"), (600 << 20, b"tail")])
    stats = apply_layer(io.BytesIO(data), tmp_path / "root")
    f = tmp_path / "root" / "sparse"
    st = f.stat()
    assert st.st_size == 1 << 30 and st.st_blocks * 512 < 1 << 20
    with open(f, "rb") as fh:
        fh.seek(4096)
        assert fh.read(4) == b"head"
        fh.seek(600 << 20)
        assert fh.read(4) == b"tail"
        assert fh.read(10) == b"\0" * 10
    assert stats.entries == 1


def test_zero_runs_are_holes(tmp_path: Path) -> None:
    data = tar_bytes([Entry("z", b"\0" * (8 << 20) + b"end")])
    apply_layer(io.BytesIO(data), tmp_path / "root")
    st = (tmp_path / "root" / "z").stat()
    assert st.st_size == (8 << 20) + 3 and st.st_blocks * 512 < 2 << 20
    assert (tmp_path / "root" / "z").read_bytes()[-3:] == b"end"


@pytest.mark.parametrize("blocks", [[(50, b"x" * 10), (10, b"y")], [(95, b"x" * 10)]])
def test_bad_sparse_map(tmp_path: Path, blocks: list[tuple[int, bytes]]) -> None:
    with pytest.raises(LayerError, match="invalid sparse map"):
        apply_layer(io.BytesIO(sparse_tar(100, blocks)), tmp_path / "root")


def test_entry_and_depth_limits(tmp_path: Path) -> None:
    many = tar_bytes([Entry(f"f{i}") for i in range(11)])
    with limits.override(max_entries=10), pytest.raises(LayerError, match="more than 10 entries"):
        apply_layer(io.BytesIO(many), tmp_path / "a")
    deep = tar_bytes([Entry("/".join(["d"] * 20) + "/f", b"x")])
    with limits.override(max_path_depth=8), pytest.raises(LayerError, match="21 levels deep"):
        apply_layer(io.BytesIO(deep), tmp_path / "b")
    apply_layer(io.BytesIO(deep), tmp_path / "c")  # the default allows it


def test_devices_refused_when_asked(tmp_path: Path) -> None:
    dev = tar_bytes([Entry("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)])
    with pytest.raises(LayerError, match="device node"):
        apply_layer(io.BytesIO(dev), tmp_path / "r", devices=False)


def test_tar_writer_refuses_a_too_deep_tree(tmp_path: Path) -> None:
    from dockyard.layers.tarwriter import write_layer_from_dir

    _deep_tree(tmp_path / "t", 40)
    with limits.override(max_path_depth=30), pytest.raises(LayerError, match="levels deep"):
        write_layer_from_dir(tmp_path / "t", io.BytesIO())
    write_layer_from_dir(tmp_path / "t", io.BytesIO())


# --- the snapshot table ----------------------------------------------------------------


def test_create_skips_a_leftover_directory(tmp_path: Path) -> None:
    table = MetaTable(tmp_path, "overlay")
    (table.dir / "1").mkdir()  # a crash of an older dockyard between mkdir and save
    rec = table.create("k", "active", None)
    assert rec.id == 2 and (table.dir / "2").is_dir()
    assert table.orphans()[0] == [1]
    assert table.sweep() == (1, 0) or not (table.dir / "1").exists()
    assert not (table.dir / "1").exists() and (table.dir / "2").is_dir()


def test_record_without_directory_is_swept(tmp_path: Path) -> None:
    table = MetaTable(tmp_path, "overlay")
    rec = table.create("k", "active", None)
    os.rmdir(table.dir / str(rec.id))  # a crash between the save and the mkdir
    assert table.orphans()[2] == ["k"]
    table.sweep()
    assert table.find("k") is None


def test_remove_marks_then_sweeps(tmp_path: Path) -> None:
    table = MetaTable(tmp_path, "overlay")
    rec = table.create("k", "active", None)
    (table.dir / str(rec.id) / "fs").mkdir()
    # what a crash after the mark and before the directory went leaves
    with contextlib.closing(sqlite3.connect(table.dir / "meta.db")) as db, db:
        db.execute("DELETE FROM snapshots WHERE key = 'k'")
        db.execute("INSERT INTO removing(id) VALUES (?)", (rec.id,))
    assert table.find("k") is None
    assert table.orphans()[1] == [rec.id]
    assert table.create("k2", "active", None).id != rec.id  # the id is never given again
    removed, _ = table.sweep()
    assert removed == 1 and not (table.dir / str(rec.id)).exists()
    assert table.removing() == []


def test_remove_of_a_deep_snapshot(tmp_path: Path) -> None:
    table = MetaTable(tmp_path, "overlay")
    rec = table.create("k", "active", None)
    _deep_tree(table.dir / str(rec.id) / "fs", 1500)
    table.remove("k")
    assert not (table.dir / str(rec.id)).exists()
    assert table.orphans() == ([], [], [])


def test_remove_refuses_a_parent(tmp_path: Path) -> None:
    table = MetaTable(tmp_path, "overlay")
    table.create("a", "active", None)
    table.commit("base", "a")
    table.create("b", "active", "base")
    with pytest.raises(StoreError, match="children"):
        table.remove("base")
