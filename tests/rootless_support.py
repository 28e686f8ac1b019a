"""Running dockyard as an ordinary user in tests (rootless mode, docs/rootless.md).

* :func:`ordinary_user` makes a user (``useradd``, a home directory) with subordinate ids
  in /etc/subuid and /etc/subgid (useradd's own, else ``usermod --add-subuids``), or
  without any (``subids=False``); :meth:`OrdinaryUser.remove` deletes it and its entries.
* :func:`readable_venv` makes a virtualenv of the system python that any user can read: the
  repository's own ``.venv`` may live where other users cannot go (a CI clone under a 0700
  directory, a pyenv python under /root). It holds a copy of ``src/dockyard`` and of the
  installed runtime dependencies, and a ``bin/dockyard`` script.
* :meth:`OrdinaryUser.run` runs a command as the user (``setpriv``), with a clean environment.

Tests need root to make users; :func:`rootless_skip_reason` says why they cannot run.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
# what the dockyard package needs at run time (pyproject's dependencies and theirs)
_RUNTIME_PACKAGES = ("isal", "zstandard", "rich", "httpx", "httpcore", "h11", "anyio",
                     "idna", "certifi", "sniffio", "markdown_it", "mdurl", "pygments",
                     "typing_extensions.py")


def rootless_skip_reason() -> str | None:
    """Why rootless tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (to make an ordinary user)"
    for tool in ("useradd", "userdel", "setpriv", "newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install passwd util-linux uidmap)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"no system python at {SYSTEM_PYTHON}"
    if not (shutil.which("runc") or shutil.which("crun")):
        return "no OCI runtime (apt-get install runc)"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"user namespaces are not available here: {probe.stderr.strip()}"
    return None


@dataclass
class OrdinaryUser:
    """An ordinary user made for a test."""

    name: str
    uid: int
    gid: int
    home: Path
    subids: bool
    added_subids: list[str] = field(default_factory=list)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A login-like environment: HOME, USER, PATH; nothing of root's."""
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
               "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
        env.update(extra or {})
        return env

    def run(self, argv: Sequence[str | os.PathLike[str]], *,
            env: Mapping[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this user (real and effective ids, its own groups)."""
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
               "--", *map(str, argv)]
        proc = subprocess.run(cmd, env=self.env(env), cwd=cwd or self.home,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"as {self.name}: {' '.join(map(str, argv))} exited "
                                 f"{proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def chown(self, path: Path) -> Path:
        """Give ``path`` (recursively) to this user."""
        subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)], check=True)
        return path

    def remove(self) -> None:
        """Delete the user, its home and the subordinate ids it was given."""
        for line in self.added_subids:
            for db in ("/etc/subuid", "/etc/subgid"):
                _drop_line(db, line)
        subprocess.run(["userdel", "-r", "-f", self.name], capture_output=True, check=False)
        for db in ("/etc/subuid", "/etc/subgid"):
            _drop_owner(db, self.name)
        shutil.rmtree(self.home, ignore_errors=True)


def _drop_line(db: str, line: str) -> None:
    try:
        lines = Path(db).read_text().splitlines()
    except OSError:
        return
    kept = [entry for entry in lines if entry != line]
    if kept != lines:
        Path(db).write_text("".join(entry + "\n" for entry in kept))


def _drop_owner(db: str, name: str) -> None:
    try:
        lines = Path(db).read_text().splitlines()
    except OSError:
        return
    kept = [entry for entry in lines if entry.split(":", 1)[0] != name]
    if kept != lines:
        Path(db).write_text("".join(entry + "\n" for entry in kept))


def _owners_ranges(db: str, name: str) -> list[str]:
    try:
        return [line for line in Path(db).read_text().splitlines()
                if line.split(":", 1)[0] == name]
    except OSError:
        return []


def _free_range(count: int = 65536) -> int:
    """A start of ``count`` ids used by no line of /etc/subuid or /etc/subgid."""
    used: list[tuple[int, int]] = []
    for db in ("/etc/subuid", "/etc/subgid"):
        for line in Path(db).read_text().splitlines() if Path(db).exists() else []:
            parts = line.split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                used.append((int(parts[1]), int(parts[2])))
    start = 200000
    while any(s < start + count and start < s + n for s, n in used):
        start += count
    return start


def ordinary_user(prefix: str = "dyrl", *, subids: bool = True) -> OrdinaryUser:
    """A new user ``<prefix><random>`` with a home directory (and subordinate ids)."""
    name = f"{prefix}{os.urandom(3).hex()}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--user-group", name],
                   check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    user = OrdinaryUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), subids)
    os.chmod(user.home, 0o700)
    if subids:
        if not (_owners_ranges("/etc/subuid", name) and _owners_ranges("/etc/subgid", name)):
            start = _free_range()
            subprocess.run(["usermod", "--add-subuids", f"{start}-{start + 65535}",
                            "--add-subgids", f"{start}-{start + 65535}", name],
                           check=True, capture_output=True)
            user.added_subids.append(f"{name}:{start}:65536")
    else:
        for db in ("/etc/subuid", "/etc/subgid"):
            _drop_owner(db, name)  # useradd may have given some
    return user


def subordinate_start(user: OrdinaryUser) -> int:
    """The first subordinate uid of ``user`` (in-container uid 1 is this on the host)."""
    return int(_owners_ranges("/etc/subuid", user.name)[0].split(":")[1])


@functools.cache
def readable_venv() -> Path:
    """A virtualenv of the system python with this checkout's dockyard, readable by all;
    made once per test process, removed at exit. Returns its directory."""
    import atexit

    # pytest-xdist workers may end without running atexit: the pid in the name lets a later
    # run remove the virtualenvs of processes that are gone
    for old in Path("/var/tmp").glob("dockyard-rootless-venv-*-*"):
        pid = old.name.split("-")[3]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    base = Path(tempfile.mkdtemp(prefix=f"dockyard-rootless-venv-{os.getpid()}-",
                                 dir="/var/tmp"))
    atexit.register(shutil.rmtree, base, True)
    return make_readable_venv(base)


def make_readable_venv(base: Path) -> Path:
    """:func:`readable_venv` in ``base`` (an empty directory), kept (bench/peers uses it)."""
    venv = base / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True)
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(f'{sys.version_info[0]}"
                              ".{sys.version_info[1]}')"], capture_output=True, text=True,
                             check=True).stdout.strip()
    site = venv / "lib" / f"python{version}" / "site-packages"
    here = Path(next(p for p in sys.path if p.endswith("site-packages")
                     and (Path(p) / "isal").exists()))
    for name in _RUNTIME_PACKAGES:
        src = here / name
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, site / name)
    shutil.copytree(REPO / "src" / "dockyard", site / "dockyard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = venv / "bin" / "dockyard"
    script.write_text(f"#!{venv}/bin/python\nfrom dockyard.cli.main import entry\nentry()\n")
    script.chmod(0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    os.chmod(base, 0o755)
    return venv


def base_archive(root_store: Path, images: Sequence[str], dest_dir: Path) -> Path:
    """``dockyard save`` of ``images`` from a root store, readable by every user."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / "bases.tar"
    exe = Path(sys.executable).parent / "dockyard"
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "dockyard.cli.main"]
    subprocess.run([*cli, "--root", str(root_store), "save", "-o", str(out), *images],
                   check=True, capture_output=True, timeout=600)
    os.chmod(out, 0o644)
    os.chmod(dest_dir, 0o755)
    return out
