"""Issue 18, one walk of the context per build: the COPY copies the walk its selection
digest was made of, the digest is fed a batch at a time, the stat cache matches its rows as
it reads them, and the history packs a manifest an entry at a time. Each against the plain
form it replaces."""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.context import hashing
from dockyard.context.copy import copy_into
from dockyard.context.hashing import FileMeta, StatCache, digest_selection
from dockyard.store.history import PackedManifest

_NAMES = st.text(alphabet="ab.-_/é", min_size=1, max_size=6).filter(
    lambda n: all(p not in ("", ".", "..") for p in n.split("/")))


@st.composite
def _trees(draw: st.DrawFn) -> list[tuple[str, str, bytes, int]]:
    """(kind, path, content or link target, mode) entries of a small tree."""
    entries = []
    for name in draw(st.lists(_NAMES, min_size=1, max_size=12, unique=True)):
        kind = draw(st.sampled_from(["file", "file", "dir", "symlink", "hardlink"]))
        data = draw(st.binary(max_size=40))
        mode = draw(st.sampled_from([0o644, 0o600, 0o755, 0o4755]))
        entries.append((kind, name, data, mode))
    return entries


def _make(root: Path, entries: list[tuple[str, str, bytes, int]]) -> None:
    root.mkdir(parents=True)
    files: list[Path] = []
    for kind, name, data, mode in entries:
        path = root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                path.mkdir()
                os.chmod(path, mode & 0o777 | 0o700)
            elif kind == "symlink":
                path.symlink_to(data.decode("latin-1").replace("\0", "") or "x")
            elif kind == "hardlink" and files:
                os.link(files[len(data) % len(files)], path)
            else:
                path.write_bytes(data)
                os.chmod(path, mode)
                files.append(path)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue  # a name that collides with an earlier entry: left out


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_trees(), added=st.lists(_NAMES, max_size=3))
def test_the_copy_holds_exactly_the_keyed_selection(
    tmp_path_factory: pytest.TempPathFactory, tree: list[tuple[str, str, bytes, int]],
    added: list[str],
) -> None:
    """Copy a random tree with the digest as ``expect``, after files were added to it: the
    copy digests to the key (nothing added is copied, nothing keyed is missing)."""
    base = tmp_path_factory.mktemp("walk")
    ctx = base / "ctx"
    _make(ctx, tree)
    with StatCache(None) as cache:
        sel = digest_selection(ctx, ["."], [], cache, context=True)
        for name in added:
            try:
                (ctx / name).parent.mkdir(parents=True, exist_ok=True)
                with open(ctx / name, "xb") as new:  # a new name only
                    new.write(b"added later")
            except (IsADirectoryError, NotADirectoryError, FileExistsError):
                pass
        dest = base / "rootfs"
        dest.mkdir()
        copy_into(ctx, ["."], "/out/", dest, workdir="/", chown=None, chmod=None,
                  parents=False, excludes=(), is_add=False, ignore=None, expect=sel)
        copied = digest_selection(dest / "out", ["."], [], cache, context=True)
    assert copied.files == sel.files
    assert copied.digest == sel.digest


def _joined_digest(files: dict[str, FileMeta]) -> str:
    """The digest as it was made before: every record joined, then hashed once."""
    text = hashing.DIGEST_VERSION + "\n" + "".join(
        hashing._record(rel, files[rel]) for rel in sorted(files))
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


_METAS = st.builds(
    FileMeta,
    type=st.sampled_from(["file", "dir", "symlink", "fifo"]),
    mode=st.integers(0, 0o7777), uid=st.integers(0, 70000), gid=st.integers(0, 70000),
    size=st.integers(0, 1 << 40), sha256=st.sampled_from(["", "sha256:" + "ab" * 32]),
    linkname=st.text(max_size=5),
    xattrs=st.lists(st.tuples(st.text(min_size=1, max_size=4), st.text(max_size=4)),
                    max_size=2).map(tuple),
    hardlink=st.sampled_from(["", "x"]),
)


@settings(max_examples=60, deadline=None)
@given(files=st.dictionaries(st.text(min_size=1, max_size=8), _METAS, max_size=30),
       batch=st.integers(1, 5))
def test_the_batched_digest_is_the_joined_one(
    files: dict[str, FileMeta], batch: int,
) -> None:
    saved = hashing._DIGEST_BATCH
    hashing._DIGEST_BATCH = batch
    try:
        assert hashing._digest_of(files) == _joined_digest(files)
    finally:
        hashing._DIGEST_BATCH = saved


@settings(max_examples=60, deadline=None)
@given(files=st.dictionaries(st.text(max_size=8), st.lists(st.integers() | st.text(max_size=3),
                                                             max_size=4), max_size=30))
def test_the_streamed_pack_is_the_json_text(files: dict[str, list[object]]) -> None:
    packed = PackedManifest.pack(files)
    import base64

    text = zlib.decompress(base64.b64decode(packed.packed)).decode()
    assert text == json.dumps(files, sort_keys=True, separators=(",", ":"))
    assert dict(PackedManifest(packed.packed).iter_items()) == files


def test_stat_cache_rows_match_with_and_without_prefixes(tmp_path: Path) -> None:
    """The range queries' merge (paths under the prefixes, nested ones and duplicates among
    them) finds every row the one-by-one lookup finds."""
    root = tmp_path / "r"
    (root / "a" / "b").mkdir(parents=True)
    names = ["a/x", "a/b/y", "a/b/z", "a.c", "a/b.d", "a0", "aé"]
    for name in names:
        (root / name).write_text(name)
    paths = [str(root / n) for n in names] + [str(root / "a/x")]
    stats = [os.lstat(p) for p in paths]
    db = tmp_path / "sc.db"
    with StatCache(db, racy_window_ns=0) as cache:
        first = cache.lookup_timed(paths, stats)
        assert cache.reads == len(paths)
    for prefixes in ([], [str(root) + "/"], [str(root / "a") + "/", str(root / "a/b") + "/"]):
        with StatCache(db, racy_window_ns=0) as cache:
            found = cache.lookup_timed(paths, stats, prefixes)
            assert [d for d, _, _ in found] == [d for d, _, _ in first]
            assert cache.reads == 0, prefixes
