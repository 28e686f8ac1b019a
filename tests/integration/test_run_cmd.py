"""``dockyard run``: the CLI in a subprocess, on a busybox base and on images it built."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from bases import busybox_rootfs_tar, need_runtime
from dockyard._api._containers import merge_env, resolve_command

pytestmark = pytest.mark.skipif(need_runtime() is not None, reason=str(need_runtime()))

DOCKERFILE = """\
FROM busybox
COPY msg.txt /app/msg.txt
RUN echo built-by-run > /app/built.txt
WORKDIR /app
ENV GREETING=hello PATH=/usr/local/bin:/usr/bin:/bin:/sbin
USER app
CMD ["sh", "-c", "cat msg.txt built.txt; echo $GREETING from $(id -un) in $(pwd)"]
"""

ENTRYPOINT_DOCKERFILE = """\
FROM busybox
ENTRYPOINT ["echo", "entry:"]
CMD ["default", "args"]
"""


def dy(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run the dockyard CLI as a user would; stdout and stderr apart."""
    return subprocess.run(
        [sys.executable, "-m", "dockyard.cli.main", "--root", str(root), *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with busybox:latest and two images built from it."""
    root = tmp_path_factory.mktemp("run") / "root"
    proc = dy(root, "import", str(busybox_rootfs_tar()), "busybox:latest")
    assert proc.returncode == 0, proc.stderr.decode()
    ctx = tmp_path_factory.mktemp("ctx")
    (ctx / "msg.txt").write_text("message from the context\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    proc = dy(root, "build", "-t", "app:1", "--progress", "plain", str(ctx))
    assert proc.returncode == 0, proc.stderr.decode()
    ep = tmp_path_factory.mktemp("ep")
    (ep / "Dockerfile").write_text(ENTRYPOINT_DOCKERFILE)
    proc = dy(root, "build", "-t", "ep:1", "--progress", "plain", str(ep))
    assert proc.returncode == 0, proc.stderr.decode()
    return root


def our_mounts(root: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [line for line in f if str(root) in line]


def test_echo_in_busybox(root: Path) -> None:
    proc = dy(root, "run", "--rm", "busybox", "echo", "hello", "-n", "world")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"hello -n world\n"  # args after the image are the command's
    assert proc.stderr == b""


def test_exit_code_passes_through(root: Path) -> None:
    proc = dy(root, "run", "busybox", "sh", "-c", "echo before; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == b"before\n"
    assert dy(root, "run", "busybox", "false").returncode == 1
    assert dy(root, "run", "busybox", "sh", "-c", "exit 255").returncode == 255


def test_env_user_workdir(root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard.cli.main", "--root", str(root), "run",
         "-e", "FOO=bar baz", "-e", "FROM_HOST", "-e", "UNSET_ON_HOST",
         "-u", "app", "-w", "/tmp/work",
         "busybox", "sh", "-c",
         'echo "$FOO|$FROM_HOST|${UNSET_ON_HOST-unset}"; id -u; id -g; pwd'],
        capture_output=True, timeout=60, check=False,
        env={**os.environ, "FROM_HOST": "hostvalue"},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().splitlines() == ["bar baz|hostvalue|unset", "1000", "1000",
                                                 "/tmp/work"]
    proc = dy(root, "run", "-u", "65534:1000", "busybox", "sh", "-c", "id -u; id -g")
    assert proc.stdout.decode().split() == ["65534", "1000"]


def test_built_image_cmd_env_user_workdir(root: Path) -> None:
    proc = dy(root, "run", "app:1")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == (
        "message from the context\nbuilt-by-run\nhello from app in /app\n"
    )
    # -e replaces an image variable; -u and -w replace USER and WORKDIR
    proc = dy(root, "run", "-e", "GREETING=bye", "-u", "root", "-w", "/", "app:1")
    assert proc.stdout.decode().splitlines()[-1] == "bye from root in /"
    # the image's PATH stays unless replaced
    assert dy(root, "run", "app:1", "sh", "-c", "echo $PATH").stdout == (
        b"/usr/local/bin:/usr/bin:/bin:/sbin\n"
    )


def test_entrypoint_rules(root: Path) -> None:
    assert dy(root, "run", "ep:1").stdout == b"entry: default args\n"
    assert dy(root, "run", "ep:1", "mine").stdout == b"entry: mine\n"  # CMD replaced
    # --entrypoint drops the image's CMD ...
    assert dy(root, "run", "--entrypoint", "echo", "ep:1").stdout == b"\n"
    assert dy(root, "run", "--entrypoint", "echo", "ep:1", "x", "y").stdout == b"x y\n"
    # ... and "" clears the entrypoint, so the arguments are the whole command
    assert dy(root, "run", "--entrypoint", "", "ep:1", "echo", "plain").stdout == b"plain\n"
    proc = dy(root, "run", "--entrypoint", "", "ep:1")
    assert proc.returncode == 2 and proc.stdout == b""
    assert b"no command" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("nosuch:image", "true"), b"no such image", 1),
        (("busybox",), b"no command", 2),
        (("busybox", "definitely-not-a-program"), b"executable file not found", 1),
        (("busybox", "/no/such/file"), b"no such file", 1),
        (("-u", "nobody-here", "busybox", "true"), b"nobody-here", 1),
        (("-e", "=x", "busybox", "true"), b"invalid environment variable", 2),
    ],
)
def test_errors(root: Path, args: Sequence[str], message: bytes, code: int) -> None:
    proc = dy(root, "run", *args)
    assert proc.returncode == code
    assert proc.stdout == b""  # errors never reach stdout
    assert message in proc.stderr, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr


def test_stdout_is_exactly_the_container_output(root: Path) -> None:
    # Every byte value, and no newline at the end: nothing may be added, decoded or dropped.
    script = "i=0; while [ $i -lt 256 ]; do printf \"\\\\$(printf %o $i)\"; i=$((i+1)); done"
    proc = dy(root, "run", "busybox", "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == bytes(range(256))
    assert proc.stderr == b""
    # a large output arrives whole
    proc = dy(root, "run", "busybox", "sh", "-c", "head -c 3000000 /dev/zero")
    assert proc.stdout == b"\0" * 3_000_000


def test_network_none(root: Path) -> None:
    proc = dy(root, "run", "--network", "none", "busybox", "cat", "/proc/net/dev")
    assert proc.returncode == 0, proc.stderr.decode()
    devices = [line.split(":")[0].strip() for line in proc.stdout.decode().splitlines()[2:]]
    assert devices == ["lo"]


def test_changes_are_thrown_away(root: Path) -> None:
    assert dy(root, "run", "busybox", "sh", "-c", "echo x > /marker && rm /bin/ls").returncode == 0
    proc = dy(root, "run", "busybox", "sh", "-c", "test -e /marker; echo $?; test -e /bin/ls; echo $?")
    assert proc.stdout == b"1\n0\n"
    assert our_mounts(root) == []


def test_sigterm_kills_the_container_and_unmounts(root: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dockyard.cli.main", "--root", str(root), "run", "busybox",
         "sh", "-c", "echo started; exec sleep 6173"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        assert our_mounts(root), "the container's rootfs should be mounted while it runs"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130
    assert time.monotonic() - t0 < 10
    assert our_mounts(root) == []
    assert list((root / "run" / "bundles").iterdir()) == []
    # no runtime process of this store and no container process survives
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert "sleep 6173" not in ps.stdout
    assert str(root) not in ps.stdout
    # the store is still usable
    assert dy(root, "run", "busybox", "true").returncode == 0


# --- the pure rules (Docker's), checked next to the end-to-end tests above -----------------


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "args", "override", "expected"),
    [
        (None, ("sh",), (), None, ("sh",)),
        (None, ("sh",), ("echo", "x"), None, ("echo", "x")),
        (("ep",), ("a",), (), None, ("ep", "a")),
        (("ep",), ("a",), ("b",), None, ("ep", "b")),
        (("ep",), ("a",), (), "other", ("other",)),
        (("ep",), ("a",), ("b",), "other", ("other", "b")),
        (("ep",), ("a",), ("b",), "", ("b",)),
        (("ep",), ("a",), (), "", ()),
        (None, None, (), None, ()),
        ((), (), (), None, ()),
    ],
)
def test_resolve_command(
    entrypoint: tuple[str, ...] | None,
    cmd: tuple[str, ...] | None,
    args: tuple[str, ...],
    override: str | None,
    expected: tuple[str, ...],
) -> None:
    assert resolve_command(entrypoint, cmd, args, override) == expected


def test_merge_env() -> None:
    image = ("PATH=/bin", "A=1", "B=2")
    got = merge_env(image, ["B=3", "C=4", "HOSTVAR", "MISSING", "A=", "D=x=y"],
                    {"HOSTVAR": "h"})
    assert got == ("PATH=/bin", "A=", "B=3", "C=4", "HOSTVAR=h", "D=x=y")
