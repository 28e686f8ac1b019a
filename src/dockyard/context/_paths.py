"""Root-scoped path resolution and COPY source selection, shared by hashing and copy.

``root_path`` is containerd's ``fs.RootPath``: symlinks are resolved as if ``root`` were
``/``, and ``..`` never climbs above it, so nothing resolved here can leave the root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard.context.dockerignore import (
    MatchInfo,
    PatternMatcher,
    go_clean,
    go_match,
    has_wildcards,
)
from dockyard.errors import ContextError, LayerError
from dockyard.layers.rootpath import MAX_SYMLINKS, resolve_in_root

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def root_path(root: Path, rel: str) -> Path:
    """Resolve ``rel`` below ``root`` following symlinks, never leaving ``root``.

    Components that do not exist are appended as they are (the result may not exist).
    """
    try:
        return resolve_in_root(root, go_clean("/" + rel))
    except LayerError as err:
        raise ContextError(str(err)) from None


def root_path_nofollow(root: Path, rel: str) -> Path:
    """Like :func:`root_path` but the last component is not followed."""
    clean = go_clean("/" + rel)
    if clean == "/":
        return root
    parent, _, base = clean.rpartition("/")
    return root_path(root, parent) / base


def visible_path(
    root: Path, rel: str, ignore: PatternMatcher | None, *, follow: bool = True
) -> Path | None:
    """:func:`root_path` (or, without ``follow``, :func:`root_path_nofollow`) in the context
    as the builder receives it: what ``ignore`` excludes is not there, so a path that
    leads through an excluded entry, itself or as a step of a symlink's resolution (a link
    inside an excluded directory), resolves to nothing (None). BuildKit never receives
    excluded files, so such a link dangles there."""
    if not ignore:
        return root_path(root, rel) if follow else root_path_nofollow(root, rel)
    parts = [p for p in go_clean("/" + rel).split("/") if p]
    parts.reverse()  # a stack: the next component is at the end
    resolved: list[str] = []
    hops = 0
    while parts:
        name = parts.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/".join([*resolved, name])
        try:
            st = os.lstat(root / candidate)
        except OSError:
            resolved.append(name)
            continue
        if _invisible(ignore, candidate, stat.S_ISDIR(st.st_mode)):
            return None
        if stat.S_ISLNK(st.st_mode) and (parts or follow):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise ContextError(f"too many levels of symbolic links resolving {rel!r}")
            target = os.readlink(root / candidate)
            if target.startswith("/"):
                resolved = []
            parts.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        resolved.append(name)
    return root.joinpath(*resolved)


def rel_to(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` as a slash path ("." for the root itself)."""
    rel = os.path.relpath(path, root)
    return "." if rel == "." else rel.replace(os.sep, "/")


def split_wildcards(src: str) -> tuple[str, str]:
    """fsutil's splitWildcards: the leading components without wildcards ("." if none), and
    the rest from the first component with a wildcard ("" if none)."""
    comps = [c for c in go_clean("/" + src).split("/") if c]
    for i, comp in enumerate(comps):
        if has_wildcards(comp):
            return "/".join(comps[:i]) or ".", "/".join(comps[i:])
    return "/".join(comps) or ".", ""


def split_pivot(src: str) -> tuple[str, str]:
    """``--parents``: the part of a source before ``/./`` (the pivot, "." if none) and the
    part after."""
    if "/./" in src:
        pivot, _, rest = src.partition("/./")
        return go_clean(pivot).lstrip("/") or ".", rest
    return ".", src


