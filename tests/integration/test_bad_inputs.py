"""Bad inputs that are not archives, and messages that used to mislead: each gives one clear
line (no traceback) and leaves the store consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_build_support import dockyard_cli, fresh_store, template_store, write_tree

from bases import busybox_rootfs_tar, need_runtime


@pytest.fixture
def root(tmp_path: Path) -> Path:
    reason = need_runtime()
    if reason:
        pytest.skip(reason)
    template_store()
    return fresh_store(tmp_path / "store")


def _run(root: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*dockyard_cli(), "--root", str(root), *args], capture_output=True,
                          text=True, errors="replace", timeout=600, check=False, cwd=cwd)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def _error(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def _clean(root: Path) -> None:
    proc = _run(root, "store", "check")
    assert proc.returncode == 0, proc.stdout


def test_onbuild_chain_of_500(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\n" + "ONBUILD " * 500 + "RUN true\n"})
    err = _error(_run(root, "build", str(ctx)))
    assert "Dockerfile:2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed" in err
    # the same chain inside a base image's config
    imported = _run(root, "import", "-c", "ONBUILD " * 500 + "ENV A=1",
                    str(busybox_rootfs_tar()), "chained:1")
    assert imported.returncode == 0, imported.stderr
    ctx2 = write_tree(tmp_path / "ctx2", {"Dockerfile": "FROM chained:1\n"})
    err = _error(_run(root, "build", str(ctx2)))
    assert "invalid ONBUILD trigger" in err and len(err) < 400
    _clean(root)


def test_non_utf8_names_in_a_directory_context(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY . /ctx/\n"})
    with open(os.path.join(os.fsencode(ctx), b"caf\xe9"), "wb") as f:
        f.write(b"x")
    first = _run(root, "build", "-q", "-t", "utf:1", str(ctx))
    assert first.returncode == 0, first.stderr
    again = _run(root, "build", "--progress", "plain", str(ctx))
    assert again.returncode == 0 and "CACHED" in again.stderr
    with open(os.path.join(os.fsencode(ctx), b"caf\xe9"), "wb") as f:
        f.write(b"changed")
    changed = _run(root, "build", "--progress", "plain", str(ctx))
    assert changed.returncode == 0 and "1 file changed" in changed.stderr
    _clean(root)


def test_a_path_too_deep_for_the_layer(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": (
        "FROM busybox\n"
        "RUN cd / && mkdir deep && cd deep && i=0 && "
        "while [ $i -lt 2100 ]; do mkdir a && cd a; i=$((i+1)); done\n")})
    err = _error(_run(root, "build", str(ctx)))
    assert "levels deep" in err and "--max-path-depth" in err
    assert list((root / "tmp").iterdir()) == []
    _clean(root)


def test_an_environment_too_big_for_exec(root: Path, tmp_path: Path) -> None:
    import dockyard

    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nARG BIG\nRUN true\n"})
    with pytest.raises(dockyard.DockyardError) as info:
        dockyard.build(ctx, root=root, build_args={"BIG": "x" * (1 << 20)})
    text = str(info.value)
    assert "BIG" in text and "E2BIG" in text and "msg" not in text
    _clean(root)


def test_cp_into_an_existing_destination(root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    for _ in range(2):
        proc = _run(root, "cp", "busybox:latest:/bin", str(dest))
        assert proc.returncode == 0, proc.stderr
    assert (dest / "bin" / "sh").is_symlink() or (dest / "bin" / "sh").exists()
    (dest / "afile").write_text("x")
    err = _error(_run(root, "cp", "busybox:latest:/etc", str(dest / "afile")), code=2)
    assert "[(" not in err and "afile" in err


def test_prune_counts_what_a_killed_build_left(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": (
        "FROM busybox\n"
        "RUN head -c 20000000 /dev/urandom > /big && echo written && sleep 60\n")})
    proc = subprocess.Popen([*dockyard_cli(), "--root", str(root), "build", "--progress",
                             "plain", str(ctx)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for raw in proc.stdout:
        if b"written" in raw and b"RUN" not in raw:
            break
        assert time.monotonic() < deadline
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = _run(root, "prune").stdout
    assert "1 snapshots" in out or "snapshots" in out
    assert "Total reclaimed space: 0B" not in out, out
    _clean(root)
