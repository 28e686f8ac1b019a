"""Entering dockyard's user namespace: the one boundary of rootless mode.

Whatever touches the store's files with in-container ownership (unpacking layers, COPY
--chown, RUN steps, committing and diffing snapshots, writing layer tars, removing
snapshots) runs *inside* one user and mount namespace, where the process is root with the
mapping of :mod:`dockyard.rootless.idmap`. Inside, the rest of dockyard runs unchanged: a
chown to 1000 makes a file owned by 1000 as the namespace sees it, and the tar writer reads
1000 back, never the host's mapped id.

Two ways in, one namespace each:

* :func:`enter` moves *this* process in (``unshare(CLONE_NEWUSER|CLONE_NEWNS)``, with the
  maps written by ``newuidmap``/``newgidmap`` from children forked just before). It needs a
  single-threaded process: the CLI calls it before a command starts any thread. Its mounts
  live in a private mount namespace and vanish with the process, whatever ends it.
* :func:`call` runs one function in a forked child that enters (the library API, whose
  caller may have threads): results, exceptions and callbacks (progress events, output)
  come back over a pipe; file objects without a descriptor are pumped through pipes.

Root with ``CAP_SYS_ADMIN`` never enters: nothing changes for it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from dockyard.errors import DockyardError, ExecutorError
from dockyard.rootless.idmap import (
    IdMapping,
    IdRange,
    current_map,
    plan_mapping,
    read_text,
    user_name,
)

if TYPE_CHECKING:
    import ctypes

__all__ = ["call", "enter", "entered", "in_namespace", "mapping_for_this_process", "needed"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_PR_SET_PDEATHSIG = 1
_CAP_SETGID = 6
_CAP_SETUID = 7
_CAP_SYS_ADMIN = 21

_entered: IdMapping | None = None

HINT = ("dockyard needs user namespaces to build as an ordinary user: allow them "
        "(sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone; in a container "
        "a seccomp profile that allows unshare), or run as root; see docs/rootless.md")

F = TypeVar("F", bound=Callable[..., Any])


def _cap_eff() -> int:
    for line in read_text("/proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def needed() -> bool:
    """Whether this process must enter a user namespace to build: it is not root, or it is
    root without ``CAP_SYS_ADMIN`` (an unprivileged container), and it has not entered."""
    if _entered is not None:
        return False
    return os.geteuid() != 0 or not _cap_eff() >> _CAP_SYS_ADMIN & 1


def entered() -> IdMapping | None:
    """The mapping of the namespace this process entered, or None."""
    return _entered


def mapping_for_this_process() -> IdMapping:
    """The mapping :func:`enter` would set up for this process."""
    uid, gid = os.getuid(), os.getgid()
    caps = _cap_eff()
    can_setid = uid == 0 and bool(caps >> _CAP_SETUID & 1) and bool(caps >> _CAP_SETGID & 1)
    return plan_mapping(
        uid, gid, user_name(uid), read_text("/etc/subuid"), read_text("/etc/subgid"),
        current_uids=current_map("uid"), current_gids=current_map("gid"), can_setid=can_setid,
    )


def _libc() -> ctypes.CDLL:
    import ctypes

    return ctypes.CDLL("libc.so.6", use_errno=True)


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def _map_writer(ready: int, other: int, program: str | None, ranges: tuple[IdRange, ...],
                which: str, target: int) -> int:
    """Fork a child (in the parent namespace) that waits until ``ready`` closes, then maps
    ``target``'s ids: with newuidmap/newgidmap, or by writing the map itself (identity
    mappings, which need CAP_SETUID/CAP_SETGID where we are). A byte on ``ready`` instead
    of its end means the parent could not unshare: the child leaves quietly (the parent
    reports that in one line). Returns its pid."""
    pid = os.fork()
    if pid != 0:
        return pid
    try:
        os.close(other)  # the pipe's write end: only the parent may hold it
        if os.read(ready, 1):  # EOF once the parent has unshared; a byte: it failed
            os._exit(1)
        if program is not None:
            args = [program, str(target)]
            for r in ranges:
                args += [str(r.inside), str(r.outside), str(r.count)]
            os.execv(program, args)
        with open(f"/proc/{target}/{which}_map", "w", encoding="ascii") as f:
            f.write("".join(r.line() + "\n" for r in ranges))
        os._exit(0)
    except BaseException as err:
        with contextlib.suppress(Exception):
            os.write(2, f"dockyard: writing the {which} map: {err}\n".encode())
        os._exit(1)


def _unshare(mapping: IdMapping) -> None:
    """Move this (single-threaded) process into a new user and mount namespace with
    ``mapping``. Raises ExecutorError in one line when the host forbids it."""
    if threading.active_count() > 1:
        raise ExecutorError("internal error: entering the user namespace needs a "
                            "single-threaded process")
    pid = os.getpid()
    writers: list[int] = []
    ready_r, ready_w = os.pipe()
    try:
        if mapping.kind != "single":
            for which, ranges, tool in (("uid", mapping.uids, "newuidmap"),
                                        ("gid", mapping.gids, "newgidmap")):
                program = None
                if mapping.kind == "subordinate":
                    program = _which(tool)
                    if program is None:
                        raise ExecutorError(
                            f"{tool} is not installed: it maps the subordinate ids of "
                            "/etc/subuid and /etc/subgid",
                            hint="apt-get install uidmap")
                writers.append(_map_writer(ready_r, ready_w, program, ranges, which, pid))
        libc = _libc()
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            err = _errno()
            raise ExecutorError(f"cannot create a user namespace ({os.strerror(err)})",
                                hint=HINT)
    except BaseException:
        if writers:  # one byte per writer: "no namespace, map nothing"
            os.write(ready_w, b"x" * len(writers))
        os.close(ready_w)
        os.close(ready_r)
        for w in writers:
            os.waitpid(w, 0)
        raise
    os.close(ready_w)  # the writers go on
    os.close(ready_r)
    failed = []
    for w in writers:
        _, status = os.waitpid(w, 0)
        if status != 0:
            failed.append(w)
    if mapping.kind == "single":
        _write_own_maps(mapping)
    elif failed:
        raise ExecutorError(
            f"cannot map the ids {mapping.describe()} (newuidmap/newgidmap failed, see "
            "above)", hint="check /etc/subuid and /etc/subgid for this user")
    with contextlib.suppress(OSError):
        os.setgroups([])
    # Nothing we mount may reach the parent namespace (it would not: a namespace owned by
    # a new user namespace gets slave mounts; private is simpler still).
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        err = _errno()
        raise ExecutorError(f"cannot make the mount namespace private ({os.strerror(err)})")


def _write_own_maps(mapping: IdMapping) -> None:
    try:
        with open("/proc/self/setgroups", "w", encoding="ascii") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w", encoding="ascii") as f:
            f.write(mapping.uids[0].line())
        with open("/proc/self/gid_map", "w", encoding="ascii") as f:
            f.write(mapping.gids[0].line())
    except OSError as err:
        raise ExecutorError(f"cannot map this user into its namespace ({err.strerror})",
                            hint=HINT) from None


def enter() -> IdMapping:
    """Move this process into dockyard's user namespace (once; later calls return the same
    mapping). Only for a single-threaded process (the CLI, a forked child)."""
    global _entered
    if _entered is not None:
        return _entered
    mapping = mapping_for_this_process()
    outside_uid = os.geteuid()
    _unshare(mapping)
    _entered = mapping
    # the uid outside, for default_root() here and in our own child processes
    os.environ["_DOCKYARD_USERNS"] = str(outside_uid)
    return mapping


def in_namespace(fn: F) -> F:
    """Decorate an API function so that it runs in the user namespace when :func:`needed`:
    in this process if it entered, else through :func:`call`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not needed():
            return fn(*args, **kwargs)
        if kwargs.get("root", "") is None or "root" not in kwargs:
            from dockyard._api._root import default_root

            kwargs["root"] = default_root()  # as this process sees it, before entering
        return call(fn, *args, **kwargs)

    return cast(F, wrapper)


