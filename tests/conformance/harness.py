"""The conformance harness: base images, a private dockerd, builders, and scenarios.

The reference builder is BuildKit as built into dockerd 20.10 (Debian ``docker.io``), driven
by the 20.10 client at /usr/bin/docker with ``DOCKER_BUILDKIT=1``. The candidate is dockyard
(``CONFORMANCE_CANDIDATE=dockyard``, the default); ``buildah`` and ``buildkit`` (BuildKit
against itself) are there to check the comparator and the scenarios.

Everything generated goes under ``$CONFORMANCE_WORK`` (default /var/tmp/dockyard-conformance):
cached base rootfs tarballs, the dockerd data-root, per-run outputs and logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
SCENARIO_DIR = HERE / "scenarios"
REPO = HERE.parents[1]
WORK = Path(os.environ.get("CONFORMANCE_WORK", "/var/tmp/dockyard-conformance"))
DOCKER_BIN = os.environ.get("CONFORMANCE_DOCKER", "/usr/bin/docker")
DOCKERD_BIN = os.environ.get("CONFORMANCE_DOCKERD", "/usr/sbin/dockerd")
BUILD_TIMEOUT = int(os.environ.get("CONFORMANCE_BUILD_TIMEOUT", "600"))

BUSYBOX_REF = "busybox:latest"
DEBIAN_REF = "debian:bookworm"


class HarnessError(Exception):
    """The harness itself could not do its job (daemon, base image, broken scenario)."""


class BuildFailed(Exception):
    """A builder returned non-zero; ``log`` holds its output."""

    def __init__(self, builder: str, rc: int, log: str) -> None:
        super().__init__(f"{builder} build failed (exit {rc})")
        self.builder = builder
        self.rc = rc
        self.log = log


# ----------------------------------------------------------------------------- processes


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = BUILD_TIMEOUT,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, output captured (stderr merged into stdout)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [str(c) for c in cmd],
        env=full_env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise HarnessError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    return proc


def worker_id() -> str:
    """The pytest-xdist worker name ("gw0"...), or "main" without xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def unmount_below(*roots: Path) -> list[str]:
    """Lazily unmount anything still mounted below ``roots``; returns what was unmounted."""
    prefixes = [str(r.resolve()).rstrip("/") + "/" for r in roots]
    mounts: list[str] = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].replace("\\040", " ")
            if any(target.startswith(p) or target + "/" == p for p in prefixes):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
    return mounts


# ----------------------------------------------------------------------------- base images


