"""Root-scoped path resolution and COPY source selection, shared by hashing and copy.

``root_path`` is containerd's ``fs.RootPath``: symlinks are resolved as if ``root`` were
``/``, and ``..`` never climbs above it, so nothing resolved here can leave the root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
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


@dataclass(frozen=True, slots=True)
class SelectedEntry:
    """One entry a COPY source selects.

    ``rel`` is the path relative to the source root as the user named it (a followed
    top-level symlink keeps its own name); ``source_rel`` is the match it came from and
    ``inner`` the path below that match ("" for the match itself).
    """

    rel: str
    path: str  # a string: COPY makes thousands of these, pathlib would cost a third of it
    st: EntryStat
    source_rel: str
    inner: str


class EntryStat:
    """The ``lstat`` fields a selected entry is used for, kept in about a third of the memory
    of an ``os.stat_result`` (a 19-field struct with its own int and float objects): a COPY
    of 100,000 files holds one per entry through the digest and the copy (issue 18's peak
    memory)."""

    __slots__ = ("st_atime_ns", "st_ctime_ns", "st_dev", "st_gid", "st_ino", "st_mode",
                 "st_mtime_ns", "st_nlink", "st_rdev", "st_size", "st_uid")

    def __init__(self, st: os.stat_result | EntryStat) -> None:
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

#: ``(rel, path, lstat, source_rel, inner)``: a :class:`SelectedEntry` as a plain tuple, with
#: the path as a string (no pathlib object per entry on the hashing path).
RawEntry = tuple[str, str, EntryStat, str, str]


def _walk_contents(
    top: str,
    match_rel: str,
    real_rel: str,
    excludes: PatternMatcher | None,
    ignore: PatternMatcher | None,
    out: list[RawEntry],
) -> None:
    """Append the entries below directory ``top`` (pre-order, sorted, symlinks not followed).

    ``real_rel`` is ``top`` relative to the context root (for .dockerignore), ``inner`` paths
    are relative to ``top`` (for --exclude). Excluded directories an exception reaches into
    are walked and emitted only if something below them is kept.
    """
    rel_prefix = "" if match_rel == "." else match_rel + "/"
    ctx_prefix = "" if real_rel == "." else real_rel + "/"
    is_dir_mode = stat.S_ISDIR

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
            st = EntryStat(entry.stat(follow_symlinks=False))
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
            path = prefix + entry.name
            item = (rel_prefix + inner, path, st, match_rel, inner)
            if not is_dir:
                out.append(item)
                kept = True
                continue
            mark = len(out)
            out.append(item)
            below = visit(path, inner + "/", child_ign, child_exc)
            if hidden and not below:
                del out[mark:]
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
) -> list[SelectedEntry]:
    """Every entry the COPY sources select below ``root``, in copy order.

    A top-level match that is a symlink is followed (within the root) when
    ``follow_root_symlinks``; everything below is listed as it is, symlinks included.
    """
    return [
        SelectedEntry(rel, path, st, source_rel, inner)
        for rel, path, st, source_rel, inner in select_sources_raw(
            root,
            sources,
            excludes=excludes,
            ignore=ignore,
            follow_root_symlinks=follow_root_symlinks,
            allow_empty_wildcard=allow_empty_wildcard,
        )
    ]


def select_sources_raw(
    root: Path,
    sources: Sequence[str],
    *,
    excludes: Sequence[str] = (),
    ignore: PatternMatcher | None = None,
    follow_root_symlinks: bool = True,
    allow_empty_wildcard: bool = True,
    matches_out: list[tuple[str, str]] | None = None,
) -> list[RawEntry]:
    """:func:`select_sources` as plain tuples (paths are ``root``-joined strings).
    ``matches_out`` receives ``(source word, match)`` for every match selected."""
    exclude_matcher = PatternMatcher(excludes) if excludes else None
    out: list[RawEntry] = []
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
            out.extend(
                _select_match_raw(root, match, src, exclude_matcher, ignore, follow_root_symlinks)
            )
            if matches_out is not None:
                matches_out.append((src, match))
    return out


def select_match(
    root: Path,
    match: str,
    src: str,
    excludes: PatternMatcher | None,
    ignore: PatternMatcher | None,
    follow: bool,
) -> list[SelectedEntry]:
    """The entries of one resolved source path (the path itself, then its contents)."""
    return [
        SelectedEntry(rel, path, st, source_rel, inner)
        for rel, path, st, source_rel, inner in _select_match_raw(
            root, match, src, excludes, ignore, follow
        )
    ]


def _select_match_raw(
    root: Path,
    match: str,
    src: str,
    excludes: PatternMatcher | None,
    ignore: PatternMatcher | None,
    follow: bool,
) -> list[RawEntry]:
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
    out: list[RawEntry] = [(match, top, EntryStat(st), match, "")]
    if stat.S_ISDIR(st.st_mode):
        _walk_contents(top, match, real_rel, excludes, ignore, out)
    return out
