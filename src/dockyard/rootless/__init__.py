"""rootless room: building and running as an ordinary user (docs/rootless.md).

Everything that touches the store's files with in-container ownership runs inside one user
namespace (:mod:`.namespace`), mapped from ``/etc/subuid`` and ``/etc/subgid``
(:mod:`.idmap`). Inside, the rest of dockyard runs as it does for root, with the few
differences a user namespace imposes (no device nodes, overlayfs markers in ``user.``
xattrs, no cgroups, ``/sys`` bound rather than mounted with the host network), each decided
where it applies by :func:`in_user_namespace`.
"""

from __future__ import annotations

from dockyard.rootless.idmap import IdMapping, IdRange, in_user_namespace
from dockyard.rootless.namespace import call, enter, entered, in_namespace, needed

__all__ = [
    "IdMapping",
    "IdRange",
    "call",
    "enter",
    "entered",
    "in_namespace",
    "in_user_namespace",
    "needed",
]
