"""The default store root. Imports only ``os``: the CLI asks for it before anything loads."""

from __future__ import annotations

import os

__all__ = ["default_root"]


def default_root() -> str:
    """The store root used when a call gives none: ``$DOCKYARD_ROOT``, else /var/lib/dockyard
    for root, else ~/.local/share/dockyard."""
    env = os.environ.get("DOCKYARD_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/dockyard"
    return os.path.join(os.path.expanduser("~"), ".local", "share", "dockyard")