def parent_dirs(root: Path, pivot: str, match: str) -> list[tuple[str, Path]]:
    """``COPY --parents``: the directories between ``pivot`` and ``match`` (both relative to
    ``root``), which the copy recreates with their metadata: per directory, its path relative
    to ``root`` as the source names it, and where it is (resolved within ``root``: a symlink
    among them is followed, never out of the root)."""
    rel = match if pivot == "." else os.path.relpath(match, pivot)
    if rel == ".." or rel.startswith("../"):
        raise ContextError(f"--parents source {match!r} is not below {pivot!r}")
    parts = [p for p in rel.split("/") if p and p != "."]
    out: list[tuple[str, Path]] = []
    current = "" if pivot == "." else pivot
    for comp in parts[:-1]:
        current = f"{current}/{comp}" if current else comp
        out.append((current, root_path(root, current)))
    return out


def _invisible(ignore: PatternMatcher, rel: str, is_dir: bool) -> bool:
    """Excluded by .dockerignore, and not a directory an exception reaches into."""
    return ignore.matches(rel) and not (is_dir and ignore.must_descend(rel))


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _entry_bytes(entry: os.DirEntry[str]) -> bytes:
    return os.fsencode(entry.name)


def _sorted_scandir(path: Path | str | int) -> list[os.DirEntry[str]]:
    """The entries of a directory in byte order of their names (Go's walk order)."""
    with os.scandir(path) as it:
        entries = list(it)
    # Code point order is byte order for valid UTF-8; only undecodable names (surrogate
    # escapes) need the slower byte key.
    if "".join([e.name for e in entries]).isascii():
        entries.sort(key=_entry_name)
    else:
        entries.sort(key=_entry_bytes)
    return entries


def resolve_wildcards(
    root: Path, src: str, *, follow: bool, ignore: PatternMatcher | None = None
) -> list[str]:
    """The root-relative paths a source word selects (fsutil's ResolveWildcards).

    A word without wildcards is returned as it is (existence is checked by the caller).
    Matches come in walk order (sorted); a matched directory is not descended into. Paths
    ``ignore`` excludes are invisible, as they are never sent with the context.
    """
    head, tail = split_wildcards(src)
    if not tail:
        return [head]
    base = visible_path(root, head, ignore, follow=follow)
    if base is None or not base.is_dir():
        return []
    head_rel = rel_to(root, base)
    out: list[str] = []

    def visit(directory: Path, rel_in_base: str) -> None:
        for entry in _sorted_scandir(directory):
            rel = f"{rel_in_base}/{entry.name}" if rel_in_base else entry.name
            full_rel = rel if head_rel == "." else f"{head_rel}/{rel}"
            is_dir = entry.is_dir(follow_symlinks=False)
            if ignore is not None and _invisible(ignore, full_rel, is_dir):
                continue
            if go_match(tail, rel):
                out.append(full_rel)
                continue
            if is_dir and rel.count("/") < tail.count("/"):
                visit(Path(entry.path), rel)

    visit(base, "")
    return out


class EntryStat:
    """The ``lstat`` fields a selected entry is used for, kept in about a third of the memory
    of an ``os.stat_result`` (a 19-field struct with its own int and float objects).
    :meth:`Walk.stat` makes one on demand from the walk's columns; ``index`` is the entry's
    position in its walk (-1 for one made from an ``os.stat_result``)."""

    __slots__ = ("index", "st_atime_ns", "st_ctime_ns", "st_dev", "st_gid", "st_ino",
                 "st_mode", "st_mtime_ns", "st_nlink", "st_rdev", "st_size", "st_uid")

    def __init__(self, st: os.stat_result | EntryStat, index: int = -1) -> None:
        self.index = index
        self.st_mode: int = st.st_mode
        self.st_ino: int = st.st_ino
        self.st_dev: int = st.st_dev
        self.st_nlink: int = st.st_nlink
        self.st_uid: int = st.st_uid
        self.st_gid: int = st.st_gid
        self.st_size: int = st.st_size
        self.st_atime_ns: int = st.st_atime_ns
        self.st_mtime_ns: int = st.st_mtime_ns
        self.st_ctime_ns: int = st.st_ctime_ns
        self.st_rdev: int = st.st_rdev

    def __repr__(self) -> str:
        return (f"EntryStat(mode={self.st_mode:o}, ino={self.st_ino}, size={self.st_size},"
                f" mtime_ns={self.st_mtime_ns})")


