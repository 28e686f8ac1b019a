"""Removing a container's bundle after a run (executor/run.py ``_remove_bundle``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.executor import run as run_mod


def _bundle(tmp_path: Path, *extra: str) -> Path:
    bundle = tmp_path / "b"
    (bundle / "rootfs").mkdir(parents=True)
    for name in ("config.json", "resolv.conf", "hosts", "runtime.log", *extra):
        (bundle / name).write_text("x")
    return bundle


def test_the_known_entries_go(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    run_mod._remove_bundle(bundle)
    assert not bundle.exists()


def test_an_entry_it_does_not_know_goes_too(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "other")
    (bundle / "rootfs" / "leftover").write_text("y")  # an unmounted view with a file in it
    run_mod._remove_bundle(bundle)
    assert not bundle.exists()


def test_missing_entries_are_fine(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text("{}")  # the run failed before the rest was written
    run_mod._remove_bundle(bundle)
    assert not bundle.exists()


def test_a_root_view_still_mounted_is_never_recursed_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = _bundle(tmp_path)
    precious = bundle / "rootfs" / "etc"
    precious.mkdir()
    (precious / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    monkeypatch.setattr(run_mod.os.path, "ismount", lambda p: str(p).endswith("/rootfs"))
    run_mod._remove_bundle(bundle)
    assert (precious / "passwd").read_text().startswith("root:")
