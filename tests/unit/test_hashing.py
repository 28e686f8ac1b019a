"""Selection digests and the persistent stat cache."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.context.dockerignore import PatternMatcher
from dockyard.context.hashing import (
    FileMeta,
    StatCache,
    digest_selection,
    explain_diff,
    explain_diff_items,
    hash_file,
)
from dockyard.errors import ContextError


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.c").write_text("int main(){}\n")
    (root / "src" / "util.c").write_text("void u(){}\n")
    (root / "README").write_text("readme\n")
    return root


def _settle() -> None:
    # Past the racy window: entries hashed now are trusted on the next lookup.
    time.sleep(0.03)


def test_noop_rebuild_never_rereads(ctx: Path, tmp_path: Path) -> None:
    db = tmp_path / "statcache.db"
    reads: list[Path] = []
    _settle()  # files written in the same clock tick as the hash are "racy" (rehashed once)
    with StatCache(db, on_read=reads.append) as cache:
        first = digest_selection(ctx, ["src"], [], cache)
    assert sorted(p.name for p in reads) == ["main.c", "util.c"]
    _settle()
    reads.clear()
    with StatCache(db, on_read=reads.append) as cache:  # a new process, same store
        second = digest_selection(ctx, ["src"], [], cache)
    assert reads == []
    assert second == first


def test_content_change_with_mtime_put_back_misses(ctx: Path, tmp_path: Path) -> None:
    db = tmp_path / "statcache.db"
    target = ctx / "src" / "main.c"
    _settle()
    with StatCache(db) as cache:
        before = digest_selection(ctx, ["src"], [], cache)
    _settle()
    st = os.stat(target)
    target.write_text("int main(){return 1;}\n"[: len("int main(){}\n")])  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r
    assert os.stat(target).st_mtime_ns == st.st_mtime_ns
    reads: list[Path] = []
    with StatCache(db, on_read=reads.append) as cache:
        after = digest_selection(ctx, ["src"], [], cache)
    assert [p.name for p in reads] == ["main.c"]
    assert after.digest != before.digest
    assert explain_diff(before.files, after.files) == ["src/main.c (content)"]


def test_touch_only_keeps_the_digest(ctx: Path) -> None:
    with StatCache(None) as cache:
        before = digest_selection(ctx, ["."], [], cache)
        os.utime(ctx / "README", (1, 1))
        os.utime(ctx / "src", (2, 2))
        after = digest_selection(ctx, ["."], [], cache)
    assert after.digest == before.digest


def test_racy_entries_are_rehashed_once(ctx: Path) -> None:
    reads: list[Path] = []
    with StatCache(None, racy_window_ns=10**12, on_read=reads.append) as cache:
        digest_selection(ctx, ["README"], [], cache)
        digest_selection(ctx, ["README"], [], cache)
    assert len(reads) == 2  # within the window, a cached entry is not trusted


def test_digest_covers_mode_owner_links_and_names(ctx: Path) -> None:
    with StatCache(None) as cache:
        base = digest_selection(ctx, ["."], [], cache)
        os.chmod(ctx / "README", 0o600)
        chmodded = digest_selection(ctx, ["."], [], cache)
        assert chmodded.digest != base.digest
        assert explain_diff(base.files, chmodded.files) == ["README (mode 644 -> 600)"]
        (ctx / "link").symlink_to("README")
        linked = digest_selection(ctx, ["."], [], cache)
        (ctx / "link").unlink()
        (ctx / "link").symlink_to("src")
        relinked = digest_selection(ctx, ["."], [], cache)
        assert explain_diff(linked.files, relinked.files) == ["link (link target)"]
        (ctx / "src" / "util.c").rename(ctx / "src" / "util2.c")
        renamed = digest_selection(ctx, ["."], [], cache)
        assert explain_diff(relinked.files, renamed.files) == [
            "src/util.c (removed)",
            "src/util2.c (added)",
        ]


def test_owner_zeroed_for_context_but_kept_for_stages(ctx: Path) -> None:
    uid = os.stat(ctx / "README").st_uid
    with StatCache(None) as cache:
        local = digest_selection(ctx, ["README"], [], cache)
        stage = digest_selection(ctx, ["README"], [], cache, zero_owner=False)
    assert local.files["README"].uid == 0
    assert stage.files["README"].uid == uid


def test_excludes_ignore_and_wildcards(ctx: Path) -> None:
    with StatCache(None) as cache:
        full = digest_selection(ctx, ["src"], [], cache)
        excl = digest_selection(ctx, ["src"], ["util.c"], cache)
        ign = digest_selection(ctx, ["src"], [], cache, ignore=PatternMatcher(["src/util.c"]))
        wild = digest_selection(ctx, ["src/*.c"], [], cache)
        empty = digest_selection(ctx, ["nothing*"], [], cache)
        with pytest.raises(ContextError) as info:
            digest_selection(ctx, ["src/util.c"], [], cache, ignore=PatternMatcher(["**/util.c"]))
    assert "src/util.c" in full.files
    assert "src/util.c" not in excl.files and "src/main.c" in excl.files
    assert excl.digest == ign.digest
    assert set(wild.files) == {"src/main.c", "src/util.c"}
    assert empty.files == {}
    assert info.value.hint is not None and "dockerignore" in info.value.hint


def test_content_sha_is_the_file_sha(ctx: Path) -> None:
    with StatCache(None) as cache:
        sel = digest_selection(ctx, ["README"], [], cache)
    assert sel.files["README"].sha256 == hash_file(ctx / "README")


def test_many_files_noop_reads_nothing(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for d in range(20):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(100):
            (root / f"d{d}" / f"f{f}").write_text(f"{d}-{f}")
    _settle()
    db = tmp_path / "s.db"
    with StatCache(db) as cache:
        first = digest_selection(root, ["."], [], cache)
        assert cache.reads == 2000
    _settle()
    with StatCache(db) as cache:
        again = digest_selection(root, ["."], [], cache)
        assert cache.reads == 0  # no file is read again (speed: bench/, not here)
    assert again.digest == first.digest


def test_filemeta_json_round_trip() -> None:
    meta = FileMeta("file", 0o4755, 1, 2, 3, "sha256:ab", "", (("user.x", "00ff"),), (0, 0))
    assert FileMeta.from_json(meta.to_json()) == meta


def test_large_file_streams(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as f:
        for _ in range(12):
            f.write(os.urandom(1 << 20))
    import hashlib

    assert hash_file(big) == "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()


def test_fast_file_record_matches_the_general_encoding(ctx: Path) -> None:
    from dockyard.context.hashing import _record

    (ctx / "src" / "main.c").chmod(0o4755)
    from dockyard.context import hashing

    with StatCache(None, racy_window_ns=0) as cache:
        sel = digest_selection(ctx, ["src"], [], cache, zero_owner=False)
        # the regular-file shortcut and _record must agree, or one tree could have 2 digests
        files, _ = hashing._manifest(
            hashing.select_sources(Path(os.path.abspath(ctx)), ["src"]), cache, False, (), 0,
        )
    assert files == sel.files
    for rel, meta in files.items():
        # the regular-file shortcut of _record and its general form must agree
        general = replace(meta, hardlink="x")
        assert _record(rel, meta) == _record(rel, general)[: -len("x\0")] + "\0"


def test_digest_version_is_part_of_the_digest(ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dockyard.context import hashing

    with StatCache(None, racy_window_ns=0) as cache:
        before = digest_selection(ctx, ["."], [], cache).digest
        monkeypatch.setattr(hashing, "DIGEST_VERSION", "dockyard.selection.test")
        assert digest_selection(ctx, ["."], [], cache).digest != before


def test_xattrs_are_cached_and_a_change_is_seen(ctx: Path, tmp_path: Path) -> None:
    target = ctx / "src" / "main.c"
    try:
        os.setxattr(target, "user.dockyard", b"\x00\x01")
    except OSError as err:
        pytest.skip(f"user xattrs not supported here: {err}")
    db = tmp_path / "stat.db"
    _settle()
    with StatCache(db) as cache:
        first = digest_selection(ctx, ["src"], [], cache)
    assert first.files["src/main.c"].xattrs == (("user.dockyard", "0001"),)
    reads: list[Path] = []
    with StatCache(db, on_read=reads.append) as cache:
        again = digest_selection(ctx, ["src"], [], cache)
    assert reads == []
    assert again == first
    os.setxattr(target, "user.dockyard", b"\x00\x02")  # changes the ctime, never the mtime
    with StatCache(db, on_read=reads.append) as cache:
        changed = digest_selection(ctx, ["src"], [], cache)
    assert [p.name for p in reads] == ["main.c"]
    assert changed.files["src/main.c"].xattrs == (("user.dockyard", "0002"),)
    assert changed.digest != first.digest
    assert explain_diff(first.files, changed.files) == ["src/main.c (xattrs)"]


def test_only_the_xattrs_a_layer_keeps_are_in_the_digest(ctx: Path, tmp_path: Path) -> None:
    """The key holds what the output holds (dockyard._xattrs.keep_xattr): ``user.overlay.*``
    (overlayfs's bookkeeping, never in a layer) is not content; ``user.*`` is."""
    from dockyard._xattrs import keep_xattr

    target = ctx / "src" / "main.c"
    _settle()
    with StatCache(None, racy_window_ns=0) as cache:
        plain = digest_selection(ctx, ["src"], [], cache)
    try:
        os.setxattr(target, "user.overlay.opaque", b"y")
    except OSError as err:
        pytest.skip(f"user xattrs not supported here: {err}")
    with StatCache(None, racy_window_ns=0) as cache:
        dropped = digest_selection(ctx, ["src"], [], cache)
    assert dropped.digest == plain.digest and dropped.files["src/main.c"].xattrs == ()
    os.setxattr(target, "user.kept", b"1")
    with StatCache(None, racy_window_ns=0) as cache:
        kept = digest_selection(ctx, ["src"], [], cache)
    assert kept.files["src/main.c"].xattrs == (("user.kept", "31"),)
    assert [n for n in ("user.a", "trusted.b", "security.capability", "security.selinux",
                        "security.ima", "system.posix_acl_access", "trusted.overlay.opaque",
                        "user.overlay.redirect") if keep_xattr(n)] == \
        ["user.a", "trusted.b", "security.capability"]


def test_files_and_dirs_in_one_selection_need_no_reread(ctx: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Directory sources are looked up by range, single files one by one: both must hit.
    db = tmp_path / "stat.db"
    monkeypatch.chdir(ctx.parent)
    rel_ctx = Path(ctx.name)  # a relative root keys the cache by the same absolute paths
    _settle()
    with StatCache(db) as cache:
        first = digest_selection(rel_ctx, ["README", "src/"], [], cache)
    reads: list[Path] = []
    with StatCache(db, on_read=reads.append) as cache:
        again = digest_selection(ctx, ["src/", "README"], [], cache)
        assert reads == []
        assert again.files == first.files
        (ctx / "src" / "new.c").write_text("n\n")
        more = digest_selection(ctx, ["src/", "README"], [], cache)
    assert [p.name for p in reads] == ["new.c"]
    assert explain_diff(first.files, more.files) == ["src/new.c (added)"]


def test_the_v1_table_is_dropped_and_v2_entries_kept(ctx: Path, tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "stat.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE statcache (path TEXT PRIMARY KEY, digest TEXT)")
    conn.close()
    _settle()
    with StatCache(db) as cache:
        first = digest_selection(ctx, ["src"], [], cache)
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "statcache" not in tables
    reads: list[Path] = []
    with StatCache(db, on_read=reads.append) as cache:
        assert digest_selection(ctx, ["src"], [], cache) == first
    assert reads == []


def _partition_tree(root: Path, groups: list[int]) -> Path:
    """Files f0..fN of the same bytes and mode; files with the same group number are hard
    links of one another."""
    root.mkdir(parents=True)
    first: dict[int, Path] = {}
    for i, group in enumerate(groups):
        path = root / f"f{i}"
        if group in first:
            os.link(first[group], path)
        else:
            path.write_text("same\n")
            path.chmod(0o644)
            first[group] = path
    return root


def _partition(groups: list[int]) -> frozenset[frozenset[int]]:
    return frozenset(frozenset(i for i, g in enumerate(groups) if g == group)
                     for group in set(groups))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=5).flatmap(
    lambda a: st.tuples(st.just(a), st.permutations(a) | st.lists(
        st.integers(0, 3), min_size=len(a), max_size=len(a)))))
