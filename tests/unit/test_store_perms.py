"""The store root is 0700 whatever the umask, and a loose store is fixed when opened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dockyard.store.db import Store
from dockyard.store.perms import secure_root


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_new_store_is_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = Store.open(tmp_path / "store")
        store.close()
    finally:
        os.umask(old)
    assert _mode(tmp_path / "store") == 0o700


def test_loose_store_is_fixed_on_open(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root).close()
    os.chmod(root, 0o755)
    for child in root.iterdir():
        if not child.is_symlink():
            os.chmod(child, 0o777 if child.is_dir() else 0o666)
    Store.open(root).close()
    assert _mode(root) == 0o700
    for child in root.iterdir():
        assert _mode(child) & 0o077 == 0, child
    assert secure_root(root) is False  # already right: one stat, nothing changed