def _cached(out: Path, make: Callable[[Path], None]) -> Path:
    """Make ``out`` once (atomically: a temp name, then rename), under a lock."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists() and out.stat().st_size > 0:
            return out
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        make(tmp)
        tmp.rename(out)
    return out


def busybox_rootfs_tar(cache_dir: Path) -> Path:
    """The busybox rootfs tarball: tests/bases.py's when present, else made here.

    Same recipe as the peers' mk-busybox.sh: Debian's busybox-static, one absolute symlink
    per applet, a two-user /etc/passwd, a sorted tar with fixed mtime and numeric root owner.
    """
    tests_dir = str(REPO / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    try:
        import bases  # type: ignore[import-not-found]
    except ImportError:
        bases = None
    if bases is not None and hasattr(bases, "busybox_rootfs_tar"):
        return Path(bases.busybox_rootfs_tar(cache_dir))
    return _cached(cache_dir / "busybox-rootfs.tar", _make_busybox_rootfs)


def _make_busybox_rootfs(out: Path) -> None:
    bb = shutil.which("busybox")
    if bb is None:
        raise HarnessError("busybox not found: apt-get install busybox-static")
    if subprocess.run(["ldd", bb], capture_output=True).returncode == 0:
        raise HarnessError(f"{bb} is not static: apt-get install busybox-static")
    with tempfile.TemporaryDirectory() as tmp:
        r = Path(tmp) / "rootfs"
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "var/tmp"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "tmp").mkdir()
        shutil.copy2(bb, r / "bin/busybox")
        os.chmod(r / "bin/busybox", 0o755)
        applets = run([r / "bin/busybox", "--list-full"]).stdout.split()
        for rel in applets:
            if rel == "bin/busybox":
                continue
            p = r / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_symlink() or p.exists():
                p.unlink()
            p.symlink_to("/bin/busybox")
        (r / "etc/passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        )
        (r / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
        for p in [r, *r.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
            elif p.is_file() and not p.is_symlink() and p.name != "busybox":
                os.chmod(p, 0o644)
        os.chmod(r / "tmp", 0o1777)
        run(["tar", "--sort=name", "--mtime=2024-01-01 00:00:00Z", "--owner=0", "--group=0",
             "--numeric-owner", "-C", r, "-cf", out, "."])


def debian_rootfs_tar(cache_dir: Path) -> Path:
    """A debian bookworm minbase rootfs with gcc and libc6-dev (debootstrap, cached)."""
    return _cached(cache_dir / "debian-rootfs.tar", _make_debian_rootfs)


def _apt_mirror() -> str:
    if os.environ.get("MIRROR"):
        return os.environ["MIRROR"]
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in src.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    apt_list = Path("/etc/apt/sources.list")
    if apt_list.exists():
        for line in apt_list.read_text().splitlines():
            if line.startswith("deb ") and "security" not in line:
                return line.split()[1]
    raise HarnessError("no apt mirror found for debootstrap; set MIRROR")


def _make_debian_rootfs(out: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise HarnessError("debootstrap not found: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        r = Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase", "--include=gcc,libc6-dev", "bookworm", r,
             _apt_mirror()], timeout=1800)
        for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                        "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "var/log/*.log",
                        "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "dev/*", "proc/*", "sys/*"):
            for p in r.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        run(["tar", "--sort=name", "--numeric-owner", "--xattrs", "-C", r, "-cf", out, "."], timeout=600)


@dataclass(frozen=True)
class BaseImage:
    """A locally made base: its rootfs tar and the `docker save` archive of its image."""

    ref: str
    rootfs: Path
    archive: Path  # docker-save tar, loadable by every builder


# ----------------------------------------------------------------------------- dockerd


class Dockerd:
    """A private dockerd (overlay2, no bridge, no iptables) on its own socket and roots."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.exec_root = Path(tempfile.mkdtemp(prefix="dyc-", dir="/run" if os.access("/run", os.W_OK) else None))
        self.sock = self.exec_root / "docker.sock"
        self._lock_file: object | None = None
        self.data_root = self._claim_data_root()
        self.log = work / "logs" / f"dockerd-{worker_id()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_dir = self.exec_root / "client-config"
        self.config_dir.mkdir()

    def _claim_data_root(self) -> Path:
        # A persistent data-root keeps imported bases between runs; a concurrent session
        # (another worker or user) gets a throwaway one instead of sharing it.
        root = self.work / f"docker-{worker_id()}"
        root.parent.mkdir(parents=True, exist_ok=True)
        lock = open(self.work / f"docker-{worker_id()}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            self.temp_root = True
            return Path(tempfile.mkdtemp(prefix="docker-tmp-", dir=self.work))
        self._lock_file = lock
        self.temp_root = False
        self._reap_stale(root)
        return root

    def _reap_stale(self, root: Path) -> None:
        pidfile = root.with_suffix(".pid")
        if not pidfile.exists():
            return
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            args = cmdline.split("\0")
            if "dockerd" in args[0] and str(root) in args:
                os.kill(pid, signal.SIGTERM)
                for _ in range(60):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.5)
                if "--exec-root" in args:
                    exec_root = Path(args[args.index("--exec-root") + 1]).parent
                    unmount_below(exec_root)
                    if exec_root.name.startswith("dyc-"):
                        shutil.rmtree(exec_root, ignore_errors=True)
        unmount_below(root)

    @property
    def env(self) -> dict[str, str]:
        """Client environment: this daemon, BuildKit on, a private client config."""
        return {
            "DOCKER_HOST": f"unix://{self.sock}",
            "DOCKER_BUILDKIT": "1",
            "DOCKER_CONFIG": str(self.config_dir),
        }

    def start(self, timeout: float = 60) -> None:
        """Start the daemon and wait until the client can talk to it."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        cmd = [
            DOCKERD_BIN,
            "--host", f"unix://{self.sock}",
            "--pidfile", str(self.exec_root / "dockerd.pid"),
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root / "exec"),
            "--storage-driver", "overlay2",
            "--iptables=false", "--ip-masq=false", "--bridge=none",
            "--log-level", "warn",
        ]
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        logf.close()
        self.data_root.with_suffix(".pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.docker("version", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-3000:]
        self.stop()
        raise HarnessError(f"dockerd did not come up; log {self.log}:\n{tail}")

    def docker(self, *args: str | os.PathLike[str], check: bool = True,
               timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run the 20.10 client against this daemon."""
        return run([DOCKER_BIN, *args], env=self.env, check=check, timeout=timeout)

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL), unmount leftovers, remove the exec-root."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        unmount_below(self.exec_root, self.data_root)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.data_root.with_suffix(".pid").unlink()
        if self.temp_root:
            shutil.rmtree(self.data_root, ignore_errors=True)


