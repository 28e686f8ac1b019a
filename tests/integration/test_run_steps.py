"""RUN steps in real builds: file changes across layers (flattened and as whiteouts read back
by umoci), errors, USER/WORKDIR, --network none, secrets, cache mounts, what never reaches a
layer, and SIGTERM in the middle of a RUN."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from test_build_support import (
    build,
    dockyard_cli,
    flatten,
    fresh_store,
    mounts_under,
    needs_runtime,
    write_tree,
)

from dockyard.errors import RunError
from dockyard.store.db import Store

pytestmark = needs_runtime


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fresh_store(tmp_path / "store")


def _ctx(tmp_path: Path, dockerfile: str, **files: str) -> Path:
    return write_tree(tmp_path / "ctx", {"Dockerfile": dockerfile, **files})


def _layer_names(root: Path, diff_id: str) -> list[str]:
    with Store.open(root) as store:
        store.ensure_layer_blob(diff_id)  # a built layer is only a snapshot until read
    blob = root / "blobs" / "sha256" / diff_id.removeprefix("sha256:")
    with tarfile.open(blob) as tf:
        return [m.name.removeprefix("./").rstrip("/") for m in tf.getmembers()]


CHANGES = """\
FROM busybox
RUN mkdir -p /data/keep /data/gone /data/opq \\
 && echo a > /data/a && echo b > /data/b && echo c > /data/c && echo k > /data/keep/k \\
 && echo g > /data/gone/g && echo o > /data/opq/old && chmod 600 /data/c
RUN echo A2 >> /data/a && rm /data/b && mv /data/c /data/c2 && chmod 751 /data/c2 \\
 && rm -rf /data/gone /data/opq && mkdir /data/opq && echo new > /data/opq/new
RUN echo b-again > /data/b && ln -s a /data/link && ln /data/a /data/hard
"""


def _check_changes(fs: Path) -> None:
    data = fs / "data"
    assert (data / "a").read_text() == "a\nA2\n"
    assert (data / "b").read_text() == "b-again\n"
    assert not (data / "c").exists()
    assert (data / "c2").read_text() == "c\n"
    assert (data / "c2").stat().st_mode & 0o7777 == 0o751
    assert not (data / "gone").exists()
    assert sorted(os.listdir(data / "opq")) == ["new"]
    assert (data / "keep" / "k").read_text() == "k\n"
    assert os.readlink(data / "link") == "a"
    assert os.stat(data / "hard").st_ino == os.stat(data / "a").st_ino


def test_file_changes_across_layers(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, CHANGES)
    oci = tmp_path / "oci"
    built = build(ctx, root, tags=["changes:1"],
                  outputs=[f"type=oci,dest={oci},tar=false"])
    _check_changes(flatten(root, "changes:1", tmp_path / "fs"))

    diff_ids = built.result.config["rootfs"]["diff_ids"]
    assert len(diff_ids) == 4
    second = _layer_names(root, diff_ids[2])
    for whiteout in ("data/.wh.b", "data/.wh.c", "data/.wh.gone", "data/opq/.wh.old"):
        assert whiteout in second, second
    assert "data/c2" in second and "data/opq/new" in second
    # a layer holds what its step changed, nothing else
    assert "data/keep/k" not in second and "bin/busybox" not in second

    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed")
    index = json.loads((oci / "index.json").read_text())
    ref = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{oci}:{ref}", str(bundle)],
                   check=True, capture_output=True)
    _check_changes(bundle / "rootfs")


def test_a_step_root_is_volatile_and_its_layer_still_on_disk_when_committed(
        root: Path, tmp_path: Path) -> None:
    """The step's overlay is mounted volatile (its unmount and the fsyncs inside write
    nothing back); the commit's syncfs is what puts the layer on disk, and the work dir with
    overlay's volatile mark is gone once the snapshot is committed."""
    from dockyard.snapshot.overlay import _volatile_option

    if not _volatile_option():
        pytest.skip("overlay has no volatile mounts before Linux 5.10")
    ctx = _ctx(tmp_path, "FROM busybox:latest\n"
               "RUN grep ' / / ' /proc/self/mountinfo > /root.txt && echo d > /f && sync\n")
    built = build(ctx, root, tags=["vol:1"], snapshotter="overlay")
    line = (flatten(root, "vol:1", tmp_path / "fs") / "root.txt").read_text()
    assert " overlay " in line and "volatile" in line, line
    assert "f" in _layer_names(root, built.result.config["rootfs"]["diff_ids"][-1])
    snapshots = root / "snapshots"
    assert not list(snapshots.rglob("incompat")), list(snapshots.rglob("incompat"))
    assert not [p for p in snapshots.rglob("work") if p.is_dir()]