def test_the_digest_holds_the_hardlink_grouping(pair: tuple[list[int], list[int]]) -> None:
    """Same bytes, same modes: two trees have one digest exactly when their files are hard
    links of one another in the same way (FINDINGS soundness-2: a COPY keeps the links)."""
    import tempfile

    left, right = pair
    with tempfile.TemporaryDirectory() as tmp, StatCache(None, racy_window_ns=0) as cache:
        a = digest_selection(_partition_tree(Path(tmp) / "a", left), ["."], [], cache,
                             context=True)
        b = digest_selection(_partition_tree(Path(tmp) / "b", list(right)), ["."], [], cache,
                             context=True)
    assert (a.digest == b.digest) == (_partition(left) == _partition(list(right)))
    if a.digest != b.digest:
        assert explain_diff(a.files, b.files)


def test_hardlinks_outside_the_selection_do_not_count(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "in").mkdir(parents=True)
    (ctx / "in" / "a").write_text("x\n")
    (ctx / "in" / "b").write_text("x\n")
    with StatCache(None, racy_window_ns=0) as cache:
        alone = digest_selection(ctx, ["in"], [], cache)
        os.link(ctx / "in" / "a", ctx / "outside")  # a link the copy cannot keep
        assert digest_selection(ctx, ["in"], [], cache).digest == alone.digest
        os.unlink(ctx / "in" / "b")
        os.link(ctx / "in" / "a", ctx / "in" / "b")
        joined = digest_selection(ctx, ["in"], [], cache)
    assert joined.digest != alone.digest
    assert joined.files["in/a"].hardlink == joined.files["in/b"].hardlink == "in/a"
    assert explain_diff(alone.files, joined.files) == [
        "in/a (now hard-linked)", "in/b (now a hard link of in/a)"]