# ----------------------------------------------------------------------------- builders


@dataclass(frozen=True)
class BuildRequest:
    """One build, builder-independent."""

    dockerfile: Path
    context: Path
    tag: str
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    secrets: Mapping[str, Path] = field(default_factory=dict)


class Builder(Protocol):
    """What the harness needs from a builder."""

    name: str

    def load_base(self, base: BaseImage) -> None: ...
    def build(self, req: BuildRequest) -> str: ...  # returns the build log; raises BuildFailed
    def export(self, tag: str, out: Path) -> Path: ...  # an archive compare.py can read


def _common_flags(req: BuildRequest) -> list[str]:
    flags: list[str] = []
    for k, v in req.build_args.items():
        flags += ["--build-arg", f"{k}={v}"]
    if req.target:
        flags += ["--target", req.target]
    for sid, src in req.secrets.items():
        flags += ["--secret", f"id={sid},src={src}"]
    return flags


class BuildKitBuilder:
    """BuildKit inside dockerd 20.10: the reference."""

    name = "buildkit"

    def __init__(self, daemon: Dockerd) -> None:
        self.daemon = daemon

    def load_base(self, base: BaseImage) -> None:
        """The bases are imported into dockerd by ``prepare_bases``; nothing to do."""

    def build(self, req: BuildRequest) -> str:
        """``docker build`` with BuildKit, host network (the daemon has no bridge)."""
        proc = self.daemon.docker(
            "build", "--network", "host", "--progress", "plain", "-f", req.dockerfile,
            "-t", req.tag, *_common_flags(req), req.context, check=False,
        )
        if proc.returncode != 0:
            raise BuildFailed(self.name, proc.returncode, proc.stdout)
        return proc.stdout

    def export(self, tag: str, out: Path) -> Path:
        """``docker save`` of the tag."""
        self.daemon.docker("save", "-o", out, tag)
        return out


class DockyardBuilder:
    """dockyard's CLI from the repo's virtualenv, with a private ``--root``."""

    name = "dockyard"

    def __init__(self, root: Path) -> None:
        self.root = root
        exe = Path(sys.executable).parent / "dockyard"
        self.cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "dockyard.cli.main"]
        self._exports: dict[str, Path] = {}

    def _cmd(self, *args: str | os.PathLike[str], check: bool = False) -> subprocess.CompletedProcess[str]:
        return run([*self.cli, "--root", str(self.root), *args], check=check)

    def load_base(self, base: BaseImage) -> None:
        """``dockyard load -i`` of the docker-save archive, else ``dockyard import`` of the rootfs."""
        proc = self._cmd("load", "-i", base.archive)
        if proc.returncode == 0:
            return
        proc2 = self._cmd("import", base.rootfs, base.ref)
        if proc2.returncode != 0:
            raise HarnessError(
                f"dockyard cannot load {base.ref}:\nload: {proc.stdout[-1500:]}\nimport: {proc2.stdout[-1500:]}"
            )

    def build(self, req: BuildRequest) -> str:
        """``dockyard build`` writing an OCI archive next to the context."""
        dest = req.context.parent / f"dockyard-{req.tag.replace('/', '_').replace(':', '_')}.oci.tar"
        proc = self._cmd(
            "build", "-f", req.dockerfile, "-t", req.tag, *_common_flags(req),
            "--output", f"type=oci,dest={dest}", "--progress", "plain", req.context,
        )
        if proc.returncode != 0:
            raise BuildFailed(self.name, proc.returncode, proc.stdout)
        self._exports[req.tag] = dest
        return proc.stdout

    def export(self, tag: str, out: Path) -> Path:
        """The archive the build wrote, else ``dockyard save``."""
        if tag in self._exports and self._exports[tag].exists():
            return self._exports[tag]
        self._cmd("save", "-o", out, tag, check=True)
        return out


