"""User and group id mappings for dockyard's user namespace.

An ordinary user's namespace maps in-container root to the user's own id and in-container
ids 1..N to the user's subordinate range from ``/etc/subuid`` / ``/etc/subgid`` (as rootless
Podman and Buildah lay it out)::

    inside 0        -> outside 1000 (the user)
    inside 1..65536 -> outside 100000..165535 (the subordinate range)

so a file a RUN step makes as ``USER 1000`` is owned by 100999 on the host and by 1000 in
every layer (the tar writer runs in the namespace and sees 1000). A user with no subordinate
ids gets a single-id mapping (inside 0 -> the user); root without ``CAP_SYS_ADMIN`` (an
unprivileged container) maps every id it has onto itself.

Everything here is pure: parsing and planning, no system calls beyond reading files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "IdMapping",
    "IdRange",
    "check_ids",
    "current_map",
    "in_user_namespace",
    "plan_mapping",
    "subordinate_ranges",
]

MappingKind = Literal["subordinate", "single", "identity"]

# uid_map of the initial user namespace: every id maps onto itself.
_FULL = 4294967295


@dataclass(frozen=True, slots=True)
class IdRange:
    """``count`` ids from ``inside`` in the namespace are ``outside`` and on in its parent."""

    inside: int
    outside: int
    count: int

    def line(self) -> str:
        """The ``/proc/PID/uid_map`` line."""
        return f"{self.inside} {self.outside} {self.count}"


@dataclass(frozen=True, slots=True)
class IdMapping:
    """The uid and gid ranges of a user namespace, and how they were chosen."""

    kind: MappingKind
    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]

    def describe(self) -> str:
        """``uid 0->1000, 1-65536->100000-165535; gid ...`` (for ``dockyard info``)."""

        def ranges(items: tuple[IdRange, ...]) -> str:
            parts = []
            for r in items:
                if r.count == 1:
                    parts.append(f"{r.inside}->{r.outside}")
                else:
                    parts.append(f"{r.inside}-{r.inside + r.count - 1}->"
                                 f"{r.outside}-{r.outside + r.count - 1}")
            return ", ".join(parts)

        return f"uid {ranges(self.uids)}; gid {ranges(self.gids)}"

    def maps_uid(self, uid: int) -> bool:
        """Whether in-namespace ``uid`` exists (files and processes can have it)."""
        return any(r.inside <= uid < r.inside + r.count for r in self.uids)

    def maps_gid(self, gid: int) -> bool:
        """Whether in-namespace ``gid`` exists."""
        return any(r.inside <= gid < r.inside + r.count for r in self.gids)

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind,
                "uids": [[r.inside, r.outside, r.count] for r in self.uids],
                "gids": [[r.inside, r.outside, r.count] for r in self.gids]}


def subordinate_ranges(text: str, name: str | None, uid: int) -> list[tuple[int, int]]:
    """``(start, count)`` of every ``/etc/subuid``-style line for ``name`` or numeric ``uid``,
    in file order (newuidmap accepts either form). Malformed lines are skipped."""
    found: list[tuple[int, int]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            continue
        owner, start, count = parts
        if owner != str(uid) and (name is None or owner != name):
            continue
        if not (start.isdigit() and count.isdigit()) or int(count) == 0:
            continue
        found.append((int(start), int(count)))
    return found


def _identity(ranges: tuple[IdRange, ...]) -> tuple[IdRange, ...]:
    """Every id of ``ranges`` mapped onto itself, less the very last id of a range that
    reaches 2**32-2: a map of all ids would look like the host's own namespace, and runc
    (like :func:`in_user_namespace`) would take it for one."""
    out = []
    for r in ranges:
        count = r.count
        if r.inside + count >= _FULL:
            count = _FULL - 1 - r.inside
        if count > 0:
            out.append(IdRange(r.inside, r.inside, count))
    return tuple(out)


def _sub_ranges(outside_self: int, subs: list[tuple[int, int]]) -> tuple[IdRange, ...]:
    """0 -> ``outside_self``, then the subordinate ranges one after another from 1."""
    ranges = [IdRange(0, outside_self, 1)]
    inside = 1
    for start, count in subs:
        ranges.append(IdRange(inside, start, count))
        inside += count
    return tuple(ranges)


def plan_mapping(
    uid: int, gid: int, name: str | None, subuid_text: str, subgid_text: str,
    *, current_uids: tuple[IdRange, ...] = (), current_gids: tuple[IdRange, ...] = (),
    can_setid: bool = False,
) -> IdMapping:
    """The mapping for a process with ``uid``/``gid`` (user ``name``).

    ``can_setid``: the process has CAP_SETUID and CAP_SETGID where it is (root in an
    unprivileged container); it then maps every id of its own namespace (``current_*``)
    onto itself. Otherwise: the subordinate ranges of both files, or, when either file has
    none for the user, the single-id mapping.
    """
    if can_setid and current_uids and current_gids:
        return IdMapping("identity", _identity(current_uids), _identity(current_gids))
    subuids = subordinate_ranges(subuid_text, name, uid)
    subgids = subordinate_ranges(subgid_text, name, uid)
    if subuids and subgids:
        return IdMapping("subordinate", _sub_ranges(uid, subuids), _sub_ranges(gid, subgids))
    return IdMapping("single", (IdRange(0, uid, 1),), (IdRange(0, gid, 1),))


def parse_map(text: str) -> tuple[IdRange, ...]:
    """The ranges of a ``/proc/PID/uid_map`` or ``gid_map``."""
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            ranges.append(IdRange(int(fields[0]), int(fields[1]), int(fields[2])))
    return tuple(ranges)


def current_map(which: Literal["uid", "gid"] = "uid") -> tuple[IdRange, ...]:
    """This process's ``uid_map`` or ``gid_map``; the full identity if it cannot be read."""
    try:
        with open(f"/proc/self/{which}_map", encoding="ascii") as f:
            return parse_map(f.read())
    except OSError:
        return (IdRange(0, 0, _FULL),)