def test_hardlink_field_round_trips_and_old_manifests_load() -> None:
    meta = FileMeta("file", 0o644, 0, 0, 3, "sha256:ab", hardlink="app/a")
    assert FileMeta.from_json(meta.to_json()) == meta
    assert FileMeta.from_json(meta.to_json()[:9]) == FileMeta("file", 0o644, 0, 0, 3,
                                                              "sha256:ab")


def test_parents_digest_the_directories_copy_parents_recreates(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "a" / "b" / "c").mkdir(parents=True)
    (ctx / "a" / "b" / "c" / "f").write_text("F")
    for d in ("a", "a/b", "a/b/c"):
        os.chmod(ctx / d, 0o755)
    with StatCache(None, racy_window_ns=0) as cache:
        def digests() -> tuple[str, str, str]:
            return (digest_selection(ctx, ["a/b/c/f"], [], cache, context=True).digest,
                    digest_selection(ctx, ["a/b/c/f"], [], cache, context=True,
                                     parents=True).digest,
                    digest_selection(ctx, ["a/./b/c/f"], [], cache, context=True,
                                     parents=True).digest)
        plain, full, pivoted = digests()
        sel = digest_selection(ctx, ["a/./b/c/f"], [], cache, context=True, parents=True)
        assert sorted(sel.parents) == ["a/b", "a/b/c"]  # below the pivot only
        os.chmod(ctx / "a", 0o700)  # above the pivot: not recreated under /./
        moved = digests()
        assert moved[0] == plain and moved[1] != full and moved[2] == pivoted
        os.chmod(ctx / "a" / "b", 0o700)
        after = digests()
    assert after[0] == plain and after[2] != pivoted
    assert explain_diff(sel.parents, digest_selection(
        ctx, ["a/./b/c/f"], [], StatCache(None), context=True, parents=True).parents) == [
        "a/b (mode 755 -> 700)"]