class RootlessDockyardBuilder(DockyardBuilder):
    """dockyard as an ordinary user (rootless, docs/rootless.md): the CLI of a virtualenv
    that user can read, a store in its home, each build on a copy of the context and the
    Dockerfile the user owns (the run directory is root's)."""

    name = "dockyard-rootless"

    def __init__(self, user: Any, venv: Path) -> None:
        super().__init__(user.home / "store")
        self.user = user
        self.cli = [str(venv / "bin" / "dockyard")]
        self.work = user.home / "builds"
        self.work.mkdir(exist_ok=True)
        user.chown(self.work)
        self._builds = 0

    def _cmd(self, *args: str | os.PathLike[str], check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = self.user.run([*self.cli, "--root", str(self.root), *args], check=False,
                             timeout=BUILD_TIMEOUT)
        merged = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout + proc.stderr)
        if check and proc.returncode != 0:
            raise HarnessError(f"dockyard (rootless) {' '.join(map(str, args))} failed:\n"
                               f"{merged.stdout[-4000:]}")
        return merged

    def load_base(self, base: BaseImage) -> None:
        """Load a readable copy of the base's archive."""
        copy = self.work / f"base-{base.ref.replace(':', '_')}.tar"
        shutil.copyfile(base.archive, copy)
        self.user.chown(copy)
        self._cmd("load", "-i", copy, check=True)
        copy.unlink()

    def build(self, req: BuildRequest) -> str:
        """The build on copies the user owns; the OCI archive lands in its directory."""
        self._builds += 1
        here = self.work / f"b{self._builds}"
        ctx = here / "ctx"
        shutil.copytree(req.context, ctx, symlinks=True)
        dockerfile = here / "Dockerfile"
        shutil.copyfile(req.dockerfile, dockerfile)
        secrets = {}
        for sid, src in req.secrets.items():
            secrets[sid] = here / f"secret-{sid}"
            shutil.copyfile(src, secrets[sid])
        self.user.chown(here)
        # chown clears setuid and setgid bits: give the copies their modes back
        for src in [req.context, *req.context.rglob("*")]:
            dst = ctx / src.relative_to(req.context)
            if not src.is_symlink():
                os.chmod(dst, src.stat().st_mode & 0o7777)
        copied = BuildRequest(dockerfile, ctx, req.tag, req.build_args, req.target, secrets)
        return super().build(copied)


class BuildahBuilder:
    """buildah bud (chroot isolation, docker format): a second opinion for the comparator."""

    name = "buildah"

    def __init__(self, root: Path, runroot: Path) -> None:
        self.flags = ["--root", str(root), "--runroot", str(runroot), "--storage-driver", "overlay"]

    def load_base(self, base: BaseImage) -> None:
        """Pull the docker-save archive into buildah's store under the base's name."""
        run(["buildah", *self.flags, "pull", "-q", f"docker-archive:{base.archive}"])
        run(["buildah", *self.flags, "tag", f"docker.io/library/{base.ref}", base.ref], check=False)

    def build(self, req: BuildRequest) -> str:
        """``buildah bud`` with the same flags BuildKit gets."""
        proc = run(["buildah", *self.flags, "bud", "--isolation", "chroot", "--pull=never",
                    "--format", "docker", "--layers", "-f", req.dockerfile, "-t", req.tag,
                    *_common_flags(req), req.context], check=False)
        if proc.returncode != 0:
            raise BuildFailed(self.name, proc.returncode, proc.stdout)
        return proc.stdout

    def export(self, tag: str, out: Path) -> Path:
        """``buildah push`` to a docker-archive."""
        out.unlink(missing_ok=True)
        run(["buildah", *self.flags, "push", "-q", tag, f"docker-archive:{out}:{tag}"])
        return out


