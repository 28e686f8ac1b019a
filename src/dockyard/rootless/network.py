"""The network of RUN steps and ``dockyard run`` when the host's is not the answer.

``none`` always works (a new, empty network namespace). ``host`` shares the host's network
namespace: the default, for root and, where its user namespace allows it, for an ordinary
user. Otherwise, or when asked for by name (``--network slirp4netns|pasta``, as Podman
names them), a network namespace of the build's own gets user-mode networking from
``slirp4netns`` or ``pasta`` (Debian packages ``slirp4netns`` and ``passt``): the steps
reach what the host reaches, the host's loopback excepted.

One such namespace serves every step of a build (or one ``dockyard run``); it is held by a
sleeping process and torn down with the executor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Literal

from dockyard.errors import ExecutorError, UsageError

__all__ = [
    "NETWORK_MODES",
    "TOOLS",
    "UserModeNetwork",
    "choose",
    "host_network_usable",
    "usermode_tool",
]

Tool = Literal["slirp4netns", "pasta"]
TOOLS: tuple[Tool, ...] = ("slirp4netns", "pasta")
# what --network takes for a build or dockyard run
NETWORK_MODES = ("default", "host", "none", "slirp4netns", "pasta")
_PACKAGES = {"slirp4netns": "slirp4netns", "pasta": "passt"}
_READY_TIMEOUT = 10.0


def host_network_usable() -> bool:
    """Whether this process may use the host's network namespace: it can make an IPv4
    socket there (a policy that forbids namespaced processes the host network fails this)."""
    import socket

    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return True


def usermode_tool() -> Tool | None:
    """The first of slirp4netns, pasta that is installed, or None."""
    for tool in TOOLS:
        if shutil.which(tool):
            return tool
    return None


def choose(
    requested: str, *, rootless: bool, host_usable: bool | None = None,
    installed: Tool | Literal["probe"] | None = "probe",
) -> str:
    """The network a build's (or run's) networked steps get: ``host``, ``none``,
    ``slirp4netns`` or ``pasta``.

    ``requested`` is ``--network``: ``default`` means the host's where it can be used (as
    root always; rootless when :func:`host_network_usable`), else the first user-mode tool
    installed. Raises ExecutorError saying what to install when nothing works, UsageError
    for an unknown mode.
    """
    if requested not in NETWORK_MODES:
        raise UsageError(f"--network {requested}: expected one of {', '.join(NETWORK_MODES)}")
    if requested in ("none", "host") or requested in TOOLS:
        if requested in TOOLS and shutil.which(requested) is None:
            raise ExecutorError(
                f"--network {requested}: {requested} is not installed",
                hint=f"apt-get install {_PACKAGES[requested]}")
        return requested
    if not rootless:
        return "host"
    if host_usable is None:
        host_usable = host_network_usable()
    if host_usable:
        return "host"
    tool = usermode_tool() if installed == "probe" else installed
    if tool is None:
        raise ExecutorError(
            "RUN steps cannot use the host's network from this user namespace, and neither "
            "slirp4netns nor pasta is installed",
            hint="apt-get install slirp4netns (or passt), or build with --network=none")
    return tool


class UserModeNetwork:
    """A network namespace of its own, bound to a file (as ``ip netns`` does, so no process
    has to hold it and the tools open it as a path), connected by slirp4netns or pasta.
    Started on first use; :meth:`close` stops the tool and unbinds the namespace."""

    def __init__(self, tool: Tool) -> None:
        self.tool = tool
        self._dir: str | None = None
        self._helper: subprocess.Popen[bytes] | None = None
        self._helper_pid: int | None = None

    def path(self) -> str:
        """The namespace's file (made and connected now if it is not yet)."""
        if self._dir is None:
            try:
                self._start()
            except BaseException:
                self.close()
                raise
        assert self._dir is not None
        return os.path.join(self._dir, "netns")

    def _start(self) -> None:
        import tempfile

        unshare = shutil.which("unshare")
        binary = shutil.which(self.tool)
        if unshare is None or binary is None:
            missing = "unshare (util-linux)" if unshare is None else self.tool
            raise ExecutorError(f"--network {self.tool}: {missing} is not installed",
                                hint=f"apt-get install {_PACKAGES[self.tool]}")
        if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            raise ExecutorError(
                f"--network {self.tool}: /dev/net/tun cannot be opened by this user",
                hint="it is usually mode 0666 (chmod 0666 /dev/net/tun as root); or use "
                     "--network=host or none")
        self._dir = tempfile.mkdtemp(prefix="dockyard-netns-")
        netns = os.path.join(self._dir, "netns")
        Path(netns).touch()
        proc = subprocess.run([unshare, f"--net={netns}", "--", "true"], capture_output=True,
                              text=True, timeout=_READY_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise ExecutorError(f"cannot make a network namespace for {self.tool}: "
                                f"{proc.stderr.strip()}")
        if self.tool == "slirp4netns":
            self._start_slirp4netns(binary, netns)
        else:
            self._start_pasta(binary, netns)

    def _start_slirp4netns(self, binary: str, netns: str) -> None:
        import select

        ready_r, ready_w = os.pipe()
        try:
            self._helper = subprocess.Popen(
                [binary, "--configure", "--mtu=65520", "--disable-host-loopback",
                 "--enable-sandbox", f"--ready-fd={ready_w}", "--netns-type=path", netns,
                 "tap0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(ready_w,), start_new_session=True)
            os.close(ready_w)
            ready_w = -1
            readable, _, _ = select.select([ready_r], [], [], _READY_TIMEOUT)
            answer = os.read(ready_r, 1) if readable else b""
        finally:
            os.close(ready_r)
            if ready_w >= 0:
                os.close(ready_w)
        if answer != b"1":
            err = b""
            if self._helper.poll() is not None and self._helper.stderr is not None:
                err = self._helper.stderr.read()
            raise ExecutorError("slirp4netns did not bring the network up: "
                                + (err.decode(errors="replace").strip() or "timed out"))

    def _start_pasta(self, binary: str, netns: str) -> None:
        assert self._dir is not None
        pid_path = Path(self._dir) / "pasta.pid"
        # pasta goes to the background once the interface is configured
        proc = subprocess.run(
            [binary, "--quiet", "--config-net", "--no-map-gw", "--runas", "0:0",
             "--pid", str(pid_path), "--netns", netns],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=_READY_TIMEOUT, check=False)
        with contextlib.suppress(OSError, ValueError):
            self._helper_pid = int(pid_path.read_text().strip())
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.decode(errors="replace").splitlines()
                     if "syslog" not in line]
            raise ExecutorError("pasta did not bring the network up: "
                                + ("; ".join(lines) or f"exit status {proc.returncode}"))

    def close(self) -> None:
        """Stop the tool and unbind the namespace (it goes when nothing uses it)."""
        if self._helper is not None:
            with contextlib.suppress(OSError):
                self._helper.kill()
            self._helper.wait()
            if self._helper.stderr is not None:
                self._helper.stderr.close()
            self._helper = None
        if self._helper_pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self._helper_pid, 9)
            self._helper_pid = None
        if self._dir is not None:
            from dockyard.snapshot.base import unmount

            with contextlib.suppress(Exception):
                unmount(Path(self._dir) / "netns")
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