#: An ``lstat`` result, whole or compact.
StatLike = os.stat_result | EntryStat

#: ``(rel, path, lstat, source_rel, inner)`` of one selected entry (see :class:`Walk`).
RawEntry = tuple[str, str, EntryStat, str, str]

#: The stat fields a :class:`Walk` keeps, each in a column of its own (array typecode).
_COLUMNS = (("st_mode", "Q"), ("st_ino", "Q"), ("st_dev", "Q"), ("st_nlink", "Q"),
            ("st_uid", "Q"), ("st_gid", "Q"), ("st_size", "q"), ("st_atime_ns", "q"),
            ("st_mtime_ns", "q"), ("st_ctime_ns", "q"), ("st_rdev", "Q"))


@dataclass(frozen=True, slots=True)
class WalkGroup:
    """One resolved source path of a :class:`Walk` and its entries ``[start, end)``: the
    path itself first (``rel`` = ``match``, path ``top``), then its contents in pre-order,
    each ``rel`` = ``match/inner`` (``inner`` alone when ``match`` is ``.``)."""

    src: str  # the source word as written
    match: str  # the path it resolved to, relative to the root as the user named it
    top: str  # where that is (a followed top-level symlink resolved), a root-joined string
    start: int
    end: int

    @property
    def cut(self) -> int:
        """Where ``inner`` starts in the ``rel`` of an entry below the top."""
        return 0 if self.match == "." else len(self.match) + 1


class Walk:
    """Every entry the sources of a COPY select, in copy order, kept compactly: one ``rel``
    string per entry and its ``lstat`` fields in typed arrays (88 bytes an entry), no object
    per entry. The selection digest is made from it and the COPY copies from it, so the
    context is walked once per build (issue 18: a walk kept as ``os.DirEntry`` and stat
    objects, twice, was most of files100k's peak memory). Paths are made on demand from the
    entry's group (:meth:`path`)."""

    __slots__ = ("groups", "rels", *[name for name, _ in _COLUMNS])

    def __init__(self) -> None:
        from array import array

        self.groups: list[WalkGroup] = []
        self.rels: list[str] = []
        self.st_mode = array("Q")
        self.st_ino = array("Q")
        self.st_dev = array("Q")
        self.st_nlink = array("Q")
        self.st_uid = array("Q")
        self.st_gid = array("Q")
        self.st_size = array("q")
        self.st_atime_ns = array("q")
        self.st_mtime_ns = array("q")
        self.st_ctime_ns = array("q")
        self.st_rdev = array("Q")

    def __len__(self) -> int:
        return len(self.rels)

    def _append(self, rel: str, st: os.stat_result) -> None:
        self.rels.append(rel)
        self.st_mode.append(st.st_mode)
        self.st_ino.append(st.st_ino)
        self.st_dev.append(st.st_dev)
        self.st_nlink.append(st.st_nlink)
        self.st_uid.append(st.st_uid)
        self.st_gid.append(st.st_gid)
        self.st_size.append(st.st_size)
        self.st_atime_ns.append(st.st_atime_ns)
        self.st_mtime_ns.append(st.st_mtime_ns)
        self.st_ctime_ns.append(st.st_ctime_ns)
        self.st_rdev.append(st.st_rdev)

    def _truncate(self, n: int) -> None:
        for name in ("rels", *[c for c, _ in _COLUMNS]):
            del getattr(self, name)[n:]

    def stat(self, i: int) -> EntryStat:
        """Entry ``i``'s ``lstat`` as the walk saw it (a new object: keep it no longer than
        needed)."""
        st = EntryStat.__new__(EntryStat)
        st.index = i
        st.st_mode = self.st_mode[i]
        st.st_ino = self.st_ino[i]
        st.st_dev = self.st_dev[i]
        st.st_nlink = self.st_nlink[i]
        st.st_uid = self.st_uid[i]
        st.st_gid = self.st_gid[i]
        st.st_size = self.st_size[i]
        st.st_atime_ns = self.st_atime_ns[i]
        st.st_mtime_ns = self.st_mtime_ns[i]
        st.st_ctime_ns = self.st_ctime_ns[i]
        st.st_rdev = self.st_rdev[i]
        return st

    def stat_key(self, i: int) -> tuple[int, int, int, int, int]:
        """``(dev, ino, size, mtime_ns, ctime_ns)`` of entry ``i``."""
        return (self.st_dev[i], self.st_ino[i], self.st_size[i], self.st_mtime_ns[i],
                self.st_ctime_ns[i])

    def group_of(self, i: int) -> WalkGroup:
        """The group entry ``i`` belongs to."""
        from bisect import bisect_right

        return self.groups[bisect_right([g.start for g in self.groups], i) - 1]

    @staticmethod
    def path_in(group: WalkGroup, rel: str, i: int) -> str:
        """The path of entry ``i`` (whose rel is ``rel``) of ``group``."""
        if i == group.start:
            return group.top
        inner = rel[group.cut:]
        return group.top + inner if group.top.endswith("/") else f"{group.top}/{inner}"

    def path(self, i: int) -> str:
        """Where entry ``i`` is (a root-joined string)."""
        return self.path_in(self.group_of(i), self.rels[i], i)

    def entries(self) -> Iterator[RawEntry]:
        """Every entry as a :data:`RawEntry` tuple, made as it is asked for."""
        for group in self.groups:
            cut = group.cut
            for i in range(group.start, group.end):
                rel = self.rels[i]
                inner = "" if i == group.start else rel[cut:]
                yield rel, self.path_in(group, rel, i), self.stat(i), group.match, inner


