"""Issue 12, item 9: on a file system with 1-second timestamps (here a real one: ext4 with
128-byte inodes, made with mkfs in a file and loop-mounted), a same-size edit made in the
same second as a build is seen by the next build, both by the stat cache (library builds)
and by the up-to-date check (the CLI's path). Without the fix the second build reuses the
first file: the edit has the same size, inode, mtime and ctime as the content it replaced.

The race is real: the test waits for the start of a second, writes, builds, and edits again
before that second is over; an attempt the machine was too slow for (the edit fell in the
next second, so its ctime differs) is tried again."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_build_support import build, flatten, fresh_store, needs_runtime, write_tree

from dockyard import quick
from dockyard.cli.main import main

pytestmark = needs_runtime

ATTEMPTS = 8


@pytest.fixture
def coarse_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a freshly made ext4 file system with 1-second timestamps."""
    if os.geteuid() != 0:
        pytest.skip("mounting a file system needs root")
    mkfs = shutil.which("mkfs.ext4")
    if mkfs is None:
        pytest.skip("mkfs.ext4 (e2fsprogs) is not installed")
    image = tmp_path / "coarse.img"
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run([mkfs, "-q", "-F", "-I", "128", str(image)], check=True,
                   capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot loop-mount a file system here: {done.stderr.strip()}")
    try:
        probe = mnt / "probe"
        probe.write_text("x")
        if os.stat(probe).st_ctime_ns % 1_000_000_000:
            pytest.skip("this kernel stores sub-second times on ext4 with 128-byte inodes")
        probe.unlink()
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def _start_of_a_second() -> None:
    """Sleep until just after the wall clock enters a new second."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def _edit_in_same_second(path: Path, content: str, like: os.stat_result) -> bool:
    """Write ``content`` over ``path`` in place; True if its stat, times included, came out
    the same as ``like`` (the same second), so only the bytes tell the versions apart."""
    with open(path, "r+") as f:
        f.write(content)
    st = os.stat(path)
    return (st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) == (
        like.st_size, like.st_ino, like.st_mtime_ns, like.st_ctime_ns)


def test_stat_cache_sees_an_edit_in_the_same_second(coarse_dir: Path, tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(coarse_dir / "ctx", {"Dockerfile": "FROM busybox\nCOPY f /f\n",
                                          "f": "warm-up\n"})
    build(ctx, root, tags=["img"])  # the base snapshot and the imports are ready now
    for attempt in range(ATTEMPTS):
        first, second = f"first-{attempt}\n", f"again-{attempt}\n"
        _start_of_a_second()
        (ctx / "f").write_text(first)
        written = os.stat(ctx / "f")
        time.sleep(0.05)  # past the fine-grained racy window, still in the same second
        one = build(ctx, root, tags=["img"])
        assert not one.step(2).cached
        if not _edit_in_same_second(ctx / "f", second, written):
            continue  # the build ran into the next second: try again
        two = build(ctx, root, tags=["img"])
        fs = flatten(root, "img", tmp_path / f"fs-{attempt}")
        assert (fs / "f").read_text() == second
        assert not two.step(2).cached
        return
    pytest.skip(f"no build fit in one second in {ATTEMPTS} attempts (machine too busy)")


def test_up_to_date_check_sees_an_edit_in_the_same_second(
    coarse_dir: Path, tmp_path: Path
) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(coarse_dir / "ctx", {"Dockerfile": "FROM busybox\nCOPY f /f\n",
                                          "f": "warm-up\n"})
    argv = ["--progress", "quiet", "-t", "img", str(ctx)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--root", str(root), "build", *argv]) == 0
    inv = quick.scan(argv, str(root))
    assert inv is not None
    for attempt in range(ATTEMPTS):
        first, second = f"first-{attempt}\n", f"again-{attempt}\n"
        _start_of_a_second()
        (ctx / "f").write_text(first)
        written = os.stat(ctx / "f")
        time.sleep(quick.RACY_MARGIN + 0.05)  # past the fine-grained margin
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--root", str(root), "build", *argv]) == 0
        # the walk saw a stamp whose second was not over: nothing may be recorded
        recorded = os.path.exists(inv.record_path)
        if not _edit_in_same_second(ctx / "f", second, written):
            continue
        assert not recorded, "a build within a coarse tick left an up-to-date record"
        assert quick.try_build(argv, str(root)) is None
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--root", str(root), "build", *argv]) == 0
        fs = flatten(root, "img", tmp_path / f"fs-{attempt}")
        assert (fs / "f").read_text() == second
        return
    pytest.skip(f"no build fit in one second in {ATTEMPTS} attempts (machine too busy)")