def test_failing_run_raises_run_error(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\n"
                         "RUN echo fine > /fine\n"
                         "RUN echo first-line && echo last-line >&2 && exit 7\n"
                         "RUN echo never\n")
    with pytest.raises(RunError) as info:
        build(ctx, root)
    err = info.value
    assert err.exit_status == 7
    # stdout and stderr both reach the tail (their relative order is the shell's business)
    assert sorted(err.output_tail[-2:]) == ["first-line", "last-line"]
    assert err.location is not None and err.location.start_line == 3
    assert "Dockerfile:3" in str(err)
    assert "exit code: 7" in str(err)
    rendered = err.render()
    assert ">>> RUN echo first-line" in rendered and "last-line" in rendered
    assert not mounts_under(root)
    # the step before the failure was recorded: the next build reuses it
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo fine > /fine\n")
    assert build(ctx, root).result.cached_all


def test_failing_run_through_cli(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\nRUN echo oops && exit 3\n")
    proc = subprocess.run([*dockyard_cli(), "--root", str(root), "build", "--progress", "plain",
                           str(ctx)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "exit code: 3" in proc.stderr
    assert "Dockerfile:2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_user_switching_and_workdir_ownership(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\n"
                         "USER nobody\n"
                         "RUN id -u > /tmp/nobody-uid && id -g > /tmp/nobody-gid\n"
                         "USER app\n"
                         "WORKDIR /srv/app/data\n"
                         "RUN id -u > uid && pwd > pwd && touch mine\n"
                         "WORKDIR sub\n"
                         "USER 1234:5678\n"
                         "RUN id -u > /tmp/num-uid && id -g > /tmp/num-gid\n"
                         "USER root\n"
                         "RUN id -u > /root-uid\n")
    built = build(ctx, root, tags=["users"])
    fs = flatten(root, "users", tmp_path / "fs")
    assert (fs / "tmp" / "nobody-uid").read_text() == "65534\n"
    assert (fs / "tmp" / "nobody-gid").read_text() == "65534\n"
    data = fs / "srv" / "app" / "data"
    assert (data / "uid").read_text() == "1000\n"
    assert (data / "pwd").read_text() == "/srv/app/data\n"
    for d in (fs / "srv", fs / "srv" / "app", data, data / "sub", data / "mine"):
        st = os.stat(d)
        assert (st.st_uid, st.st_gid) == (1000, 1000), d
    assert (fs / "tmp" / "num-uid").read_text() == "1234\n"
    assert (fs / "tmp" / "num-gid").read_text() == "5678\n"
    assert (fs / "root-uid").read_text() == "0\n"
    assert os.stat(fs / "tmp").st_uid == 0  # an existing directory is not re-owned
    config = built.result.config["config"]
    assert config["User"] == "root"
    assert config["WorkingDir"] == "/srv/app/data/sub"


def test_heredoc_script_with_shebang(root: Path, tmp_path: Path) -> None:
    # A #! heredoc runs as a file at /dev/pipes/<name> (BuildKit); it must exist under the
    # container's own /dev, for root and for another user, and never reach a layer.
    ctx = _ctx(tmp_path, "FROM busybox\n"
                         "RUN <<EOT\n#!/bin/sh\necho \"$0 as $(id -u)\" > /root-ran\nEOT\n"
                         "USER app\n"
                         "RUN <<'EOT'\n#!/bin/sh -e\necho \"$0 as $(id -u)\" > /tmp/app-ran\nEOT\n")
    built = build(ctx, root, tags=["scripts"])
    fs = flatten(root, "scripts", tmp_path / "fs")
    assert (fs / "root-ran").read_text() == "/dev/pipes/EOT as 0\n"
    assert (fs / "tmp" / "app-ran").read_text() == "/dev/pipes/EOT as 1000\n"
    assert not (fs / "dev" / "pipes").exists()
    for diff_id in built.result.config["rootfs"]["diff_ids"][1:]:
        assert not any(n.startswith("dev") for n in _layer_names(root, diff_id)), diff_id


def test_ulimit_and_shm_size_are_in_the_run_key(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\nRUN ulimit -n > /nofile && df -k /dev/shm | tail -1 > /shm\n")
    first = build(ctx, root, tags=["lim"])
    assert not first.result.steps[-1].cached
    assert build(ctx, root, tags=["lim"]).result.steps[-1].cached
    limited = build(ctx, root, tags=["lim"], ulimits=["nofile=512:512"])
    assert not limited.result.steps[-1].cached
    assert (flatten(root, "lim", tmp_path / "a") / "nofile").read_text() == "512\n"
    shm = build(ctx, root, tags=["lim"], shm_size="8m")
    assert not shm.result.steps[-1].cached
    assert (flatten(root, "lim", tmp_path / "b") / "shm").read_text().split()[1] == "8192"


def _interfaces(proc_net_dev: str) -> list[str]:
    return [line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:] if ":" in line]


def test_network_none(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\n"
                         "RUN cat /proc/net/dev > /none-dev\n"
                         "RUN --network=host cat /proc/net/dev > /host-dev\n")
    build(ctx, root, tags=["net"], network="none")
    fs = flatten(root, "net", tmp_path / "fs")
    assert _interfaces((fs / "none-dev").read_text()) == ["lo"]
    host = _interfaces(Path("/proc/net/dev").read_text())
    assert sorted(_interfaces((fs / "host-dev").read_text())) == sorted(host)


def _files_containing(top: Path, needle: bytes) -> list[Path]:
    found = []
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            with open(path, "rb") as f:
                if needle in f.read():
                    found.append(path)
    return found


def test_secret_is_readable_and_never_stored(root: Path, tmp_path: Path) -> None:
    value = "s3cr3t-" + os.urandom(8).hex()
    secret = tmp_path / "token.txt"
    secret.write_text(value)
    ctx = _ctx(tmp_path, "FROM busybox\n"
                         "RUN --mount=type=secret,id=tok "
                         "sha256sum /run/secrets/tok | cut -d' ' -f1 > /sum "
                         "&& stat -c %a /run/secrets/tok > /mode\n"
                         "RUN --mount=type=secret,id=tok,env=TOK,target=/s/t "
                         "test \"$TOK\" = \"$(cat /s/t)\" && echo ${#TOK} > /len\n")
    build(ctx, root, tags=["sec"], secrets=[f"id=tok,src={secret}"],
          metadata_file=str(tmp_path / "meta.json"))
    fs = flatten(root, "sec", tmp_path / "fs")
    assert (fs / "sum").read_text().strip() == hashlib.sha256(value.encode()).hexdigest()
    assert (fs / "mode").read_text() == "400\n"
    assert (fs / "len").read_text() == f"{len(value)}\n"
    assert not (fs / "run").exists() and not (fs / "s").exists()
    for top in (root / "blobs", root / "snapshots", root):
        assert _files_containing(top, value.encode()) == []
    assert value not in (tmp_path / "meta.json").read_text()


def test_cache_mount_persists_across_no_cache_builds(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\n"
                         "RUN --mount=type=cache,target=/c echo x >> /c/log; "
                         "wc -l < /c/log > /count\n")
    build(ctx, root, tags=["cache:1"])
    build(ctx, root, tags=["cache:2"], no_cache=True)
    fs1 = flatten(root, "cache:1", tmp_path / "fs1")
    fs2 = flatten(root, "cache:2", tmp_path / "fs2")
    assert (fs1 / "count").read_text().strip() == "1"
    assert (fs2 / "count").read_text().strip() == "2"
    assert not (fs2 / "c").exists()


def test_runtime_files_and_mount_points_never_reach_a_layer(root: Path,
                                                              tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox\n"
                         "RUN cat /etc/resolv.conf > /resolv-seen; cat /etc/hosts > /hosts-seen; "
                         "echo hi > /dev/shm/x; touch /tmp/t\n"
                         "RUN --mount=type=tmpfs,target=/scratch/tmp "
                         "--mount=type=bind,source=.,target=/mnt/ctx/here "
                         "cat /mnt/ctx/here/f > /from-bind\n",
               f="bound\n")
    built = build(ctx, root, tags=["clean"])
    names = [n for d in built.result.config["rootfs"]["diff_ids"][1:]
             for n in _layer_names(root, d)]
    assert "resolv-seen" in names and "tmp/t" in names and "from-bind" in names
    for bad in ("etc/resolv.conf", "etc/hosts", "etc/hostname", "etc", "dev", "proc", "sys",
                "dev/shm/x", "scratch", "scratch/tmp", "mnt", "mnt/ctx", "mnt/ctx/here"):
        assert bad not in names, bad
    fs = flatten(root, "clean", tmp_path / "fs")
    assert (fs / "from-bind").read_text() == "bound\n"
    assert not mounts_under(root)


def _sigterm_build(root: Path, ctx: Path, ready: re.Pattern[str], delay: float,
                   max_seconds: float = 10) -> str:
    """Run a CLI build, send SIGTERM ``delay`` s after a progress line matches ``ready``,
    assert it stopped cleanly within ``max_seconds``; returns its output."""
    proc = subprocess.Popen(
        [*dockyard_cli(), "--root", str(root), "build", "--progress", "plain", str(ctx)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        for line in proc.stdout:
            output.append(line)
            if ready.search(line):
                break
        time.sleep(delay)
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
        output.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            _force_cleanup(root)
    text = "".join(output)
    assert proc.returncode != 0, text
    assert time.time() - t0 < max_seconds, text
    assert "Traceback" not in text
    assert not mounts_under(root)
    runc_root = root / "run" / "runtime" / "runc"
    if runc_root.exists():
        listed = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"],
                                capture_output=True, text=True, check=True)
        assert listed.stdout.strip() == ""
    leftovers = subprocess.run(["pgrep", "-x", "sleep"], capture_output=True, text=True)
    assert [p for p in leftovers.stdout.split() if _under_runtime(int(p), root)] == []
    return text


def _force_cleanup(root: Path) -> None:
    """After a test had to SIGKILL dockyard: remove what it left, so no garbage outlives it."""
    runc_root = root / "run" / "runtime" / "runc"
    if runc_root.exists():
        listed = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"],
                                capture_output=True, text=True, check=False)
        for cid in listed.stdout.split():
            subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", cid],
                           capture_output=True, check=False)
    for point in sorted(mounts_under(root), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


SLEEPER = "FROM busybox\nRUN echo started-sleeping && sleep {}\n"


def _store_still_works(root: Path, ctx: Path, tmp_path: Path) -> None:
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo after > /after\n")
    again = build(ctx, root, tags=["after"])
    assert not again.result.cached_all
    assert (flatten(root, "after", tmp_path / "fs") / "after").read_text() == "after\n"


def test_sigterm_during_run_cleans_up(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, SLEEPER.format(30))
    # the RUN's own output: the container is running
    _sigterm_build(root, ctx, re.compile(r"^#\d+ [\d.]+ started-sleeping"), 0.2)
    _store_still_works(root, ctx, tmp_path)


def test_sigterm_as_run_starts_cleans_up(root: Path, tmp_path: Path) -> None:
    # a short sleep: when the kill is lost the build still ends (cleanly) after 4 s
    ctx = _ctx(tmp_path, SLEEPER.format(4))
    # the step has just started: the runtime may still be creating the container
    for delay in (0.0, 0.03, 0.06):
        _sigterm_build(root, ctx, re.compile(r"^#\d+ \[.*\] RUN echo started"), delay,
                       max_seconds=2.5)
    _store_still_works(root, ctx, tmp_path)


def _under_runtime(pid: int, root: Path) -> bool:
    """Whether process ``pid`` runs in a root filesystem under the store ``root``."""
    try:
        return str(root) in os.readlink(f"/proc/{pid}/root")
    except OSError:
        return False
