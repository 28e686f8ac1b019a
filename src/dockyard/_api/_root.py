"""The default store root. Imports only ``os``: the CLI asks for it before anything loads."""

from __future__ import annotations

import os

__all__ = ["default_root"]


def default_root() -> str:
    """The store root used when a call gives none: ``$DOCKYARD_ROOT``, else /var/lib/dockyard
    for root, else (an ordinary user, also once inside dockyard's user namespace, where it
    looks like root) ``$XDG_DATA_HOME/dockyard``, else ~/.local/share/dockyard."""
    env = os.environ.get("DOCKYARD_ROOT")
    if env:
        return env
    # inside dockyard's user namespace every user looks like root: the uid outside decides
    outside = os.environ.get("_DOCKYARD_USERNS", "")
    uid = int(outside) if outside.isdigit() else os.geteuid()
    if uid == 0:
        return "/var/lib/dockyard"
    data = os.environ.get("XDG_DATA_HOME")
    if data and os.path.isabs(data):
        return os.path.join(data, "dockyard")
    return os.path.join(os.path.expanduser("~"), ".local", "share", "dockyard")