# ----------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class ParentImage:
    """An image a scenario needs built first (e.g. an ONBUILD parent)."""

    dockerfile: str
    tag: str
    reference_dockerfile: str | None = None


@dataclass(frozen=True)
class Scenario:
    """A directory under scenarios/: Dockerfile, context, args.json, expect_fail..."""

    name: str
    path: Path
    build_args: Mapping[str, str]
    target: str | None
    secrets: Mapping[str, str]  # id -> path relative to the context
    parents: tuple[ParentImage, ...]
    expect_fail: bool
    needs_debian: bool
    # Config fields the 1.2-syntax reference cannot produce, spelled out from BuildKit's
    # documentation; they replace the reference image's values before comparing.
    reference_config: Mapping[str, object] = field(default_factory=dict)
    # Empty directories dockerd 20.10's BuildKit leaves at RUN --mount targets (newer
    # BuildKit removes them); dropped from the reference, so the candidate must not have them.
    reference_mount_stubs: tuple[str, ...] = ()

    @property
    def dockerfile(self) -> Path:
        """The Dockerfile every candidate builds."""
        return self.path / "Dockerfile"

    @property
    def reference_dockerfile(self) -> Path:
        """What BuildKit 1.2-syntax builds: Dockerfile.reference if present."""
        ref = self.path / "Dockerfile.reference"
        return ref if ref.exists() else self.dockerfile

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """Read a scenario directory."""
        args_file = path / "args.json"
        args = json.loads(args_file.read_text()) if args_file.exists() else {}
        unknown = set(args) - {"build_args", "target", "secrets", "parents", "reference_config",
                                   "reference_mount_stubs", "comment"}
        if unknown:
            raise HarnessError(f"{args_file}: unknown keys {sorted(unknown)}")
        texts = [p.read_text() for p in path.glob("Dockerfile*")]
        return cls(
            name=path.name,
            path=path,
            build_args=dict(args.get("build_args", {})),
            target=args.get("target"),
            secrets=dict(args.get("secrets", {})),
            parents=tuple(ParentImage(**p) for p in args.get("parents", [])),
            expect_fail=(path / "expect_fail").exists(),
            needs_debian=any(DEBIAN_REF in t for t in texts),
            reference_config=dict(args.get("reference_config", {})),
            reference_mount_stubs=tuple(args.get("reference_mount_stubs", ())),
        )

    def prepare_context(self, dest: Path) -> Path:
        """Make the build context: copy context/, then run setup.py inside it."""
        if dest.exists():
            shutil.rmtree(dest)
        src = self.path / "context"
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True)
        else:
            dest.mkdir(parents=True)
        setup = self.path / "setup.py"
        if setup.exists():
            run([sys.executable, setup, dest], cwd=dest, timeout=120, env={"PYTHONPATH": str(HERE)})
        return dest

    def request(self, *, reference: bool, context: Path, dockerfile: Path | None = None,
                tag: str | None = None) -> BuildRequest:
        """The build request for one side."""
        df = dockerfile or (self.reference_dockerfile if reference else self.dockerfile)
        return BuildRequest(
            dockerfile=df,
            context=context,
            tag=tag or f"conformance/{self.name}:latest",
            build_args=self.build_args,
            target=self.target,
            secrets={k: context / v for k, v in self.secrets.items()},
        )


def discover_scenarios() -> list[Scenario]:
    """Every scenario directory, sorted by name."""
    if not SCENARIO_DIR.is_dir():
        return []
    return [Scenario.load(p) for p in sorted(SCENARIO_DIR.iterdir()) if (p / "Dockerfile").exists()]


