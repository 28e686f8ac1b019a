"""What every API call shares: the store root, opening the store, registry options."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockyard.registry.client import RegistryOptions
    from dockyard.store.db import Store

Root = str | os.PathLike[str] | None


def store_root(root: Root) -> Path:
    """``root``, or the default store root (``$DOCKYARD_ROOT``, else /var/lib/dockyard as
    root, else ~/.local/share/dockyard)."""
    if root is not None:
        return Path(root)
    from dockyard._api._root import default_root

    return Path(default_root())


@contextlib.contextmanager
def open_store(root: Root) -> Iterator[Store]:
    """The store at ``root`` (created if missing), closed afterwards."""
    from dockyard.store.db import Store

    store = Store.open(store_root(root))
    try:
        yield store
    finally:
        store.close()


def wanted_platform(platform: str | None) -> str | None:
    """``platform`` (``os/arch[/variant]``) normalized, as the store's platform lookups want
    it; None stays None (a multi-platform name then means its default image)."""
    if not platform:
        return None
    from dockyard.dockerfile.stages import Platform

    return str(Platform.parse(platform))


def registry_options(
    tls_verify: bool, insecure_registries: Sequence[str], authfile: str | os.PathLike[str] | None
) -> RegistryOptions:
    """The registry client's options (``$DOCKYARD_INSECURE_REGISTRIES`` added)."""
    from dockyard.registry.client import RegistryOptions

    return RegistryOptions.from_env(
        tls_verify=tls_verify,
        insecure_registries=tuple(insecure_registries),
        auth_config=Path(authfile) if authfile else None,
    )
