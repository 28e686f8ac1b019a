"""Rootless: dockyard as an ordinary user (docs/rootless.md).

Each test runs dockyard as a user made for the module (``useradd``, subordinate ids in
/etc/subuid and /etc/subgid) from a virtualenv of the system python that user can read
(tests/rootless_support.py), against a store of its own in its home directory, loaded
with the bases the example tests use. Images built so must equal a root build of the same
inputs (SOURCE_DATE_EPOCH set), and files must carry in-container ids in the layers while
the host sees the mapped ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_examples_support import EXAMPLES, cli, examples_skip_reason, shared_store

from rootless_support import (
    OrdinaryUser,
    base_archive,
    ordinary_user,
    readable_venv,
    rootless_skip_reason,
    subordinate_start,
)

pytestmark = pytest.mark.skipif(
    (rootless_skip_reason() or examples_skip_reason()) is not None,
    reason=rootless_skip_reason() or examples_skip_reason() or "")

SDE = "1700000000"
SAMPLE_LINKS = 3


class Rootless:
    """The module's user, its virtualenv and store, and a work directory it owns."""

    def __init__(self, user: OrdinaryUser, venv: Path, work: Path) -> None:
        self.user = user
        self.venv = venv
        self.work = work
        self.root = user.home / ".local" / "share" / "dockyard"  # the default store

    def dockyard(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
                 timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return self.user.run([str(self.venv / "bin" / "dockyard"), *args], env=env,
                             check=check, timeout=timeout)

    def python(self, code: str, *, env: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.user.run([str(self.venv / "bin" / "python"), "-c", code], env=env,
                             check=check)

    def context(self, name: str, files: dict[str, str]) -> Path:
        ctx = self.work / name
        ctx.mkdir(parents=True)
        for rel, text in files.items():
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            (ctx / rel).write_text(text)
        self.user.chown(ctx)
        return ctx


@pytest.fixture(scope="module")
def rootless() -> Iterator[Rootless]:
    user = ordinary_user()
    try:
        venv = readable_venv()
        work = user.home / "work"
        work.mkdir()
        user.chown(work)
        bases = Path(tempfile.mkdtemp(prefix="dockyard-rootless-bases-", dir="/var/tmp"))
        archive = base_archive(shared_store(), ["busybox:latest", "debian:bookworm"], bases)
        rl = Rootless(user, venv, work)
        rl.dockyard("load", "-i", str(archive))
        shutil.rmtree(bases)
        yield rl
    finally:
        user.remove()


def _root_build(ctx: Path, tag: str, *extra: str) -> str:
    """Build ``ctx`` as root in the shared store (its bases are the ones the user loaded)."""
    out = cli(shared_store(), "build", "-q", "-t", tag, *extra, str(ctx),
              env={"SOURCE_DATE_EPOCH": SDE}).stdout
    return out.strip().splitlines()[-1]


def _rootless_build(rl: Rootless, ctx: Path, tag: str, *extra: str) -> str:
    out = rl.dockyard("build", "-q", "-t", tag, *extra, str(ctx),
                      env={"SOURCE_DATE_EPOCH": SDE}).stdout
    return out.strip().splitlines()[-1]


def _copy_for(rl: Rootless, src: Path, name: str) -> Path:
    dest = rl.work / name
    shutil.copytree(src, dest, symlinks=True)
    rl.user.chown(dest)
    return dest


def test_multistage_example_equals_root_build_and_runs(rootless: Rootless) -> None:
    ctx = _copy_for(rootless, EXAMPLES / "multistage", "multistage")
    image = _rootless_build(rootless, ctx, "ex-multistage:rootless")
    assert image == _root_build(EXAMPLES / "multistage", "ex-multistage:rootless-ref")
    run = rootless.dockyard("run", "ex-multistage:rootless")
    assert run.stdout.splitlines()[-1] == f"{SAMPLE_LINKS} links"


OWNERSHIP = {
    "Dockerfile": (
        "FROM busybox:latest\n"
        "RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd"
        " && echo 'app:x:1000:' >> /etc/group\n"
        "COPY --chown=1000:1000 a.txt /home/app/a.txt\n"
        "COPY --chown=app b.txt /srv/b.txt\n"
        "USER 1000\n"
        "RUN echo made > /home/app/made && mkdir /home/app/dir && id -u > /home/app/id\n"
        "USER 0\n"
        "RUN --mount=type=cache,target=/cache,uid=1000,gid=1000 "
        "echo x >> /cache/log && stat -c %u:%g /cache > /root/cache-owner\n"
        "RUN rm /etc/group && mkdir -p /opt/empty && rm -rf /home/app/dir && mkdir /home/app/dir"
        " && touch /home/app/dir/new\n"
        "RUN --network=none ls /sys/class/net > /root/netdevs\n"
    ),
    "a.txt": "a\n",
    "b.txt": "b\n",
}


def _members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return {m.name.rstrip("/"): m for m in tf.getmembers()}


def test_ownership_in_layers_is_the_containers(rootless: Rootless, tmp_path: Path) -> None:
    ctx = rootless.context("owners", OWNERSHIP)
    image = _rootless_build(rootless, ctx, "owners:rootless")
    root_ctx = tmp_path / "owners"
    shutil.copytree(ctx, root_ctx)
    assert image == _root_build(root_ctx, "owners:root")

    # the layers, through export (a flattened tar) as the user: in-container ids
    out = rootless.work / "owners.tar"
    rootless.dockyard("export", "-o", str(out), "owners:rootless")
    members = _members(out)
    assert (members["home/app/a.txt"].uid, members["home/app/a.txt"].gid) == (1000, 1000)
    assert (members["srv/b.txt"].uid, members["srv/b.txt"].gid) == (1000, 1000)
    assert members["home/app/made"].uid == 1000
    assert members["home/app/dir/new"].uid == 0
    assert "etc/group" not in members  # a whiteout, in the user namespace's overlay form
    with tarfile.open(out) as tf:
        def text(name: str) -> str:
            f = tf.extractfile(name)
            assert f is not None
            return f.read().decode().strip()

        assert text("home/app/id") == "1000"
        assert text("root/cache-owner") == "1000:1000"
        assert text("root/netdevs") == "lo"

    # on the host, the store's copy of a file made as USER 1000 has the mapped id
    snaps = rootless.root / "snapshots"
    made = list(snaps.glob("**/fs/home/app/made"))
    assert made, "the RUN step's snapshot is in the user's store"
    assert made[0].stat().st_uid == subordinate_start(rootless.user) + 999


def test_rebuild_is_cached_and_run_sees_the_ids(rootless: Rootless) -> None:
    ctx = rootless.context("cached", {"Dockerfile": (
        "FROM busybox:latest\n"
        "RUN echo 'bob:x:1234:1234::/home/bob:/bin/sh' >> /etc/passwd && mkdir -p /home/bob"
        " && touch /home/bob/f && chown -R 1234:1234 /home/bob\n")})
    first = rootless.dockyard("build", "--progress", "plain", "-t", "cached:1", str(ctx))
    assert "CACHE MISS" in first.stderr
    again = rootless.dockyard("build", "--progress", "plain", "-t", "cached:1", str(ctx))
    assert "CACHE MISS" not in again.stderr
    vol = rootless.work / "vol"
    vol.mkdir()
    (vol / "in").write_text("from the host\n")
    rootless.user.chown(vol)
    run = rootless.dockyard("run", "--user", "bob", "-v", f"{vol}:/vol:ro", "cached:1", "sh",
                            "-c", "id -u; stat -c %u /home/bob/f; cat /vol/in; "
                            "touch /vol/x 2>/dev/null || echo read-only")
    lines = run.stdout.splitlines()
    assert lines == ["1234", "1234", "from the host", "read-only"]


@pytest.mark.parametrize("owner", ["user", "root"])
def test_a_no_op_rebuild_takes_the_up_to_date_check(rootless: Rootless, owner: str) -> None:
    """The build-level up-to-date check answers an unchanged rebuild as it does for root:
    the record the first build wrote (walked in the user namespace, or before it) matches
    the walk outside it, whoever owns the context (a root-owned one shows the overflow id
    inside)."""
    ctx = rootless.context(f"quick-{owner}", {
        "Dockerfile": "FROM busybox:latest\nCOPY . /app\nRUN ls /app > /listing\n",
        "a.txt": "a\n", "sub/b.txt": "b\n"})
    if owner == "root":
        subprocess.run(["chown", "-R", "0:0", str(ctx)], check=True)
        subprocess.run(["chmod", "-R", "a+rX", str(ctx)], check=True)
    # a file changed just before a walk is not trusted (quick.RACY_MARGIN): wait it out
    time.sleep(1.1)
    argv = ["-q", "-t", f"quick-{owner}:1", str(ctx)]
    # the check itself, as the user (with the user's environment: the record's name hashes
    # it): 0 is a hit, None the full path
    check = (f"from dockyard import quick; print(quick.try_build({argv!r}, "
             f"{str(rootless.root)!r}))")
    first = rootless.dockyard("build", *argv).stdout.strip()
    assert rootless.python(check).stdout.splitlines() == [first, "0"]  # a hit prints the id
    assert rootless.dockyard("build", *argv).stdout.strip() == first
    (ctx / "a.txt").write_text("changed\n")
    assert rootless.python(check).stdout.strip() == "None"
    changed = rootless.dockyard("build", *argv).stdout.strip()
    assert changed != first


def test_store_and_info(rootless: Rootless) -> None:
    info = json.loads(rootless.dockyard("info", "--format", "json").stdout)
    assert info["root"] == str(rootless.root)
    assert info["rootless"]["rootless"] is True
    assert info["rootless"]["mapping_kind"] == "subordinate"
    start = subordinate_start(rootless.user)
    assert f"0->{rootless.user.uid}, 1-65536->{start}-{start + 65535}" in \
        info["rootless"]["id_mapping"]
    assert info["rootless"]["network"] == "host"
    assert info["snapshotter"]["name"] == "overlay"
    assert "runtime" in info and "error" not in info["runtime"], info["runtime"]
    st = rootless.root.stat()
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (rootless.user.uid, "0o700")


def test_cp_and_the_store_commands(rootless: Rootless) -> None:
    """cp, save, rmi, cache du/prune, prune and store check as the user, on a store whose
    snapshots hold files of mapped ids (a device node and a FIFO among them)."""
    ctx = rootless.context("store-cmds", {
        "Dockerfile": ("FROM busybox:latest\n"
                       "COPY --chown=5:6 f /d/f\n"
                       "RUN --mount=type=cache,target=/c,uid=7 touch /c/x && mkfifo /d/p\n"),
        "f": "f\n"})
    rootless.dockyard("build", "-q", "-t", "store:1", str(ctx))
    out = rootless.work / "cp-out"
    rootless.dockyard("cp", "store:1:/d", str(out))
    assert (out / "f").read_text() == "f\n"
    for name in ("f", "p"):  # the caller's files, as docker cp writes them
        assert (out / name).lstat().st_uid == rootless.user.uid
    devnull = rootless.dockyard("cp", "busybox:latest:/dev/null", str(rootless.work / "n"),
                                check=False)  # busybox has no /dev/null: a clean error
    assert "Traceback" not in devnull.stderr
    unreadable = rootless.dockyard("load", "-i", "/root/bases.tar", check=False)
    assert (unreadable.returncode, unreadable.stderr.strip()) == (
        2, "ERROR: cannot open /root/bases.tar: Permission denied")
    save = rootless.work / "store.tar"
    rootless.dockyard("save", "-o", str(save), "store:1")
    assert "index.json" in _members(save)
    du = rootless.dockyard("cache", "du").stdout
    assert "cache mount" in du
    rootless.dockyard("rmi", "store:1")
    rootless.dockyard("cache", "prune", "--all")
    rootless.dockyard("prune")
    check = rootless.dockyard("store", "check", "--repair", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    snaps = rootless.root / "snapshots"
    assert not list(snaps.glob("**/fs/d/f")), "the image's snapshots are gone"


def test_runc_rootless_gives_the_same_image(rootless: Rootless, tmp_path: Path) -> None:
    """The ownership Dockerfile with runc (--rootless) instead of the default crun."""
    if shutil.which("runc") is None or shutil.which("crun") is None:
        pytest.skip("runc and crun are both needed (scripts/setup.sh installs them)")
    ctx = rootless.context("owners-runc", OWNERSHIP)
    info = json.loads(rootless.dockyard("info", "--format", "json",
                                        env={"DOCKYARD_RUNTIME": "runc"}).stdout)
    assert info["runtime"]["name"] == "runc"
    assert "--rootless=true" in info["runtime"]["args"]
    out = rootless.dockyard("build", "-q", "--no-cache", "-t", "owners:runc", str(ctx),
                            env={"SOURCE_DATE_EPOCH": SDE, "DOCKYARD_RUNTIME": "runc"})
    root_ctx = tmp_path / "owners"
    shutil.copytree(ctx, root_ctx)
    assert out.stdout.strip().splitlines()[-1] == _root_build(root_ctx, "owners:root-runc")


def test_native_snapshotter_gives_the_same_image(rootless: Rootless, tmp_path: Path) -> None:
    """The copying snapshotter (the fallback where overlay cannot be mounted in the user
    namespace), each in a store of its own: the ownership Dockerfile gives the digest of
    root's build with the same snapshotter."""
    ctx = rootless.context("owners-native", OWNERSHIP)
    store = rootless.work / "native-store"
    busybox = rootless.work / "native-busybox.tar"
    rootless.dockyard("save", "-o", str(busybox), "busybox:latest")
    rootless.dockyard("--root", str(store), "load", "-i", str(busybox))
    out = rootless.dockyard("--root", str(store), "build", "-q", "--snapshotter", "native",
                            "-t", "owners:native", str(ctx), env={"SOURCE_DATE_EPOCH": SDE})
    info = json.loads(rootless.dockyard("--root", str(store), "info", "--format",
                                        "json").stdout)
    assert info["rootless"]["rootless"] is True
    root_ctx = tmp_path / "owners"
    shutil.copytree(ctx, root_ctx)
    root_store = tmp_path / "store"
    cli(root_store, "load", "-i", str(busybox))
    root = cli(root_store, "build", "-q", "--snapshotter", "native", str(root_ctx),
               env={"SOURCE_DATE_EPOCH": SDE}).stdout
    assert out.stdout.strip().splitlines()[-1] == root.strip().splitlines()[-1]


def test_api_forks_into_the_namespace(rootless: Rootless) -> None:
    ctx = rootless.context("api", {"Dockerfile": "FROM busybox:latest\n"
                                   "COPY --chown=7:7 f /f\nRUN echo ok\n", "f": "f\n"})
    code = f"""
import io, tarfile, threading, dockyard
threading.Thread(target=lambda: None).start()  # a caller with threads stays where it is
events = []
result = dockyard.build({str(ctx)!r}, tags=["api:1"], on_event=events.append)
assert events and result.image_id.startswith("sha256:")
out = []
ran = dockyard.run("api:1", ["sh", "-c", "stat -c %u:%g /f; echo $((6*7))"],
                   on_output=out.append)
buf = io.BytesIO()
dockyard.cp("api:1", "/f", buf)
member = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getmembers()[0]
try:
    dockyard.run("no-such:image")
except dockyard.NotFoundError as err:
    print("raised", type(err).__name__)
print(ran.exit_code, b"".join(out).decode().split(), member.name)
print("outside", open("/proc/self/uid_map").read().split()[:3])
"""
    proc = rootless.python(code)
    lines = proc.stdout.splitlines()
    assert lines[0] == "raised NotFoundError"
    assert lines[1] == "0 ['7:7', '42'] f"
    assert lines[2] == "outside ['0', '0', '4294967295']"  # the caller never moved


def test_user_without_subordinate_ids_gets_one_id(rootless: Rootless) -> None:
    user = ordinary_user("dyone", subids=False)
    try:
        dockyard = str(rootless.venv / "bin" / "dockyard")
        info = json.loads(user.run([dockyard, "info", "--format", "json"]).stdout)
        assert info["rootless"]["mapping_kind"] == "single"
        assert info["rootless"]["id_mapping"] == \
            f"uid 0->{user.uid}; gid 0->{user.gid}"
        busybox = user.home / "busybox.tar"
        cli(shared_store(), "save", "-o", str(busybox), "busybox:latest")
        user.chown(busybox)
        user.run([dockyard, "load", "-i", str(busybox)])
        ctx = user.home / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM busybox:latest\nRUN id -u > /who\n"
                                        "USER 1000\nRUN true\n")
        user.chown(ctx)
        proc = user.run([dockyard, "build", str(ctx)], check=False)
        assert proc.returncode == 1
        assert "#2 DONE" in proc.stderr  # a RUN as root works with the one id
        assert ("USER 1000: uid 1000 does not exist in this user namespace (ids 0-0 are "
                "mapped)") in proc.stderr
        assert "usermod --add-subuids" in proc.stderr
        (ctx / "Dockerfile").write_text("FROM busybox:latest\nCOPY --chown=1000 Dockerfile /\n")
        proc = user.run([dockyard, "build", str(ctx)], check=False)
        assert proc.returncode == 1
        assert "Dockerfile:2" in proc.stderr
        assert ("COPY --chown=1000: uid 1000, gid 1000 do not exist in this user namespace"
                in proc.stderr)
        assert "Traceback" not in proc.stderr
    finally:
        user.remove()


def test_xdg_dirs(rootless: Rootless) -> None:
    runtime_dir = rootless.work / "xdg-run"
    runtime_dir.mkdir(mode=0o700)
    rootless.user.chown(runtime_dir)
    data = rootless.work / "xdg-data"
    busybox = rootless.work / "busybox.tar"
    rootless.dockyard("save", "-o", str(busybox), "busybox:latest")
    env = {"XDG_RUNTIME_DIR": str(runtime_dir), "XDG_DATA_HOME": str(data)}
    rootless.dockyard("load", "-i", str(busybox), env=env)
    ctx = rootless.context("xdg", {"Dockerfile": "FROM busybox:latest\nCOPY f /f\nRUN cat /f\n",
                                   "f": "x"})
    info = json.loads(rootless.dockyard("info", "--format", "json", env=env).stdout)
    assert info["root"] == str(data / "dockyard")
    rootless.dockyard("build", "-q", str(ctx), env=env)
    assert (runtime_dir / "dockyard").is_dir()  # runtime probe and run files
    assert not (data / "dockyard" / "run").exists()


@pytest.mark.parametrize("tool", ["slirp4netns", "pasta"])
def test_user_mode_network(rootless: Rootless, tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    tun = Path("/dev/net/tun")
    mode = tun.stat().st_mode & 0o777
    os.chmod(tun, 0o666)  # Debian's default; some sandboxes make it root-only
    try:
        ctx = rootless.context(f"net-{tool}", {
            "Dockerfile": "FROM busybox:latest\nRUN ip -o addr show > /addrs && ip route\n"})
        proc = rootless.dockyard("build", "--no-cache", "--progress", "plain", "--network", tool,
                                 "-t", f"net-{tool}:1", str(ctx))
        assert "default via" in proc.stderr
        addrs = rootless.dockyard("run", "--network", tool, f"net-{tool}:1", "cat",
                                  "/addrs").stdout
        assert any(line.split()[1] in ("tap0", "eth0") for line in addrs.splitlines())
        host = rootless.dockyard("run", "--network", tool, f"net-{tool}:1", "sh", "-c",
                                 "ip -o addr show | grep -v ' lo '").stdout
        assert host.strip(), "a non-loopback interface of the tool's"
    finally:
        os.chmod(tun, mode)


def _podman_skip_reason() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/setup.sh installs it with WITH_PEERS=1)"
    if not shutil.which("runc"):
        return "no runc for podman"
    return None


def test_in_an_unprivileged_container(tmp_path: Path) -> None:
    """dockyard inside a podman container started without privileges: root there, but no
    CAP_SYS_ADMIN, podman's default seccomp profile, /proc unmasked (docs/rootless.md). It
    enters a user namespace of its own (identity mapping) and builds the multi-stage
    example, with the digest of a root build on the host."""
    why = _podman_skip_reason()
    if why:
        pytest.skip(why)
    venv = readable_venv()
    work = Path(tempfile.mkdtemp(prefix="dockyard-in-container-", dir="/var/tmp"))
    try:
        archive = base_archive(shared_store(), ["busybox:latest", "debian:bookworm"], work)
        shutil.copytree(EXAMPLES / "multistage", work / "multistage")
        (work / "store").mkdir()
        dockyard = f"{venv}/bin/dockyard --root /w/store"
        script = (
            "set -e; grep CapEff /proc/self/status; "
            f"{dockyard} load -i /w/{archive.name} >/dev/null; "
            f"{dockyard} info --format json > /w/info.json; "
            f"SOURCE_DATE_EPOCH={SDE} {dockyard} build -q -t ms:ct /w/multistage; "
            f"{dockyard} run ms:ct"
        )
        proc = subprocess.run(
            ["podman", "--runtime", "runc", "run", "--rm", "--net", "host",
             "--security-opt", "unmask=ALL", "--ulimit", "nofile=1024:1024",
             "--ulimit", "nproc=4096:4096", "-v", f"{work}:/w", "--rootfs", "/:O",
             "sh", "-c", script],
            capture_output=True, text=True, timeout=1200, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        caps = int(lines[0].split()[1], 16)
        assert not caps >> 21 & 1, "the container has no CAP_SYS_ADMIN"
        info = json.loads((work / "info.json").read_text())
        assert info["rootless"]["rootless"] is True
        assert info["rootless"]["mapping_kind"] == "identity"
        assert info["snapshotter"]["name"] == "overlay"
        image = lines[1]
        assert lines[-1] == f"{SAMPLE_LINKS} links"
        assert image == _root_build(EXAMPLES / "multistage", "ex-multistage:ct-ref")
    finally:
        subprocess.run(["chown", "-R", "0:0", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)