# ----------------------------------------------------------------------------- environment


class Environment:
    """A started reference daemon, the candidate builder, and loaded bases (one per session)."""

    def __init__(self, work: Path = WORK, candidate: str | None = None) -> None:
        self.work = work
        self.candidate_name = candidate or os.environ.get("CONFORMANCE_CANDIDATE", "dockyard")
        self.daemon = Dockerd(work)
        self.reference = BuildKitBuilder(self.daemon)
        self.session_dir = Path(tempfile.mkdtemp(prefix=f"run-{worker_id()}-", dir=work))
        self.candidate: Builder = self._make_candidate()
        self.bases: dict[str, BaseImage] = {}
        self._loaded: set[tuple[str, str]] = set()

    def _make_candidate(self) -> Builder:
        if self.candidate_name == "dockyard":
            return DockyardBuilder(self.session_dir / "dockyard-root")
        if self.candidate_name == "buildah":
            return BuildahBuilder(self.session_dir / "buildah-root", self.daemon.exec_root / "buildah")
        if self.candidate_name == "buildkit":
            return self.reference
        raise HarnessError(f"unknown CONFORMANCE_CANDIDATE {self.candidate_name!r}")

    def start(self) -> None:
        """Start dockerd and make the busybox base available to both builders."""
        self.daemon.start()
        self.ensure_base(BUSYBOX_REF)

    def ensure_base(self, ref: str) -> BaseImage:
        """Make, import and load one base image (idempotent, cached across runs)."""
        base = self.bases.get(ref)
        if base is None:
            cache = self.work / "bases"
            rootfs = busybox_rootfs_tar(cache) if ref == BUSYBOX_REF else debian_rootfs_tar(cache)
            cmd = '["/bin/sh"]' if ref == BUSYBOX_REF else '["bash"]'
            archive = self._import_into_docker(ref, rootfs, cmd)
            base = BaseImage(ref, rootfs, archive)
            self.bases[ref] = base
        for builder in (self.candidate,):
            key = (builder.name, ref)
            if key not in self._loaded:
                builder.load_base(base)
                self._loaded.add(key)
        return base

    def _import_into_docker(self, ref: str, rootfs: Path, cmd: str) -> Path:
        name = ref.split(":")[0]
        archive = self.work / "bases" / f"{name}.docker.tar"
        stamp = self.daemon.data_root.with_name(self.daemon.data_root.name + f".{name}.stamp")
        st = rootfs.stat()
        key = f"{rootfs} {st.st_size} {st.st_mtime_ns}"
        inspect = self.daemon.docker("image", "inspect", "-f", "{{.Id}}", ref, check=False)
        image_id = inspect.stdout.strip() if inspect.returncode == 0 else ""
        recorded = stamp.read_text().splitlines() if stamp.exists() else []
        if not (image_id and recorded == [key, image_id]):
            self.daemon.docker("import", "-c", f"CMD {cmd}", rootfs, ref, timeout=900)
            image_id = self.daemon.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()
            if not self.daemon.temp_root:
                stamp.write_text(f"{key}\n{image_id}\n")
        arch_stamp = archive.with_suffix(".id")
        if not (archive.exists() and arch_stamp.exists() and arch_stamp.read_text() == image_id):
            with open(archive.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                tmp = archive.with_name(archive.name + f".tmp{os.getpid()}")
                self.daemon.docker("save", "-o", tmp, ref, timeout=900)
                tmp.rename(archive)
                arch_stamp.write_text(image_id)
        return archive

    def stop(self) -> None:
        """Stop dockerd, unmount leftovers, drop the per-run directory unless asked to keep it."""
        self.daemon.stop()
        unmount_below(self.session_dir)
        if not os.environ.get("CONFORMANCE_KEEP"):
            shutil.rmtree(self.session_dir, ignore_errors=True)


@contextlib.contextmanager
def environment(candidate: str | None = None) -> Iterator[Environment]:
    """Start an Environment and always stop it."""
    env = Environment(candidate=candidate)
    try:
        env.start()
        yield env
    finally:
        env.stop()


def have_reference() -> str | None:
    """None when the reference builder can run here, else why not."""
    for exe in (DOCKER_BIN, DOCKERD_BIN):
        if not os.access(exe, os.X_OK):
            return f"{exe} not found (apt-get install docker.io containerd runc)"
    if os.geteuid() != 0:
        return "dockerd needs root"
    return None


# ----------------------------------------------------------------------------- one scenario


@dataclass(frozen=True)
class ScenarioResult:
    """The outcome of one scenario: passed, and if not, why."""

    name: str
    passed: bool
    summary: str  # one line
    details: str  # differences or a build log tail
    reference_seconds: float
    candidate_seconds: float


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_scenario(env: Environment, scenario: Scenario) -> ScenarioResult:
    """Build a scenario with BuildKit and the candidate, export both, compare."""
    import compare  # sibling module; the tests directory is on sys.path

    out = env.session_dir / scenario.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if scenario.needs_debian:
        env.ensure_base(DEBIAN_REF)
    ref_ctx = scenario.prepare_context(out / "ctx-reference")
    cand_ctx = scenario.prepare_context(out / "ctx-candidate")

    def build(builder: Builder, reference: bool, ctx: Path) -> tuple[str | None, float]:
        t0 = time.monotonic()
        logs = []
        try:
            for parent in scenario.parents:
                df = parent.reference_dockerfile if reference and parent.reference_dockerfile else parent.dockerfile
                logs.append(builder.build(scenario.request(
                    reference=reference, context=ctx, dockerfile=scenario.path / df, tag=parent.tag)))
            logs.append(builder.build(scenario.request(reference=reference, context=ctx)))
        except BuildFailed as e:
            (out / f"{builder.name}-{'ref' if reference else 'cand'}.log").write_text(e.log)
            return e.log, time.monotonic() - t0
        (out / f"{builder.name}-{'ref' if reference else 'cand'}.log").write_text("\n".join(logs))
        return None, time.monotonic() - t0

    ref_err, ref_s = build(env.reference, True, ref_ctx)
    cand_err, cand_s = build(env.candidate, False, cand_ctx)

    def result(passed: bool, summary: str, details: str = "") -> ScenarioResult:
        (out / "result.txt").write_text(f"{summary}\n{details}\n")
        return ScenarioResult(scenario.name, passed, summary, details, ref_s, cand_s)

    if scenario.expect_fail:
        if ref_err is None:
            return result(False, "scenario broken: BuildKit built a scenario marked expect_fail")
        if cand_err is None:
            return result(False, f"{env.candidate.name} built what BuildKit rejects",
                          "BuildKit said:\n" + _tail(ref_err, 15))
        return result(True, "both builders failed, as expected")
    if ref_err is not None:
        return result(False, "scenario broken: the BuildKit reference build failed", _tail(ref_err))
    if cand_err is not None:
        return result(False, f"{env.candidate.name} build failed", _tail(cand_err))
    tag = f"conformance/{scenario.name}:latest"
    ref_snap = compare.load_image_archive(env.reference.export(tag, out / "reference.tar"), ref=tag)
    if scenario.reference_mount_stubs:
        try:
            ref_snap = compare.drop_mount_stubs(ref_snap, scenario.reference_mount_stubs)
        except ValueError as e:
            return result(False, f"scenario broken: {e}")
    if scenario.reference_config:
        ref_snap = dataclasses.replace(ref_snap, config={**ref_snap.config, **scenario.reference_config})
    cand_snap = compare.load_image_archive(env.candidate.export(tag, out / "candidate.tar"), ref=tag)
    diffs = compare.compare_snapshots(ref_snap, cand_snap)
    for side, snap in (("reference", ref_snap), ("candidate", cand_snap)):
        (out / f"{side}.summary.json").write_text(json.dumps(compare.snapshot_summary(snap), indent=1))
    if diffs:
        return result(False, f"{len(diffs)} difference(s)", compare.format_report(diffs))
    return result(True, f"same ({len(ref_snap.files)} paths, {ref_snap.nonempty_layers} layers)")
