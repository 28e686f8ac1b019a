"""Pure parts of the executor: users, root-scoped paths, the OCI spec, RUN --mount parsing,
mount-point stubs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.errors import DockerfileError, ExecutorError
from dockyard.executor.mounts import RunMount, parse_run_mount, parse_size, with_workdir
from dockyard.executor.run import find_mount_stubs, remove_mount_stubs
from dockyard.executor.spec import (
    DEFAULT_CAPABILITIES,
    MountSpec,
    RunSpec,
    UserIds,
    oci_spec,
    resolve_in_root,
    resolve_user,
)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "# a comment\n"
        "app:x:1000:1000::/home/app:/bin/sh\n"
        "svc:x:1001:1001::/:/bin/false\n"
    )
    (etc / "group").write_text(
        "root:x:0:\napp:x:1000:\nsvc:x:1001:\naudio:x:29:app,svc\nvideo:x:44:svc\nstaff:x:50:app\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", (0, 0, ())),
        ("root", (0, 0, ())),
        ("app", (1000, 1000, (29, 50))),
        ("svc", (1001, 1001, (29, 44))),
        ("1000", (1000, 1000, (29, 50))),
        ("app:video", (1000, 44, ())),
        ("app:44", (1000, 44, ())),
        ("1000:1001", (1000, 1001, ())),
        ("4242", (4242, 0, ())),
        ("4242:4343", (4242, 4343, ())),
    ],
)
def test_resolve_user(rootfs: Path, user: str, expected: tuple[int, int, tuple[int, ...]]) -> None:
    assert resolve_user(rootfs, user) == expected


def test_resolve_user_unknown_name(rootfs: Path) -> None:
    with pytest.raises(ExecutorError, match="unable to find user nobody"):
        resolve_user(rootfs, "nobody")
    with pytest.raises(ExecutorError, match="unable to find group wheel"):
        resolve_user(rootfs, "app:wheel")


def test_resolve_user_without_passwd(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, "") == (0, 0, ())
    assert resolve_user(tmp_path, "123:456") == (123, 456, ())
    with pytest.raises(ExecutorError):
        resolve_user(tmp_path, "app")


def test_passwd_symlink_cannot_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "passwd"
    outside.write_text("evil:x:0:0::/:/bin/sh\n")
    os.symlink(str(outside), root / "etc" / "passwd")
    # The absolute target is resolved inside the rootfs, where it does not exist.
    with pytest.raises(ExecutorError):
        resolve_user(root, "evil")


def test_resolve_in_root(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    os.symlink("usr/bin", tmp_path / "bin")
    os.symlink("../../../../etc", tmp_path / "usr" / "up")
    os.symlink("/usr", tmp_path / "usr" / "bin" / "abs")
    assert resolve_in_root(tmp_path, "/bin/sh") == tmp_path / "usr" / "bin" / "sh"
    assert resolve_in_root(tmp_path, "/usr/up/passwd") == tmp_path / "etc" / "passwd"
    assert resolve_in_root(tmp_path, "/bin/abs/bin") == tmp_path / "usr" / "bin"
    assert resolve_in_root(tmp_path, "../../x") == tmp_path / "x"
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(ExecutorError, match="symbolic links"):
        resolve_in_root(tmp_path, "/loop/x")


def _spec(**kw: object) -> RunSpec:
    base: dict[str, object] = dict(
        args=("/bin/sh", "-c", "true"), env=("A=1",), cwd="/src", user="", network="host",
        mounts=(),
    )
    base.update(kw)
    return RunSpec(**base)  # type: ignore[arg-type]


def test_oci_spec_sandbox(tmp_path: Path) -> None:
    mounts = [MountSpec("/proc", "proc", "proc", ("nosuid",))]
    spec = oci_spec(tmp_path, _spec(), UserIds(1000, 1000, (29,)), mounts)
    proc = spec["process"]
    assert proc["args"] == ["/bin/sh", "-c", "true"]
    assert proc["cwd"] == "/src"
    assert proc["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [29]}
    assert proc["env"][0] == "A=1"
    assert any(e.startswith("PATH=") for e in proc["env"])
    assert proc["terminal"] is False
    assert proc["noNewPrivileges"] is False
    assert proc["capabilities"]["bounding"] == list(DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in proc["capabilities"]["effective"]
    ns = [n["type"] for n in spec["linux"]["namespaces"]]
    assert ns == ["pid", "ipc", "uts", "mount"]
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert spec["root"] == {"path": str(tmp_path), "readonly": False}
    assert spec["mounts"] == [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "nodev"]}
    ]
    assert spec["hostname"] == "dockyard"
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"


def test_oci_spec_network_none_and_insecure(tmp_path: Path) -> None:
    spec = oci_spec(tmp_path, _spec(network="none", security="insecure", env=("PATH=/x",)),
                    UserIds(0, 0, ()), [])
    assert {"type": "network"} in spec["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["bounding"]
    assert "maskedPaths" not in spec["linux"]
    assert "seccomp" not in spec["linux"]
    assert spec["process"]["env"] == ["PATH=/x"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("type=cache,target=/root/.cache",
         RunMount("cache", "/root/.cache", id="/root/.cache", mode=0o755, readonly=False)),
        ("type=cache,id=go,dst=/go,sharing=locked,uid=1000,gid=1000,mode=0700",
         RunMount("cache", "/go", id="go", sharing="locked", mode=0o700, uid=1000, gid=1000,
                  readonly=False)),
        ("target=/src", RunMount("bind", "/src")),
        ("type=bind,source=a,from=builder,target=/x,rw",
         RunMount("bind", "/x", source="a", from_="builder", readonly=False)),
        ("type=bind,target=/x,readonly=false", RunMount("bind", "/x", readonly=False)),
        ("type=tmpfs,target=/t,size=64m", RunMount("tmpfs", "/t", readonly=False, size=64 << 20)),
        ("type=secret,id=tok", RunMount("secret", "/run/secrets/tok", id="tok", mode=0o400)),
        ("type=secret,source=tok", RunMount("secret", "/run/secrets/tok", source="tok",
                                            id="tok", mode=0o400)),
        ("type=secret,target=/etc/key.pem,required",
         RunMount("secret", "/etc/key.pem", id="key.pem", mode=0o400, required=True)),
        ("type=secret,id=tok,env=TOKEN", RunMount("secret", "", id="tok", mode=0o400,
                                                  env="TOKEN")),
        ("type=secret,id=tok,env=TOKEN,target=/t",
         RunMount("secret", "/t", id="tok", mode=0o400, env="TOKEN")),
        ("type=ssh", RunMount("ssh", "/run/buildkit/ssh_agent.0", id="default", mode=0o600)),
        ("TYPE=SSH,id=gh,required=true",
         RunMount("ssh", "/run/buildkit/ssh_agent.0", id="gh", mode=0o600, required=True)),
        ('"type=bind","target=/a,b"', RunMount("bind", "/a,b")),
    ],
)
def test_parse_run_mount(value: str, expected: RunMount) -> None:
    assert parse_run_mount(value) == expected


def test_parse_run_mount_ssh_index() -> None:
    assert parse_run_mount("type=ssh", index=2).target == "/run/buildkit/ssh_agent.2"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("type=volume,target=/x", "unsupported mount type"),
        ("type=cache", "requires a target"),
        ("type=cache,target=/x,sharing=sometimes", "unsupported sharing value"),
        ("type=bind,target=/x,sharing=locked", "invalid cache sharing"),
        ("type=bind,target=/x,mode=0600", "mode not allowed"),
        ("type=tmpfs,target=/x,uid=1", "uid not allowed"),
        ("type=cache,target=/x,required", "unexpected key 'required'"),
        ("type=bind,target=/x,size=1m", "unexpected key 'size'"),
        ("type=cache,target=/x,mode=9", "invalid value 9 for mode"),
        ("type=cache,target=/x,uid=-1", "invalid value -1 for uid"),
        ("target=/x,bogus", "must be a key=value pair"),
        ("target=/x,tagret=/y", "unexpected key 'tagret'"),
        ("type=secret,from=x,id=a", "should not have a from"),
        ("type=secret,source=a,id=b", "both source and id"),
        ("type=secret", "one of source, target required"),
        ("type=bind,target=/x,ro=maybe", "invalid value for ro"),
        ("type=bind,target=/x,env=A", "unexpected key 'env'"),
    ],
)
def test_parse_run_mount_errors(value: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        parse_run_mount(value)


def test_parse_run_mount_suggests() -> None:
    with pytest.raises(DockerfileError) as info:
        parse_run_mount("type=cahce,target=/x")
    assert "did you mean cache?" in str(info.value)


def test_parse_size() -> None:
    assert parse_size("512") == 512
    assert parse_size("1k") == 1024
    assert parse_size("1.5g") == 3 << 29
    assert parse_size("2MiB") == 2 << 20
    with pytest.raises(DockerfileError):
        parse_size("lots")


def test_with_workdir() -> None:
    m = parse_run_mount("type=cache,target=cache")
    assert with_workdir(m, "/src").target == "/src/cache"
    assert with_workdir(parse_run_mount("target=/abs"), "/src").target == "/abs"


def test_mount_stubs_are_found_and_removed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("keep\n")
    os.utime(tmp_path / "etc", ns=(1_000_000_000, 2_000_000_000))
    stubs = find_mount_stubs(
        tmp_path,
        ["/proc", "/dev", "/dev/pts", "/etc/hosts", "/etc/resolv.conf", "/run/secrets/a",
         "/run/secrets/b"],
    )
    paths = [s.path for s in stubs]
    # /dev/pts lives on the /dev mount; /etc/hosts exists.
    assert paths == ["proc", "dev", "etc/resolv.conf", "run", "run/secrets", "run/secrets/a",
                     "run/secrets/b"]
    # What a runtime does: create the mount points...
    for p in ("proc", "dev", "run/secrets/a"):
        (tmp_path / p).mkdir(parents=True)
    (tmp_path / "etc" / "resolv.conf").touch()
    (tmp_path / "run" / "secrets" / "b").touch()
    # ...and what the step did: wrote into /proc (so it stays).
    (tmp_path / "proc" / "data").write_text("x")
    remove_mount_stubs(tmp_path, stubs)
    assert sorted(os.listdir(tmp_path)) == ["etc", "proc"]
    assert os.listdir(tmp_path / "etc") == ["hosts"]
    assert os.stat(tmp_path / "etc").st_mtime_ns == 2_000_000_000


def test_mount_stub_follows_symlinked_dirs(tmp_path: Path) -> None:
    (tmp_path / "var" / "run").mkdir(parents=True)
    os.symlink("/var/run", tmp_path / "run")
    stubs = find_mount_stubs(tmp_path, ["/run/secrets/x"])
    assert [s.path for s in stubs] == ["var/run/secrets", "var/run/secrets/x"]
