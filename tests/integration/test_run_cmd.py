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


# ------------------------------------------------- enough of docker run to debug an image
def _in_pty(argv: Sequence[str], typed: bytes, rows: int = 33, cols: int = 101,
            timeout: float = 60) -> tuple[bytes, int]:
    """Run ``argv`` on a fresh pseudo-terminal of ``rows``x``cols`` (python's pty module),
    type ``typed`` once the shell prompts, and return everything the terminal showed and
    the exit status."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvp(argv[0], list(argv))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    shown = b""
    sent = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            shown += data
        if not sent and b"# " in shown:
            os.write(fd, typed)
            sent = True
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return shown, os.waitstatus_to_exitcode(status)


def test_run_it_gives_a_real_terminal_and_forwards_input(root: Path) -> None:
    argv = [sys.executable, "-m", "dockyard.cli.main", "--root", str(root), "run", "-it",
            "busybox", "sh"]
    shown, code = _in_pty(argv, b"tty; echo term=$TERM; stty size; exit 7\r")
    assert code == 7, shown  # the shell's exit status, passed through
    text = shown.decode(errors="replace")
    assert "/dev/pts/" in text  # a pseudo-terminal inside
    assert "term=xterm" in text
    assert "33 101" in text  # our window size reached it


def test_run_i_forwards_stdin_and_keeps_stderr_apart(root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard.cli.main", "--root", str(root), "run", "-i",
         "busybox", "sh", "-c", "read line; echo got:$line; echo oops >&2; exit 4"],
        input=b"hello\n", capture_output=True, timeout=60, check=False)
    assert proc.returncode == 4
    assert proc.stdout == b"got:hello\n"
    assert proc.stderr == b"oops\n"
    without = dy(root, "run", "busybox", "sh", "-c", "cat; echo end")  # no -i: no stdin
    assert without.stdout == b"end\n"


def test_run_it_needs_a_terminal(root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dockyard.cli.main", "--root", str(root), "run", "-it",
         "busybox", "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
        check=False)
    assert proc.returncode == 2 and b"not a TTY" in proc.stderr


def test_run_volumes_name_network_entrypoint(root: Path, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "in.txt").write_text("from the host\n")
    proc = dy(root, "run", "-v", f"{host}:/data", "-v", f"{host}:/ro:ro", "--name",
              "dockyard-face-test", "busybox", "sh", "-c",
              "cat /data/in.txt; echo out > /data/out.txt; touch /ro/x 2>/dev/null || echo ro-refused")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"from the host\nro-refused\n"
    assert (host / "out.txt").read_text() == "out\n"
    made = tmp_path / "made" / "here"
    assert dy(root, "run", "-v", f"{made}:/m", "busybox", "true").returncode == 0
    assert made.is_dir()  # docker's -v makes a missing host directory
    for bad in ("relative:/x", f"{host}:rel", f"{host}:/x:rx", "novolume"):
        proc = dy(root, "run", "-v", bad, "busybox", "true")
        assert proc.returncode == 2 and b"-v" in proc.stderr, bad
    assert dy(root, "run", "--name", "bad name", "busybox", "true").returncode == 2
    links = dy(root, "run", "--network", "none", "busybox", "ip", "-o", "link")
    assert links.stdout.decode().count(": lo:") == 1 and links.stdout.count(b"\n") == 1
    assert dy(root, "run", "--entrypoint", "echo", "busybox", "a", "b").stdout == b"a b\n"
    assert dy(root, "run", "busybox", "sh", "-c", "exit 42").returncode == 42