def in_user_namespace(uid_map: tuple[IdRange, ...] | None = None) -> bool:
    """Whether this process runs in a user namespace other than the host's (its ids are not
    every id mapped onto itself): then no device node can be made, mounts of sysfs need a
    network namespace of our own, overlayfs keeps its markers in ``user.`` xattrs, and the
    runtime applies no cgroups. As runc's ``RunningInUserNS``."""
    if uid_map is None and os.environ.get("_DOCKYARD_USERNS"):
        return True  # ours (set by dockyard.rootless.enter, inherited by our children)
    ranges = current_map() if uid_map is None else uid_map
    return ranges != (IdRange(0, 0, _FULL),)


def read_text(path: str) -> str:
    """A file's text, or ``""`` when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def user_name(uid: int) -> str | None:
    """The login name of ``uid`` (``$USER`` when it names that uid), or None."""
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        env = os.environ.get("USER") or os.environ.get("LOGNAME")
        return env or None


def _mapped(ranges: tuple[IdRange, ...], value: int) -> bool:
    return any(r.inside <= value < r.inside + r.count for r in ranges)


def check_ids(what: str, uid: int | None, gid: int | None,
              groups: tuple[int, ...] = ()) -> None:
    """In a user namespace, raise ExecutorError when ``uid``, ``gid`` or ``groups`` do not
    exist there (a single-id mapping has only 0; a subordinate range may end below them):
    the kernel would refuse them with a bare EINVAL. ``what`` names the cause
    (``USER 1000``, ``COPY --chown=1000``)."""
    if not in_user_namespace():
        return
    uids, gids = current_map("uid"), current_map("gid")
    missing = [f"uid {uid}"] if uid is not None and not _mapped(uids, uid) else []
    missing += [f"gid {g}" for g in (gid, *groups) if g is not None and not _mapped(gids, g)]
    if not missing:
        return
    from dockyard.errors import ExecutorError

    last = max(r.inside + r.count - 1 for r in uids)
    raise ExecutorError(
        f"{what}: {', '.join(missing)} {'does' if len(missing) == 1 else 'do'} not exist "
        f"in this user namespace (ids 0-{last} are mapped)",
        hint="give the user subordinate ids, e.g. usermod --add-subuids 100000-165535 "
             "--add-subgids 100000-165535 USER (docs/rootless.md)")