_METAS = st.builds(
    lambda kind, mode, uid, size, sha, link, hardlink: FileMeta(
        kind, mode, uid, uid, size, sha, link, (), (0, 0), hardlink),
    st.sampled_from(["file", "dir", "symlink"]), st.sampled_from([0o644, 0o755, 0o600]),
    st.integers(0, 2), st.integers(0, 3), st.sampled_from(["", "a" * 64, "b" * 64]),
    st.sampled_from(["", "t"]), st.sampled_from(["", "x"]))


@settings(max_examples=80, deadline=None)
@given(old=st.dictionaries(st.sampled_from([f"p{i}" for i in range(12)]), _METAS, max_size=12),
       new=st.dictionaries(st.sampled_from([f"p{i}" for i in range(12)]), _METAS, max_size=12),
       keep=st.sets(st.sampled_from([f"p{i}" for i in range(12)])))
def test_explaining_from_stored_items_says_what_explain_diff_says(
    old: dict[str, object], new: dict[str, object], keep: set[str],
) -> None:
    """The miss explanation compares the stored manifest entry by entry (its JSON pairs)
    instead of decoding it whole: the lines must be the same."""
    from dockyard.store.history import PackedManifest

    olds: dict[str, FileMeta] = dict(old)  # type: ignore[arg-type]
    news: dict[str, FileMeta] = {k: v for k, v in olds.items() if k in keep}
    news.update(new)  # type: ignore[arg-type]
    packed = PackedManifest(PackedManifest.pack({k: m.to_json() for k, m in olds.items()}).packed)
    assert explain_diff_items(packed.iter_items(), news) == explain_diff(olds, news)
