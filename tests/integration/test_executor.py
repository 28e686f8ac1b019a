"""The executor with real runtimes (runc, crun where it works) on real snapshots."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bases import busybox_rootfs_tar, need_runtime
from dockyard.errors import ExecutorError
from dockyard.executor import Executor, MountSpec, RunSpec, detect_runtime
from dockyard.executor.mounts import (
    acquire_cache_dir,
    cache_mount_spec,
    parse_run_mount,
    secret_mount,
)
from dockyard.snapshot import (
    NativeSnapshotter,
    OverlaySnapshotter,
    mounted,
    open_snapshotter,
    our_mounts,
)

pytestmark = pytest.mark.skipif(need_runtime() is not None, reason=str(need_runtime()))

Snap = OverlaySnapshotter | NativeSnapshotter
SRC = Path(__file__).resolve().parents[2] / "src"


def _runtime_or_skip(name: str, cache: Path) -> Executor:
    try:
        rt = detect_runtime(name, cache_dir=cache)
    except ExecutorError as err:
        pytest.skip(f"{name} does not work on this host: {err}")
    return Executor(rt, cache)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(params=["runc", "crun"])
def executor(request: pytest.FixtureRequest, state: Path) -> Executor:
    return _runtime_or_skip(request.param, state)


def test_crun_works_on_hybrid_hosts(state: Path) -> None:
    """crun 1.8 refuses hybrid cgroup v1/v2 hosts even with its cgroup manager disabled; there
    it runs with the host's cgroup2 mount hidden. Without its cgroup manager it applies no
    device cgroup and drops nodev from the root: where dockyard may make v1 cgroups (root)
    it makes the device and pids cgroups itself; elsewhere runc (which has both) is
    preferred."""
    from dockyard.executor import v1cgroups
    from dockyard.executor.runtime import cgroup_mode

    rt = detect_runtime("crun", cache_dir=state)
    assert rt.name == "crun"
    if cgroup_mode() == "hybrid":
        assert rt.wrapper, "on a hybrid host crun needs the cgroup2 mount hidden"
        assert "--cgroup-manager=disabled" in rt.global_args
        assert rt.own_cgroups == v1cgroups.available()
        assert rt.device_barrier == rt.own_cgroups
    chosen = detect_runtime(None, cache_dir=state)
    assert chosen.device_barrier or shutil.which("runc") is None
    if rt.device_barrier:
        assert chosen.name == "crun"


@pytest.fixture
def any_executor(state: Path) -> Executor:
    return Executor(detect_runtime(cache_dir=state), state)


@pytest.fixture
def snap(tmp_path: Path) -> Iterator[Snap]:
    sn = open_snapshotter(tmp_path / "root", "auto")
    sn.prepare("base-active", None)
    with open(busybox_rootfs_tar(), "rb") as f:
        sn.apply("base-active", f)
    sn.commit("base", "base-active")
    yield sn
    assert our_mounts(tmp_path) == []


def _spec(script: str, **kw: object) -> RunSpec:
    fields: dict[str, object] = dict(
        args=("/bin/sh", "-c", script), env=(), cwd="/", user="", network="host", mounts=()
    )
    fields.update(kw)
    return RunSpec(**fields)  # type: ignore[arg-type]


def _run(ex: Executor, rootfs: Path, spec: RunSpec) -> tuple[int, str]:
    out: list[bytes] = []
    code = ex.run(rootfs, spec, on_output=out.append)
    return code, b"".join(out).decode()


def _diff_names(sn: Snap, key: str) -> set[str]:
    buf = io.BytesIO()
    sn.diff(key, buf, source_date_epoch=None)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        return {ti.name.rstrip("/") for ti in tf}


def test_echo_and_exit_codes(executor: Executor, snap: Snap) -> None:
    with mounted(snap.prepare("a", "base")) as r:
        assert _run(executor, r, _spec("echo hi")) == (0, "hi\n")
        # runc copies the two streams through separate pipes, so only per-stream order holds.
        code, out = _run(executor, r, _spec("echo out; echo err >&2; exit 3"))
        assert (code, sorted(out.splitlines())) == (3, ["err", "out"])
        # PID 1 of the container ignores SIGKILL from inside, so a child is killed.
        assert _run(executor, r, _spec("sh -c 'kill -9 $$'; exit $?"))[0] == 137
    assert _diff_names(snap, "a") == set()
    names = subprocess.run(
        [*executor.runtime.argv_prefix, "--root", str(executor.state_dir / "runtime" /
         executor.runtime.name), "list", "-q"], capture_output=True, text=True, check=False,
    ).stdout.split()
    assert names == []
    assert list((executor.state_dir / "bundles").iterdir()) == []


def test_env_cwd_user(any_executor: Executor, snap: Snap) -> None:
    with mounted(snap.prepare("a", "base")) as r:
        code, out = _run(any_executor, r, _spec(
            'echo "$FOO|$PATH|$(pwd)|$(id)|$(hostname)"', env=("FOO=bar baz",), cwd="/work/dir",
            user="app",
        ))
        assert code == 0
        assert out == (
            "bar baz|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/work/dir|"
            "uid=1000(app) gid=1000(app)|dockyard\n"
        )
        # The created WORKDIR belongs to the user, as BuildKit makes it.
        assert (os.stat(r / "work" / "dir").st_uid, os.stat(r / "work" / "dir").st_gid) == (
            1000, 1000)
        (r / "etc" / "group").write_text(
            "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:app,root\n"
        )
        assert _run(any_executor, r, _spec("id", user="app"))[1] == (
            "uid=1000(app) gid=1000(app) groups=10(wheel),29(audio)\n"
        )
        assert _run(any_executor, r, _spec("id", user="1234:29"))[1] == (
            "uid=1234 gid=29(audio)\n"
        )
        assert _run(any_executor, r, _spec("id -u; id -G", user="nobody"))[1] == (
            "65534\n65534\n"
        )


def test_network_none_has_only_loopback(any_executor: Executor, snap: Snap) -> None:
    with mounted(snap.prepare("a", "base")) as r:
        code, out = _run(any_executor, r, _spec("ls /sys/class/net", network="none"))
        assert (code, out.split()) == (0, ["lo"])
        host = sorted(os.listdir("/sys/class/net"))
        code, out = _run(any_executor, r, _spec("ls /sys/class/net", network="host"))
        assert sorted(out.split()) == host


def test_resolv_conf_and_hosts_are_mounted_not_layered(any_executor: Executor, snap: Snap) -> None:
    assert not (snap.fs_dir("base") / "etc" / "resolv.conf").exists()
    with mounted(snap.prepare("a", "base")) as r:
        code, out = _run(any_executor, r, _spec(
            "grep -c nameserver /etc/resolv.conf; grep dockyard /etc/hosts; "
            "mount | grep -c -E ' /etc/(resolv.conf|hosts) '; echo x > /tmp/made"
        ))
        assert code == 0, out
        lines = out.split("\n")
        assert int(lines[0]) >= 1
        assert "localhost dockyard" in lines[1]
        assert lines[2] == "2"
        assert not (r / "etc" / "resolv.conf").exists()
    assert _diff_names(snap, "a") == {"tmp", "tmp/made"}


def test_missing_shell_is_a_clear_error(any_executor: Executor, tmp_path: Path) -> None:
    empty = tmp_path / "scratch"
    empty.mkdir()
    with pytest.raises(ExecutorError, match="exec form"):
        any_executor.run(empty, _spec("true"), on_output=lambda b: None)
    with pytest.raises(ExecutorError, match="executable file not found"):
        any_executor.run(empty, _spec("", args=("app",)), on_output=lambda b: None)


def test_unknown_user_is_an_error(any_executor: Executor, snap: Snap) -> None:
    with mounted(snap.prepare("a", "base")) as r, pytest.raises(ExecutorError, match="ghost"):
        any_executor.run(r, _spec("true", user="ghost"), on_output=lambda b: None)


SCRIPT = (
    "set -e\n"
    "mkdir -p /data/sub /data/swap && echo one > /data/sub/f && echo o > /data/swap/old\n"
    "echo keep > /data/keep && echo x > /data/gone\n"
)
SCRIPT2 = (
    "set -e\n"
    "echo two >> /data/sub/f\n"        # modify
    "rm /data/gone /bin/vi\n"          # delete (layer 1 file, base symlink)
    "mv /data/keep /data/kept\n"       # rename
    "chmod 600 /etc/passwd\n"          # chmod
    "rm -rf /data/swap && mkdir /data/swap && echo n > /data/swap/new\n"  # opaque dir
    "touch /newfile\n"
)


def _layers_for(kind: str, ex: Executor, root: Path, scripts: tuple[str, ...] = (SCRIPT, SCRIPT2),
                ) -> list[dict[str, tuple[str, int, bytes]]]:
    sn = open_snapshotter(root, kind)  # type: ignore[arg-type]
    sn.prepare("b", None)
    with open(busybox_rootfs_tar(), "rb") as f:
        sn.apply("b", f)
    sn.commit("base", "b")
    parent = "base"
    result = []
    for i, script in enumerate(scripts):
        key = f"k{i}"
        with mounted(sn.prepare(key, parent)) as r:
            code, out = _run(ex, r, _spec(script))
            assert code == 0, out
        buf = io.BytesIO()
        sn.diff(key, buf, source_date_epoch=0)
        entries: dict[str, tuple[str, int, bytes]] = {}
        with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
            for ti in tf:
                body = tf.extractfile(ti).read() if ti.isfile() else b""  # type: ignore[union-attr]
                entries[ti.name.rstrip("/")] = (ti.type.decode(), ti.mode, body)
        result.append(entries)
        sn.commit(f"l{i}", key)
        parent = f"l{i}"
    return result


def test_run_steps_give_the_same_layers_on_both_snapshotters(
    any_executor: Executor, tmp_path: Path
) -> None:
    overlay = _layers_for("overlay", any_executor, tmp_path / "o")
    native = _layers_for("native", any_executor, tmp_path / "n")
    l2 = overlay[1]
    assert l2["data/sub/f"][2] == b"one\ntwo\n"
    for name in ("data/.wh.gone", "bin/.wh.vi", "data/.wh.keep", "data/kept",
                 "data/swap/.wh.old", "data/swap/new", "newfile"):
        assert name in l2, name
    assert l2["etc/passwd"][1] == 0o600
    assert "data/swap/old" not in l2 and "etc/resolv.conf" not in l2
    # rm -rf + mkdir: a whiteout for what went, as BuildKit writes it, never an opaque
    # marker (overlay's own form), whatever inode number the new directory got
    assert not any(n.endswith(".wh..wh..opq") for n in l2)
    assert overlay == native
    assert our_mounts(tmp_path) == []


# Directories removed and made again, over lowers that hide things themselves: a whiteout
# (/w/x), a directory made opaque by an earlier step (/m), a nested tree (/d), a directory
# that becomes a file (/t) and a file that becomes a directory (/u).
REPLACED = (
    "set -e\nmkdir -p /d/x/y /m/a /w /e /t\n"
    "echo 1 > /d/x/f && echo 2 > /d/g && echo 3 > /d/x/y/z && echo a > /m/a/f\n"
    "echo x > /w/x && echo y > /w/y && echo t > /t/t && echo u > /u\n",
    "set -e\nrm /w/x\nrm -rf /m && mkdir /m && echo b > /m/b\n",
    "set -e\nrm -rf /d && mkdir -p /d/x && echo h > /d/h && echo 1 > /d/x/f\n"
    "rm -rf /m && mkdir /m && echo c > /m/c\nrm -rf /w && mkdir /w\n"
    "rm -rf /e && mkdir /e\nrm -rf /t && echo now-a-file > /t\n"
    "rm /u && mkdir /u && echo in > /u/in\n",
)


@pytest.mark.parametrize("rounds", [1, 2])
def test_replaced_directories_give_the_same_layers_on_both_snapshotters(
    any_executor: Executor, tmp_path: Path, rounds: int
) -> None:
    """Overlay marks a remade directory opaque; the copying snapshotter sees a directory
    whose entries went, under an inode number the file system may or may not hand back.
    Both write what BuildKit writes: a whiteout for each name that went, none for what an
    earlier layer already hid. Two rounds: the inode numbers differ between them."""
    for n in range(rounds):
        overlay = _layers_for("overlay", any_executor, tmp_path / f"o{n}", REPLACED)
        native = _layers_for("native", any_executor, tmp_path / f"n{n}", REPLACED)
        assert overlay == native
        last = overlay[2]
        whiteouts = sorted(name for name in last if "/.wh." in name or name.startswith(".wh."))
        assert whiteouts == ["d/.wh.g", "d/x/.wh.y", "m/.wh.b", "w/.wh.y"], whiteouts
        assert last["t"][0] == "0" and last["u"][0] == "5" and "u/in" in last
    assert our_mounts(tmp_path) == []


def test_cache_mount_persists_and_is_not_layered(
    any_executor: Executor, snap: Snap, tmp_path: Path
) -> None:
    m = parse_run_mount("type=cache,target=/root/.cache/tool,id=tool")
    store = tmp_path / "store"
    for i in range(2):
        key = f"a{i}"
        with mounted(snap.prepare(key, "base")) as r, acquire_cache_dir(store, m) as cdir:
            code, out = _run(any_executor, r, _spec(
                f"cat /root/.cache/tool/n 2>/dev/null || echo none; echo run{i} > /root/.cache/tool/n",
                mounts=(cache_mount_spec(m, cdir),),
            ))
            assert code == 0
            assert out == ("none\n" if i == 0 else "run0\n")
        # The mount point /root/.cache/tool did not exist: it is not left in the layer.
        assert _diff_names(snap, key) == set()


def test_secret_is_visible_and_never_layered(
    any_executor: Executor, snap: Snap, tmp_path: Path
) -> None:
    value = b"s3cr3t-v4lue-7f1c"
    file_m = parse_run_mount("type=secret,id=tok,uid=1000,mode=0440")
    env_m = parse_run_mount("type=secret,id=tok2,env=TOKEN")
    secrets = tmp_path / "secrets"
    spec_f, env_f = secret_mount(file_m, value, secrets)
    spec_e, env_e = secret_mount(env_m, value, secrets)
    assert spec_f is not None and spec_e is None and env_f == ()
    with mounted(snap.prepare("a", "base")) as r:
        code, out = _run(any_executor, r, _spec(
            "stat -c '%a %u' /run/secrets/tok; cat /run/secrets/tok; echo; echo $TOKEN; "
            "cp /run/secrets/tok /tmp/leak 2>/dev/null; rm -f /tmp/leak",
            env=env_e, mounts=(spec_f,),
        ))
        assert code == 0, out
        assert out == "440 1000\n" + value.decode() + "\n" + value.decode() + "\n"
        assert not (r / "run").exists()
    buf = io.BytesIO()
    snap.diff("a", buf, source_date_epoch=None)
    assert value not in buf.getvalue()
    assert _diff_names(snap, "a") == {"tmp"}


def test_sigterm_kills_container_and_leaves_nothing(any_executor: Executor, tmp_path: Path) -> None:
    root = tmp_path / "root"
    state = tmp_path / "state"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from pathlib import Path
        from bases import busybox_rootfs_tar
        from dockyard.executor import Executor, RunSpec, detect_runtime, sigterm_raises
        from dockyard.snapshot import mounted, open_snapshotter
        sn = open_snapshotter(Path({str(root)!r}), "auto")
        sn.prepare("b", None)
        with open(busybox_rootfs_tar(), "rb") as f:
            sn.apply("b", f)
        sn.commit("base", "b")
        ex = Executor(detect_runtime(cache_dir=Path({str(state)!r})), Path({str(state)!r}))
        spec = RunSpec(args=("/bin/sh", "-c", "echo started; sleep 37"), env=(), cwd="/",
                       user="", network="host", mounts=())
        with sigterm_raises(), mounted(sn.prepare("a", "base")) as r:
            try:
                ex.run(r, spec, on_output=lambda b: (sys.stdout.buffer.write(b),
                                                     sys.stdout.flush()))
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                raise SystemExit(143)
    """))
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=20) == 143
    assert time.monotonic() - t < 10
    assert rest == b"interrupted\n"
    assert our_mounts(tmp_path) == []
    rt = any_executor.runtime
    listed = subprocess.run(
        [*rt.argv_prefix, "--root", str(state / "runtime" / rt.name), "list", "-q"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    assert listed == []
    assert list((state / "bundles").iterdir()) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 37" not in ps  # a duration no other test uses


def test_cancel_from_another_thread(any_executor: Executor, snap: Snap, state: Path) -> None:
    import threading

    ex = Executor(any_executor.runtime, state)
    with mounted(snap.prepare("a", "base")) as r:
        timer = threading.Timer(0.5, ex.cancel)
        timer.start()
        t = time.monotonic()
        with pytest.raises(ExecutorError, match="cancelled"):
            ex.run(r, _spec("sleep 30"), on_output=lambda b: None)
        assert time.monotonic() - t < 10
        with pytest.raises(ExecutorError, match="cancelled"):
            ex.run(r, _spec("true"), on_output=lambda b: None)


def test_extra_bind_mount_read_only(any_executor: Executor, snap: Snap, tmp_path: Path) -> None:
    src = tmp_path / "ctx"
    src.mkdir()
    (src / "hello.txt").write_text("from context\n")
    m = MountSpec("/src", "bind", str(src), ("rbind", "ro"))
    with mounted(snap.prepare("a", "base")) as r:
        code, out = _run(any_executor, r, _spec(
            "cat /src/hello.txt; touch /src/x 2>/dev/null && echo writable || echo readonly",
            mounts=(m,),
        ))
        assert (code, out) == (0, "from context\nreadonly\n")
    assert _diff_names(snap, "a") == set()


def test_abandoned_own_cgroups_are_removed_and_live_ones_kept() -> None:
    """``v1cgroups.remove_abandoned`` (run by the exclusive sweep): an empty cgroup made
    long ago goes; a fresh one (made, not joined yet) and one with a process stay."""
    from dockyard.executor import v1cgroups

    if not v1cgroups.available():
        pytest.skip("no writable cgroup v1 devices and pids hierarchies here")
    tag = os.urandom(4).hex()
    old = v1cgroups.create(f"dockyard-test-old-{tag}")
    fresh = v1cgroups.create(f"dockyard-test-fresh-{tag}")
    busy = v1cgroups.create(f"dockyard-test-busy-{tag}")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        hour_ago = time.time() - 3600
        for d in old + busy:
            os.utime(d, (hour_ago, hour_ago))
        for d in busy:
            (d / "cgroup.procs").write_text(str(sleeper.pid))
        v1cgroups.remove_abandoned()
        assert not any(d.exists() for d in old)
        assert all(d.exists() for d in fresh + busy)
    finally:
        sleeper.kill()
        sleeper.wait()
        v1cgroups.remove(old + fresh + busy)
    assert not any(d.exists() for d in old + fresh + busy)
