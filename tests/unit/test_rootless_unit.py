"""Rootless mode, the pure parts: id mappings from /etc/subuid, the network choice, what a
user namespace changes in the OCI spec and the runtime's arguments, the default store root,
and how an exception crosses from the namespace's child process."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard._api._root import default_root
from dockyard.errors import ExecutorError, NoSpaceError, RunError, UsageError
from dockyard.executor.runtime import RuntimeInfo, _candidate_args
from dockyard.executor.spec import DEVICE_NODES, RunSpec, UserIds, oci_spec, system_mounts
from dockyard.rootless import namespace
from dockyard.rootless.idmap import (
    IdMapping,
    IdRange,
    in_user_namespace,
    parse_map,
    plan_mapping,
    subordinate_ranges,
)
from dockyard.rootless.network import choose
from dockyard.snapshot.overlay import _feature_options

SUBUID = """\
# comment
alice:100000:65536
1001:300000:1000
bob:165536:65536
broken line
carol:x:10
carol:400000:0
"""


def test_subordinate_ranges_by_name_and_uid() -> None:
    assert subordinate_ranges(SUBUID, "alice", 1001) == [(100000, 65536), (300000, 1000)]
    assert subordinate_ranges(SUBUID, "bob", 2000) == [(165536, 65536)]
    assert subordinate_ranges(SUBUID, "carol", 3000) == []  # malformed and empty ranges
    assert subordinate_ranges(SUBUID, None, 1001) == [(300000, 1000)]


def test_subordinate_layout_as_podman() -> None:
    m = plan_mapping(1000, 1000, "alice", "alice:100000:65536\n", "alice:200000:65536\n")
    assert m.kind == "subordinate"
    assert m.uids == (IdRange(0, 1000, 1), IdRange(1, 100000, 65536))
    assert m.gids == (IdRange(0, 1000, 1), IdRange(1, 200000, 65536))
    assert m.describe() == ("uid 0->1000, 1-65536->100000-165535; "
                            "gid 0->1000, 1-65536->200000-265535")
    assert m.maps_uid(1000) and m.maps_uid(65536) and not m.maps_uid(65537)


def test_several_ranges_follow_one_another() -> None:
    m = plan_mapping(5, 5, "u", "u:100:10\nu:500:20\n", "u:100:10\n")
    assert m.uids == (IdRange(0, 5, 1), IdRange(1, 100, 10), IdRange(11, 500, 20))


def test_no_subordinate_ids_is_a_single_id_mapping() -> None:
    for subuid, subgid in (("", ""), ("u:1:10\n", ""), ("", "u:1:10\n")):
        m = plan_mapping(1000, 1001, "u", subuid, subgid)
        assert m.kind == "single"
        assert (m.uids, m.gids) == ((IdRange(0, 1000, 1),), (IdRange(0, 1001, 1),))
        assert not m.maps_uid(1)


def test_root_without_sys_admin_maps_its_own_ids() -> None:
    full = (IdRange(0, 0, 4294967295),)
    m = plan_mapping(0, 0, "root", "", "", current_uids=full, current_gids=full,
                     can_setid=True)
    assert m.kind == "identity"
    # not every id: a full identity map would look like the host's namespace
    assert m.uids == (IdRange(0, 0, 4294967294),)
    assert in_user_namespace(m.uids)
    nested = (IdRange(0, 1000, 1), IdRange(1, 100000, 65536))
    m = plan_mapping(0, 0, "root", "", "", current_uids=nested, current_gids=nested,
                     can_setid=True)
    assert m.uids == (IdRange(0, 0, 1), IdRange(1, 1, 65536))


def test_in_user_namespace_reads_the_map() -> None:
    assert not in_user_namespace((IdRange(0, 0, 4294967295),))
    assert in_user_namespace(parse_map("0 1000 1\n1 100000 65536\n"))
    assert parse_map("  0  1000  1\nbad\n") == (IdRange(0, 1000, 1),)


@given(st.integers(0, 2**31), st.lists(st.tuples(st.integers(1, 2**31), st.integers(1, 2**20)),
                                       min_size=1, max_size=4))
def test_mapped_ids_are_contiguous_from_zero(uid: int, ranges: list[tuple[int, int]]) -> None:
    text = "".join(f"u:{start}:{count}\n" for start, count in ranges)
    m = plan_mapping(uid, uid, "u", text, text)
    inside = 0
    for r in m.uids:
        assert r.inside == inside
        inside += r.count
    assert inside == 1 + sum(c for _, c in ranges)
    assert m.maps_uid(inside - 1) and not m.maps_uid(inside)


def test_network_choice() -> None:
    assert choose("none", rootless=True) == "none"
    assert choose("default", rootless=False, host_usable=False) == "host"
    assert choose("default", rootless=True, host_usable=True) == "host"
    assert choose("host", rootless=True, host_usable=False) == "host"
    assert choose("default", rootless=True, host_usable=False, installed="pasta") == "pasta"
    with pytest.raises(ExecutorError) as err:
        choose("default", rootless=True, host_usable=False, installed=None)
    assert "slirp4netns" in str(err.value) and "--network=none" in str(err.value)
    with pytest.raises(UsageError):
        choose("bridge", rootless=True)


def _spec(network: str = "host") -> RunSpec:
    return RunSpec(args=("true",), env=(), cwd="/", user="", network=network,  # type: ignore[arg-type]
                   mounts=())


def test_rootless_spec_binds_sys_and_no_devices(tmp_path: Path) -> None:
    files = {"resolv_conf": tmp_path / "r", "hosts": tmp_path / "h"}
    root = system_mounts(privileged=False, **files)
    assert any(m.destination == "/dev/null" for m in root)
    rootless_host = system_mounts(privileged=False, rootless=True, **files)
    assert not any(m.destination in DEVICE_NODES for m in rootless_host)  # runtime binds them
    sys_mount = next(m for m in rootless_host if m.destination == "/sys")
    assert (sys_mount.type, sys_mount.source) == ("bind", "/sys")
    assert {"rbind", "ro", "nodev", "nosuid", "noexec"} <= set(sys_mount.options)
    own = system_mounts(privileged=False, rootless=True, own_network=True, **files)
    assert next(m for m in own if m.destination == "/sys").type == "sysfs"


def test_rootless_spec_limits_and_network_path() -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    config = oci_spec(Path("/r"), _spec(), UserIds(0, 0, ()), [], rootless=True,
                      network_path="/tmp/ns/netns", hostname=False)
    nproc = next(r for r in config["process"]["rlimits"] if r["type"] == "RLIMIT_NPROC")
    if hard != resource.RLIM_INFINITY:
        assert nproc["hard"] <= hard
    assert {"type": "network", "path": "/tmp/ns/netns"} in config["linux"]["namespaces"]
    assert "hostname" not in config
    assert "seccomp" in config["linux"] and config["linux"]["maskedPaths"]


def test_rootless_runtime_arguments() -> None:
    assert _candidate_args("runc", "hybrid", rootless=True) == [((), ("--rootless=true",))]
    assert _candidate_args("crun", "hybrid", rootless=True) == [
        ((), ("--cgroup-manager=disabled",))]
    info = RuntimeInfo("crun", "/usr/bin/crun", "1.8", "v2", (), rootless=True)
    assert not info.cgroups  # no cgroup of its own in a user namespace
    assert info.device_barrier  # no device node can be made there at all


def test_overlay_uses_user_xattrs_in_a_user_namespace() -> None:
    assert "userxattr" in _feature_options(userns=True)
    assert "userxattr" not in _feature_options(userns=False)
    assert not any(o.startswith("redirect_dir=off") for o in _feature_options(userns=True))


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DOCKYARD_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    # inside dockyard's namespace everyone is root: the uid outside decides
    monkeypatch.setenv("_DOCKYARD_USERNS", "1000")
    assert default_root() == str(tmp_path / ".local" / "share" / "dockyard")
    monkeypatch.setenv("XDG_DATA_HOME", "/data")
    assert default_root() == "/data/dockyard"
    monkeypatch.setenv("XDG_DATA_HOME", "relative")  # ignored, as the XDG spec says
    assert default_root() == str(tmp_path / ".local" / "share" / "dockyard")
    monkeypatch.setenv("_DOCKYARD_USERNS", "0")
    assert default_root() == "/var/lib/dockyard"
    monkeypatch.setenv("DOCKYARD_ROOT", "/x")
    assert default_root() == "/x"


@pytest.mark.parametrize("err", [
    NoSpaceError("a layer", "/store"),
    RunError("boom", command="false", exit_code=3, output_tail=["x"]),
    ExecutorError("no runtime", hint="install runc"),
    KeyboardInterrupt(),
    ValueError("plain"),
])
def test_exceptions_cross_the_pipe(err: BaseException) -> None:
    back = namespace._unpack_error(pickle.loads(pickle.dumps(namespace._pack_error(err))))
    assert type(back) is type(err)
    assert str(back) == str(err)
    if isinstance(err, RunError):
        assert isinstance(back, RunError)
        assert (back.exit_status, back.output_tail, back.render()) == (
            3, ["x"], err.render())


def test_unpicklable_exception_becomes_a_plain_error() -> None:
    class Local(Exception):
        pass

    back = namespace._unpack_error(namespace._pack_error(Local("odd")))
    assert "Local: odd" in str(back)


def test_cannot_enter_with_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(threading, "active_count", lambda: 2)
    with pytest.raises(ExecutorError, match="single-threaded"):
        namespace._unshare(IdMapping("single", (IdRange(0, 1, 1),), (IdRange(0, 1, 1),)))


def test_forbidden_user_namespaces_say_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class Libc:
        def unshare(self, flags: int) -> int:
            return -1

    monkeypatch.setattr(namespace, "_libc", lambda: Libc())
    monkeypatch.setattr(namespace, "_errno", lambda: 1)  # EPERM
    # an earlier test in this worker may have left a thread running (a pool's worker):
    # the single-threaded guard is not what this test is about
    monkeypatch.setattr(namespace.threading, "active_count", lambda: 1)
    with pytest.raises(ExecutorError) as err:
        namespace._unshare(IdMapping("single", (IdRange(0, 1, 1),), (IdRange(0, 1, 1),)))
    text = str(err.value)
    assert "\n" not in text
    assert "cannot create a user namespace (Operation not permitted)" in text
    assert "docs/rootless.md" in text


def test_forbidden_namespace_with_map_writers_is_still_one_line(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """An identity mapping forks a map writer per id kind before the unshare; when the
    unshare is refused they must leave without writing (and complaining about) a map, so
    the error stays the one line (seen in a docker container with its default seccomp)."""
    class Libc:
        def unshare(self, flags: int) -> int:
            return -1

    monkeypatch.setattr(namespace, "_libc", lambda: Libc())
    monkeypatch.setattr(namespace, "_errno", lambda: 1)  # EPERM
    monkeypatch.setattr(namespace.threading, "active_count", lambda: 1)
    ids = (IdRange(0, 0, 65536),)
    with pytest.raises(ExecutorError, match="cannot create a user namespace"):
        namespace._unshare(IdMapping("identity", ids, ids))
    assert capfd.readouterr().err == ""


def test_ids_the_namespace_lacks_are_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from dockyard.rootless import idmap

    monkeypatch.setattr(idmap, "in_user_namespace", lambda: True)
    single = {"uid": (IdRange(0, 1000, 1),), "gid": (IdRange(0, 1000, 1),)}
    monkeypatch.setattr(idmap, "current_map", lambda which="uid": single[which])
    idmap.check_ids("RUN", 0, 0)  # root exists in every mapping
    with pytest.raises(ExecutorError) as info:
        idmap.check_ids("COPY --chown=1000:5", 1000, 5)
    assert str(info.value).startswith(
        "COPY --chown=1000:5: uid 1000, gid 5 do not exist in this user namespace "
        "(ids 0-0 are mapped)")
    assert "usermod --add-subuids" in (info.value.hint or "")
    sub = {"uid": (IdRange(0, 1000, 1), IdRange(1, 100000, 65536)),
           "gid": (IdRange(0, 1000, 1), IdRange(1, 100000, 65536))}
    monkeypatch.setattr(idmap, "current_map", lambda which="uid": sub[which])
    idmap.check_ids("USER 1000", 1000, 1000, (4, 65536))
    with pytest.raises(ExecutorError, match="gid 65537 does not exist"):
        idmap.check_ids("USER app", 1000, 1000, (65537,))


def test_tty_group_only_where_mapped(tmp_path: Path) -> None:
    def devpts(tty_gid: int | None) -> tuple[str, ...]:
        mounts = system_mounts(privileged=False, resolv_conf=tmp_path / "r",
                               hosts=tmp_path / "h", rootless=True, tty_gid=tty_gid)
        return next(m.options for m in mounts if m.destination == "/dev/pts")

    assert "gid=5" in devpts(5)
    assert not any(o.startswith("gid=") for o in devpts(None))


def test_the_up_to_date_walk_sees_outside_ids_in_the_namespace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In the user namespace, the recorder's walk turns ids back into the outside ones, so
    its record can match the walk made before the namespace is entered."""
    from dockyard import quick

    assert quick._outside_ids() is None  # not entered
    uids = (IdRange(0, 1000, 1), IdRange(1, 100000, 65536))
    gids = (IdRange(0, 1001, 1), IdRange(1, 200000, 65536))
    monkeypatch.setattr(namespace, "_entered", IdMapping("subordinate", uids, gids))
    ids = quick._outside_ids()
    assert ids is not None
    uid, gid = ids
    assert [uid(0), uid(1), uid(999), uid(65536), uid(65537)] == [
        1000, 100000, 100998, 165535, 65537]
    assert [gid(0), gid(5)] == [1001, 200004]
