"""Shared helpers for the example and demo tests (test_examples*.py, test_demo*.py).

The bases come from scripts/make-bases.sh, which caches their root filesystems and image
archives under /var/tmp/dockyard-bases (``DOCKYARD_BASES``): debootstrap runs once per
machine, and every later store only loads the archives. One store with both bases is made
per test process and shared by the tests that do not need a clean store.

This module has no tests of its own; the others import from it.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BASES_TIMEOUT = 900  # a first debootstrap on a slow mirror


def dockyard_cli() -> list[str]:
    """The command line that runs the dockyard CLI of this checkout."""
    exe = Path(sys.executable).parent / "dockyard"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dockyard.cli.main"]


def examples_skip_reason() -> str | None:
    """Why the example tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (overlay mounts, OCI runtime, debootstrap)"
    if not (shutil.which("crun") or shutil.which("runc")):
        return "no OCI runtime (apt-get install crun runc)"
    if not shutil.which("busybox"):
        return "no busybox (apt-get install busybox-static)"
    if not shutil.which("debootstrap"):
        return "no debootstrap (apt-get install debootstrap)"
    return None


needs_examples = pytest.mark.skipif(examples_skip_reason() is not None,
                                    reason=examples_skip_reason() or "")


def has_run_command() -> bool:
    """Whether ``dockyard run`` exists in this checkout."""
    import importlib.util

    return importlib.util.find_spec("dockyard.cli.cmd_run") is not None


def cli_env(root: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for scripts and the CLI: this checkout's dockyard, store at ``root``."""
    env = dict(os.environ)
    env["DOCKYARD_ROOT"] = str(root)
    env["DOCKYARD"] = dockyard_cli()[0] if len(dockyard_cli()) == 1 else "dockyard"
    env.pop("SOURCE_DATE_EPOCH", None)
    env.update(extra or {})
    return env


def make_bases(root: Path) -> Path:
    """Put busybox:latest and debian:bookworm into the store at ``root`` (make-bases.sh)."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "make-bases.sh"), str(root)],
        env=cli_env(root), capture_output=True, text=True, timeout=BASES_TIMEOUT, check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"make-bases.sh failed ({proc.returncode}):\n{proc.stderr}")
    return root


@functools.cache
def shared_store() -> Path:
    """A store with both bases, made once per test process."""
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-examples-", dir="/var/tmp"))
    atexit.register(shutil.rmtree, tmp, True)
    return make_bases(tmp / "store")


def copy_example(name: str, dest: Path) -> Path:
    """A private copy of ``examples/NAME`` at ``dest/NAME`` (tests never touch the checkout)."""
    target = dest / name
    shutil.copytree(EXAMPLES / name, target, symlinks=True)
    return target


def cli(root: Path, *args: str, check: bool = True, timeout: float = 300,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``dockyard --root ROOT ARGS...``; on failure the assertion shows stderr."""
    proc = subprocess.run(
        [*dockyard_cli(), "--root", str(root), *args], env=cli_env(root, env),
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"dockyard {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def inspect(root: Path, image: str) -> dict[str, Any]:
    """``dockyard inspect IMAGE`` as a dict."""
    data: list[dict[str, Any]] = json.loads(cli(root, "inspect", image).stdout)
    return data[0]


def image_has(root: Path, image: str, path: str, tmp: Path) -> bool:
    """Whether ``path`` exists in ``image`` (a symlink counts, without following it)."""
    dest = tmp / f"probe-{abs(hash((image, path)))}"
    proc = cli(root, "cp", f"{image}:{path}", str(dest), check=False)
    return proc.returncode == 0 and os.path.lexists(dest)


def run_image(root: Path, image: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    """``dockyard run IMAGE [CMD...]``."""
    return cli(root, "run", image, *cmd)


def cached_flags(steps: Sequence[Any]) -> list[bool]:
    """The ``cached`` flag of each step result."""
    return [bool(s.cached) for s in steps]
