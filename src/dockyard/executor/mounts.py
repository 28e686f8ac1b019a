"""``RUN --mount``: BuildKit's option syntax, and turning mounts into container mounts.

Parsing is pure (:func:`parse_run_mount`); the rest needs the resolved sources: a directory
of the context / a stage / an image for ``bind``, the store root for ``cache`` directories,
secret bytes for ``secret`` and an agent socket for ``ssh``. Nothing here ever writes a
secret anywhere but the private, per-run secrets directory the caller gives (on tmpfs).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from dockyard.errors import DockerfileError, ExecutorError
from dockyard.executor.spec import MountSpec, resolve_in_root

__all__ = [
    "DEFAULT_SSH_TARGET",
    "RunMount",
    "acquire_cache_dir",
    "bind_mount_spec",
    "cache_mount_spec",
    "parse_run_mount",
    "parse_size",
    "secret_mount",
    "ssh_mount",
    "tmpfs_mount_spec",
    "with_workdir",
]

MountType = Literal["bind", "cache", "tmpfs", "secret", "ssh"]
Sharing = Literal["shared", "private", "locked"]

_TYPES: tuple[MountType, ...] = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARING: tuple[Sharing, ...] = ("shared", "private", "locked")
_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "mode",
    "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "size", "env",
)
DEFAULT_SSH_TARGET = "/run/buildkit/ssh_agent.{index}"


@dataclass(frozen=True, slots=True)
class RunMount:
    """One ``--mount`` of a RUN, with BuildKit's defaults filled in.

    ``id`` is the cache id (defaults to the target), the secret id (``id``, else ``source``,
    else the target's base name) or the ssh id (``default``). ``target`` of a secret defaults
    to ``/run/secrets/<id>`` unless ``env`` is set; of ssh to ``/run/buildkit/ssh_agent.N``.
    """

    type: MountType
    target: str
    source: str = ""
    from_: str = ""
    id: str = ""
    sharing: Sharing = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    readonly: bool = True
    size: int | None = None
    env: str = ""


def _parse_bool(key: str, value: str) -> bool:
    # Go's strconv.ParseBool accepts exactly these.
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise DockerfileError(f"invalid value for {key}: {value}")


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$", re.IGNORECASE)


def parse_size(value: str) -> int:
    """A RAM size as docker/go-units ``RAMInBytes``: ``64m``, ``1g``, ``512k``, bytes (binary
    units)."""
    m = _SIZE_RE.match(value.strip())
    if not m:
        raise DockerfileError(f"invalid value for size: {value}")
    unit = m.group(2).lower()
    mult = 1024 ** ("kmgtp".index(unit) + 1) if unit else 1
    return int(float(m.group(1)) * mult)


def _suggest(word: str, choices: tuple[str, ...]) -> str | None:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]}?" if close else None


def parse_run_mount(value: str, *, index: int = 0) -> RunMount:
    """Parse one ``--mount=`` value (CSV ``key=value`` fields) as BuildKit does.

    ``index`` numbers ssh mounts for their default target. Raises DockerfileError (without a
    location; the caller adds it).
    """
    try:
        fields = next(csv.reader([value]))
    except (csv.Error, StopIteration) as err:
        raise DockerfileError(f"failed to parse csv mounts: {err}") from err
    kind: MountType = "bind"
    target = source = from_ = cache_id = env = ""
    sharing: Sharing | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required = False
    readonly: bool | None = None
    size: int | None = None
    for field in fields:
        key, has_value, raw = field.partition("=")
        key = key.lower()
        if not has_value:
            if key in ("readonly", "ro"):
                readonly = True
            elif key in ("readwrite", "rw"):
                readonly = False
            elif key == "required":
                if kind not in ("secret", "ssh"):
                    raise DockerfileError(f"unexpected key '{key}' for mount type '{kind}'")
                required = True
            else:
                raise DockerfileError(f"invalid field '{field}' must be a key=value pair")
            continue
        if key == "type":
            low = raw.lower()
            if low not in _TYPES:
                raise DockerfileError(
                    f"unsupported mount type {raw!r}", hint=_suggest(low, _TYPES)
                )
            kind = low
        elif key == "from":
            from_ = raw
        elif key in ("source", "src"):
            source = raw
        elif key in ("target", "dst", "destination"):
            target = raw
        elif key in ("readonly", "ro"):
            readonly = _parse_bool(key, raw)
        elif key in ("readwrite", "rw"):
            readonly = not _parse_bool(key, raw)
        elif key == "required":
            if kind not in ("secret", "ssh"):
                raise DockerfileError(f"unexpected key '{key}' for mount type '{kind}'")
            required = _parse_bool(key, raw)
        elif key == "size":
            if kind != "tmpfs":
                raise DockerfileError(f"unexpected key '{key}' for mount type '{kind}'")
            size = parse_size(raw)
        elif key == "id":
            cache_id = raw
        elif key == "sharing":
            low = raw.lower()
            if low not in _SHARING:
                raise DockerfileError(
                    f"unsupported sharing value {raw!r}", hint=_suggest(low, _SHARING)
                )
            sharing = low
        elif key == "mode":
            try:
                mode = int(raw, 8)
            except ValueError:
                raise DockerfileError(f"invalid value {raw} for mode") from None
            if mode < 0 or mode >= 2**32:
                raise DockerfileError(f"invalid value {raw} for mode")
        elif key in ("uid", "gid"):
            if not raw.isdigit() or int(raw) >= 2**32:
                raise DockerfileError(f"invalid value {raw} for {key}")
            if key == "uid":
                uid = int(raw)
            else:
                gid = int(raw)
        elif key == "env":
            if kind != "secret":
                raise DockerfileError(f"unexpected key '{key}' for mount type '{kind}'")
            env = raw
        else:
            raise DockerfileError(
                f"unexpected key '{key}' in '{field}'", hint=_suggest(key, _KEYS)
            )

    if kind not in ("secret", "ssh", "cache"):
        for name, v in (("mode", mode), ("uid", uid), ("gid", gid)):
            if v is not None:
                raise DockerfileError(f"{name} not allowed for {kind!r} type mounts")
    if readonly is None:
        readonly = kind not in ("cache", "tmpfs")
    if sharing is not None and kind != "cache":
        raise DockerfileError(f"invalid cache sharing set for {kind} mount")
    if kind == "secret":
        if from_:
            raise DockerfileError("secret mount should not have a from")
        if not source and not target and not cache_id and not env:
            raise DockerfileError("invalid secret mount. one of source, target required")
        if source and cache_id:
            raise DockerfileError("both source and id can't be set")
        cache_id = cache_id or source or (os.path.basename(target.rstrip("/")) if target else "")
        if not cache_id:
            raise DockerfileError("invalid secret mount: no id")
        if not target and not env:
            target = f"/run/secrets/{cache_id}"
        if mode is None:
            mode = 0o400
    elif kind == "ssh":
        if from_:
            raise DockerfileError("ssh mount should not have a from")
        cache_id = cache_id or "default"
        target = target or DEFAULT_SSH_TARGET.format(index=index)
        if mode is None:
            mode = 0o600
    elif kind in ("bind", "cache", "tmpfs"):
        if not target:
            raise DockerfileError(f"mount type {kind} requires a target")
        if kind == "cache":
            cache_id = cache_id or target
            if mode is None:
                mode = 0o755
        if kind == "tmpfs" and from_:
            raise DockerfileError("tmpfs mount should not have a from")
    return RunMount(
        type=kind, target=target, source=source, from_=from_, id=cache_id,
        sharing=sharing or "shared", mode=mode, uid=uid, gid=gid, required=required,
        readonly=readonly, size=size, env=env,
    )


def with_workdir(m: RunMount, workdir: str) -> RunMount:
    """``m`` with a relative target made absolute against ``workdir``."""
    if not m.target or m.target.startswith("/"):
        return m
    return replace(m, target=os.path.normpath(os.path.join(workdir or "/", m.target)))


def bind_mount_spec(m: RunMount, source_root: Path) -> MountSpec:
    """A ``type=bind`` mount of ``m.source`` inside ``source_root`` (the context, a stage or an
    image's root). Read-only unless ``rw``: then ``source_root`` must be a scratch copy or
    snapshot the caller throws away, since writes are discarded in BuildKit."""
    src = resolve_in_root(source_root, m.source or "/")
    if not os.path.lexists(src):
        raise ExecutorError(f"bind mount source {m.source or '/'} not found")
    return MountSpec(m.target, "bind", str(src), ("rbind", "ro" if m.readonly else "rw"))


def tmpfs_mount_spec(m: RunMount) -> MountSpec:
    """A ``type=tmpfs`` mount."""
    opts = ["nosuid", "nodev", "mode=1777"]
    if m.size:
        opts.append(f"size={m.size}")
    return MountSpec(m.target, "tmpfs", "tmpfs", tuple(opts))


def _cache_base(store_root: Path, cache_id: str) -> Path:
    # Cache ids are free text (often a path); a digest keeps the directory name safe.
    name = hashlib.sha256(cache_id.encode()).hexdigest()[:32]
    return store_root / "cache" / name


def _init_cache_dir(path: Path, m: RunMount) -> None:
    if path.is_dir():
        return
    from dockyard.rootless.idmap import check_ids

    check_ids(f"--mount=type=cache,id={m.id}", m.uid or 0, m.gid or 0)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, m.mode if m.mode is not None else 0o755)
    os.chown(path, m.uid or 0, m.gid or 0)


@contextlib.contextmanager
def acquire_cache_dir(store_root: Path, m: RunMount) -> Iterator[Path]:
    """The directory for cache mount ``m`` under ``<store_root>/cache/``, held for the run.

    ``shared``: one directory, any number of concurrent users. ``locked``: one directory, one
    user at a time (others wait). ``private``: the first free of ``data``, ``private-1``,
    ``private-2``... so concurrent users each get their own (kept for later builds, as
    BuildKit keeps them). A shared lock is held throughout so pruning can wait.
    """
    base = _cache_base(store_root, m.id)
    base.mkdir(parents=True, exist_ok=True)
    if not (base / "id").exists():
        (base / "id").write_text(m.id)
    with contextlib.ExitStack() as stack:
        if m.sharing == "private":
            n = 0
            while True:
                name = "data" if n == 0 else f"private-{n}"
                lf = stack.enter_context(open(base / f"{name}.lock", "a+b"))
                try:
                    fcntl.flock(lf, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    lf.close()
                    n += 1
                    continue
                break
            path = base / name
        else:
            lf = stack.enter_context(open(base / "data.lock", "a+b"))
            fcntl.flock(lf, fcntl.LOCK_EX if m.sharing == "locked" else fcntl.LOCK_SH)
            path = base / "data"
        _init_cache_dir(path, m)
        yield path


def cache_mount_spec(m: RunMount, cache_dir: Path) -> MountSpec:
    """A ``type=cache`` mount of a directory from :func:`acquire_cache_dir`."""
    return MountSpec(m.target, "bind", str(cache_dir), ("rbind", "ro" if m.readonly else "rw"))


def secret_mount(
    m: RunMount, value: bytes | None, secrets_dir: Path
) -> tuple[MountSpec | None, tuple[str, ...]]:
    """The mount and environment entries for secret ``m`` with content ``value``.

    ``value`` None means the secret was not supplied: an error if ``required``, else no
    mount. The file is written in ``secrets_dir`` (private, on tmpfs, removed by the caller
    after the run) with the mount's mode/uid/gid; ``env=NAME`` puts the value in the process
    environment only (never the image config).
    """
    if value is None:
        if m.required:
            raise ExecutorError(f"secret {m.id} not found", hint=f"pass --secret id={m.id},...")
        return None, ()
    env: tuple[str, ...] = ()
    if m.env:
        try:
            text = value.decode()
        except UnicodeDecodeError as err:
            raise ExecutorError(f"secret {m.id} is not text and cannot go in env") from err
        env = (f"{m.env}={text}",)
    if not m.target:
        return None, env
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = hashlib.sha256(m.id.encode()).hexdigest()[:16]
    path = secrets_dir / name
    from dockyard.rootless.idmap import check_ids

    check_ids(f"--mount=type=secret,id={m.id}", m.uid or 0, m.gid or 0)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, value)
        os.fchown(fd, m.uid or 0, m.gid or 0)
        os.fchmod(fd, m.mode if m.mode is not None else 0o400)
    finally:
        os.close(fd)
    return MountSpec(m.target, "bind", str(path), ("rbind", "ro", "nosuid", "nodev", "noexec")), env


def ssh_mount(m: RunMount, socket: str | None) -> tuple[MountSpec | None, tuple[str, ...]]:
    """Bind the agent socket given by ``--ssh <id>=SOCKET`` at the mount's target and point
    SSH_AUTH_SOCK at it. ``socket`` None: an error if ``required``, else no mount but still
    SSH_AUTH_SOCK (BuildKit sets it from the LLB exec whether or not an agent is there)."""
    if socket is None:
        if m.required:
            raise ExecutorError(f"ssh agent {m.id} not found", hint=f"pass --ssh {m.id}")
        return None, (f"SSH_AUTH_SOCK={m.target}",)
    if not os.path.exists(socket):
        raise ExecutorError(f"ssh agent socket {socket} does not exist")
    return MountSpec(m.target, "bind", socket, ("rbind", "rw")), (f"SSH_AUTH_SOCK={m.target}",)