def _walk_contents(
    top: str,
    match_rel: str,
    real_rel: str,
    excludes: PatternMatcher | None,
    ignore: PatternMatcher | None,
    out: Walk,
) -> None:
    """Append the entries below directory ``top`` (pre-order, sorted, symlinks not followed).

    ``real_rel`` is ``top`` relative to the context root (for .dockerignore), ``inner`` paths
    are relative to ``top`` (for --exclude). Excluded directories an exception reaches into
    are walked and emitted only if something below them is kept.
    """
    rel_prefix = "" if match_rel == "." else match_rel + "/"
    ctx_prefix = "" if real_rel == "." else real_rel + "/"
    is_dir_mode = stat.S_ISDIR
    append = out._append

    def visit(
        directory: str,
        inner_dir: str,
        ign_info: MatchInfo | None,
        exc_info: MatchInfo | None,
    ) -> bool:
        # Listing through a descriptor makes each entry's lstat an fstatat relative to it,
        # which spares the kernel a walk of the full path per entry.
        fd = os.open(directory, _DIR_FLAGS)
        try:
            return visit_fd(fd, directory, inner_dir, ign_info, exc_info)
        finally:
            os.close(fd)

    def visit_fd(
        fd: int,
        directory: str,
        inner_dir: str,
        ign_info: MatchInfo | None,
        exc_info: MatchInfo | None,
    ) -> bool:
        kept = False
        prefix = directory if directory.endswith("/") else directory + "/"
        for entry in _sorted_scandir(fd):
            inner = inner_dir + entry.name
            st = entry.stat(follow_symlinks=False)
            is_dir = is_dir_mode(st.st_mode)
            child_ign: MatchInfo | None = None
            child_exc: MatchInfo | None = None
            hidden = False
            if ignore:
                ctx_rel = ctx_prefix + inner
                excluded, child_ign = ignore.matches_with_parent(ctx_rel, ign_info)
                if excluded:
                    if not (is_dir and ignore.must_descend(ctx_rel)):
                        continue
                    hidden = True
            if excludes:
                excluded, child_exc = excludes.matches_with_parent(inner, exc_info)
                if excluded:
                    if not (is_dir and excludes.must_descend(inner)):
                        continue
                    hidden = True
            if not is_dir:
                append(rel_prefix + inner, st)
                kept = True
                continue
            mark = len(out)
            append(rel_prefix + inner, st)
            below = visit(prefix + entry.name, inner + "/", child_ign, child_exc)
            if hidden and not below:
                out._truncate(mark)
                continue
            kept = True
        return kept

    visit(top, "", None, None)


