"""Shared helpers for the build tests (test_build*, test_cache_rules*, test_multistage*,
test_run_steps*): a template store with the busybox base imported once per session, copied
per test; a build wrapper that records progress events; readers for image contents.

This module has no tests of its own; the others import from it.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import dockyard
from bases import busybox_rootfs_tar, need_runtime
from dockyard.api import BuildResult, StepResult
from dockyard.progress.events import Event
from dockyard.store.db import Store

DOCKYARD = [sys.executable, "-m", "dockyard.cli.main"]
BASE = "busybox:latest"

needs_runtime = pytest.mark.skipif(need_runtime() is not None, reason=need_runtime() or "")


def dockyard_cli() -> list[str]:
    """The command line that runs the dockyard CLI of this checkout."""
    exe = Path(sys.executable).parent / "dockyard"
    return [str(exe)] if exe.exists() else DOCKYARD


@functools.cache
def template_store() -> Path:
    """A store with ``busybox:latest`` imported, made once per process."""
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-template-", dir="/var/tmp"))
    atexit.register(shutil.rmtree, tmp, True)
    root = tmp / "store"
    subprocess.run(
        [*dockyard_cli(), "--root", str(root), "import", str(busybox_rootfs_tar()), BASE],
        check=True, capture_output=True,
    )
    return root


def fresh_store(dest: Path) -> Path:
    """A private copy of the template store at ``dest``."""
    subprocess.run(["cp", "-a", str(template_store()), str(dest)], check=True)
    return dest


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write ``files`` (relative path -> content) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


@dataclass
class Built:
    """A build's result with the events it emitted."""

    result: BuildResult
    events: list[Event] = field(default_factory=list)

    @property
    def steps(self) -> tuple[StepResult, ...]:
        return self.result.steps

    def step(self, line: int, stage: str | None = None) -> StepResult:
        """The step at Dockerfile ``line`` (in ``stage`` when given)."""
        found = [s for s in self.result.steps
                 if s.line == line and (stage is None or s.stage == stage)]
        assert len(found) == 1, f"no single step at line {line}: {self.result.steps}"
        return found[0]

    def cached_by_line(self) -> dict[int, bool]:
        return {s.line: s.cached for s in self.result.steps}


def build(ctx: Path, root: Path, **kwargs: Any) -> Built:
    """``dockyard.build`` on ``ctx`` in the store ``root``, events recorded."""
    events: list[Event] = []
    lock = threading.Lock()

    def on_event(event: Event) -> None:
        with lock:
            events.append(event)

    kwargs.setdefault("jobs", 2)
    result = dockyard.build(ctx, root=root, on_event=on_event, **kwargs)
    return Built(result, events)


def flatten(root: Path, image: str, dest: Path) -> Path:
    """The image's flattened filesystem, unpacked at ``dest``."""
    from dockyard.exporter import flatten_to_dir, read_image

    store = Store.open(root)
    try:
        flatten_to_dir(store, read_image(store, image), dest)
    finally:
        store.close()
    return dest


def image_config(root: Path, image: str) -> dict[str, Any]:
    """The full OCI config JSON of ``image``."""
    store = Store.open(root)
    try:
        return store.read_config(store.get_image(image)).to_dict()
    finally:
        store.close()


def mounts_under(path: Path) -> list[str]:
    """Mount points in /proc/self/mountinfo at or below ``path``."""
    prefix = os.path.realpath(path)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                out.append(point)
    return out