# --- running one call in a forked child -------------------------------------------------

def _send(fd: int, message: Any) -> None:
    import pickle
    import struct

    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack("!Q", len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _recv_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _recv(fd: int) -> Any:
    import pickle
    import struct

    head = _recv_exact(fd, 8)
    if head is None:
        return None
    body = _recv_exact(fd, struct.unpack("!Q", head)[0])
    return None if body is None else pickle.loads(body)


def _pack_error(err: BaseException) -> tuple[Any, ...]:
    """An exception as (class, args, attributes): rebuilt without calling ``__init__``,
    which for some classes takes other arguments than ``args``."""
    import pickle

    try:
        packed = (type(err), err.args, dict(getattr(err, "__dict__", {})))
        pickle.dumps(packed)
        return packed
    except Exception:
        return (DockyardError, (f"{type(err).__name__}: {err}",), {})


def _unpack_error(packed: tuple[Any, ...]) -> BaseException:
    cls, args, attrs = packed
    err: BaseException = cls.__new__(cls)
    err.args = args
    with contextlib.suppress(Exception):
        err.__dict__.update(attrs)
    return err


def _has_fd(obj: Any) -> bool:
    try:
        obj.fileno()
        return True
    except Exception:
        return False


class _Pumps:
    """File objects without a descriptor, swapped for pipes: the parent copies between the
    pipe and the object on a thread."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.child_ends: list[int] = []
        self.parent_ends: list[int] = []  # the child closes these: a reader must see EOF

    def swap(self, value: Any) -> Any:
        if callable(value) and not isinstance(value, type):
            return value  # callbacks are proxied in the child
        writable = hasattr(value, "write") and callable(value.write)
        readable = hasattr(value, "read") and callable(value.read)
        if not (writable or readable) or isinstance(value, str | bytes | os.PathLike):
            return value
        if _has_fd(value):
            with contextlib.suppress(Exception):
                value.flush()
            return value
        r, w = os.pipe()
        if writable:
            self._start(self._drain, r, value)
            self.child_ends.append(w)
            self.parent_ends.append(r)
            return os.fdopen(w, "wb")
        self._start(self._fill, w, value)
        self.child_ends.append(r)
        self.parent_ends.append(w)
        return os.fdopen(r, "rb")

    def _start(self, target: Callable[[int, Any], None], fd: int, obj: Any) -> None:
        t = threading.Thread(target=target, args=(fd, obj), daemon=True)
        t.start()
        self.threads.append(t)

    @staticmethod
    def _drain(fd: int, obj: Any) -> None:
        with open(fd, "rb", closefd=True) as src:
            while chunk := src.read(1 << 16):
                obj.write(chunk)

    @staticmethod
    def _fill(fd: int, obj: Any) -> None:
        with contextlib.suppress(BrokenPipeError), open(fd, "wb", closefd=True) as dst:
            while chunk := obj.read(1 << 16):
                dst.write(chunk)

    def close_child_ends(self) -> None:
        """The parent's copies of the child's pipe ends (after the fork)."""
        for fd in self.child_ends:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.child_ends = []

    def join(self) -> None:
        for t in self.threads:
            t.join()


def _proxy(fd: int, index: int) -> Callable[..., None]:
    def forward(*args: Any, **kwargs: Any) -> None:
        _send(fd, ("call", index, args, kwargs))

    return forward


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in a forked child inside the user namespace and return
    its result (or raise its exception) here. Callable arguments (``on_event``,
    ``on_output``, ``warn``...) are called here with what the child passes them."""
    callbacks: list[Callable[..., Any]] = []
    pumps = _Pumps()

    def prepare(value: Any) -> Any:
        if callable(value) and not isinstance(value, type):
            callbacks.append(value)
            return ("__dockyard_callback__", len(callbacks) - 1)
        return pumps.swap(value)

    child_args = [prepare(a) for a in args]
    child_kwargs = {k: prepare(v) for k, v in kwargs.items()}
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        _child(fn, child_args, child_kwargs, result_w, [result_r, *pumps.parent_ends])
    os.close(result_w)
    pumps.close_child_ends()
    outcome: Any = None
    forwarded = _forward_signals(pid)
    try:
        with os.fdopen(result_r, "rb", buffering=0) as reader:
            fd = reader.fileno()
            while True:
                message = _recv(fd)
                if message is None:
                    break
                if message[0] == "call":
                    _, index, cargs, ckwargs = message
                    callbacks[index](*cargs, **ckwargs)
                else:
                    outcome = message
    finally:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        forwarded()
        pumps.join()
    if outcome is None:
        raise ExecutorError("the user-namespace helper process ended without an answer")
    if outcome[0] == "ok":
        return outcome[1]
    raise _unpack_error(outcome[1])


def _forward_signals(pid: int) -> Callable[[], None]:
    """Until the returned function is called: SIGTERM and SIGHUP sent to this process go to
    the child too (SIGINT from a terminal reaches the child's process group by itself, so
    here it is only ignored while the child cleans up). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)

    saved = {}
    for sig, handler in ((signal.SIGTERM, forward), (signal.SIGHUP, forward),
                         (signal.SIGINT, signal.SIG_IGN)):
        saved[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in saved.items():
            signal.signal(sig, old)

    return restore


def _child(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], out: int,
           others: list[int]) -> None:  # pragma: no cover - runs in the child
    code = 0
    try:
        for fd in others:
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

        def restore(value: Any) -> Any:
            if isinstance(value, tuple) and len(value) == 2 and \
                    value[0] == "__dockyard_callback__":
                return _proxy(out, value[1])
            return value

        real_args = [restore(a) for a in args]
        real_kwargs = {k: restore(v) for k, v in kwargs.items()}
        try:
            enter()
            result = fn(*real_args, **real_kwargs)
            message: Any = ("ok", result)
            import pickle

            try:
                pickle.dumps(message)
            except Exception as err:
                message = ("err", _pack_error(err))
        except BaseException as err:
            message = ("err", _pack_error(err))
        # buffered output (streams given to fn, the standard ones) before os._exit; the
        # pumped pipes close with the process
        for value in (*real_args, *real_kwargs.values(), sys.stdout, sys.stderr):
            if not callable(value) and callable(getattr(value, "flush", None)):
                with contextlib.suppress(Exception):
                    value.flush()
        _send(out, message)
    except BaseException:
        code = 1
    finally:
        os._exit(code)