def missing_source_error(
    src: str, ignore: PatternMatcher | None, hint: str | None = None
) -> ContextError:
    """The error for a COPY source that is not there, saying if .dockerignore hid it."""
    clean = go_clean(src).lstrip("/") or "."
    if ignore and ignore.matches(clean):
        hint = "it is excluded by .dockerignore"
    return ContextError(f'failed to compute cache key: "/{clean}": not found', hint=hint)


def select_sources(
    root: Path,
    sources: Sequence[str],
    *,
    excludes: Sequence[str] = (),
    ignore: PatternMatcher | None = None,
    follow_root_symlinks: bool = True,
    allow_empty_wildcard: bool = True,
) -> Walk:
    """Every entry the COPY sources select below ``root``, in copy order (paths are
    ``root``-joined strings), one :class:`WalkGroup` per match selected.

    A top-level match that is a symlink is followed (within the root) when
    ``follow_root_symlinks``; everything below is listed as it is, symlinks included.
    """
    exclude_matcher = PatternMatcher(excludes) if excludes else None
    out = Walk()
    for src in sources:
        matches = resolve_wildcards(root, src, follow=follow_root_symlinks, ignore=ignore)
        wildcard = has_wildcards(src)
        if not matches:
            if wildcard and allow_empty_wildcard:
                continue
            raise missing_source_error(src, ignore)
        head = split_wildcards(src)[0]
        for match in matches:
            if wildcard and exclude_matcher:
                below_head = match if head == "." else match[len(head) + 1 :]
                if exclude_matcher.matches(below_head):
                    continue
            select_match(root, match, src, exclude_matcher, ignore, follow_root_symlinks, out)
    return out


def select_sources_raw(
    root: Path,
    sources: Sequence[str],
    **options: object,
) -> list[RawEntry]:
    """:func:`select_sources` as a list of :data:`RawEntry` tuples (for tests and small
    selections: a tuple and a stat object per entry)."""
    return list(select_sources(root, sources, **options).entries())  # type: ignore[arg-type]


def select_match(
    root: Path,
    match: str,
    src: str,
    excludes: PatternMatcher | None,
    ignore: PatternMatcher | None,
    follow: bool,
    out: Walk,
) -> WalkGroup:
    """Append the entries of one resolved source path (the path itself, then its contents)
    to ``out``, as one group."""
    # An excluded dir an exception reaches into still exists in the sent context.
    if ignore and match != "." and ignore.matches(match) and not ignore.must_descend(match):
        raise missing_source_error(src, ignore)
    path = visible_path(root, match, ignore, follow=follow)
    if path is None:  # through an excluded entry (a link inside an excluded directory)
        raise missing_source_error(
            src, ignore, hint="it leads through a path that .dockerignore excludes")
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise missing_source_error(src, ignore) from None
    real_rel = rel_to(root, path)
    if (
        ignore
        and real_rel not in (".", match)
        and _invisible(ignore, real_rel, stat.S_ISDIR(st.st_mode))
    ):
        raise missing_source_error(src, ignore)
    top = str(path)
    start = len(out)
    out._append(match, st)
    if stat.S_ISDIR(st.st_mode):
        _walk_contents(top, match, real_rel, excludes, ignore, out)
    group = WalkGroup(src, match, top, start, len(out))
    out.groups.append(group)
    return group
