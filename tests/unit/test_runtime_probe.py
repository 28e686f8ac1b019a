"""The runtime probe's cache and the wrapper that joins dockyard's own cgroups (crun on a
hybrid host): no container is started here; the probe itself is replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.executor import runtime, v1cgroups
from dockyard.executor.runtime import RuntimeInfo, hide_cgroup2_wrapper


@pytest.fixture
def fake_probe(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every probe succeeds and is recorded; own cgroups are made as empty lists."""
    probed: list[tuple[str, ...]] = []

    def probe(argv: tuple[str, ...], work: Path, *, hostname: bool = True) -> None:
        probed.append(argv)

    monkeypatch.setattr(runtime, "_probe", probe)
    monkeypatch.setattr(runtime, "_version", lambda path: "1.0")
    monkeypatch.setattr(runtime, "hide_cgroup2_wrapper",
                        lambda join=(): ("wrap", *(str(g) for g in join)))
    monkeypatch.setattr(v1cgroups, "create", lambda cid, **kw: [Path(f"/cg/{cid}")])
    monkeypatch.setattr(v1cgroups, "remove", lambda paths, **kw: None)
    monkeypatch.setattr("dockyard.rootless.idmap.in_user_namespace", lambda: False)
    return probed


def test_a_change_in_what_dockyard_may_make_probes_again(
        tmp_path: Path, fake_probe: list[tuple[str, ...]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_candidate_args",
                        lambda name, mode, rootless=False: [(("wrap",),
                                                             ("--cgroup-manager=disabled",))])
    binary = tmp_path / "crun"
    binary.write_text("")
    os.chmod(binary, 0o755)
    monkeypatch.setattr(v1cgroups, "available", lambda: True)
    first = runtime._probe_cached("crun", str(binary), "hybrid", tmp_path)
    assert first.own_cgroups and first.device_barrier
    runs = len(fake_probe)
    again = runtime._probe_cached("crun", str(binary), "hybrid", tmp_path)
    assert again == first and len(fake_probe) == runs  # from the cache
    monkeypatch.setattr(v1cgroups, "available", lambda: False)
    weaker = runtime._probe_cached("crun", str(binary), "hybrid", tmp_path)
    assert not weaker.own_cgroups and not weaker.device_barrier
    assert len(fake_probe) > runs  # probed again, not the cached answer


def test_the_run_prefix_joins_the_cgroups_and_refuses_without_them() -> None:
    info = RuntimeInfo("crun", "/usr/bin/crun", "1.8", "hybrid",
                       ("--cgroup-manager=disabled",), ("wrap",), own_cgroups=True)
    with pytest.raises(Exception, match="cgroups were not made"):
        info.run_argv_prefix([])
    plain = RuntimeInfo("runc", "/usr/sbin/runc", "1.1", "hybrid", ())
    assert plain.run_argv_prefix([]) == plain.argv_prefix


def test_no_wrapper_to_join_with_refuses_rather_than_runs_outside(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: crun without the joining wrapper would run without a device cgroup."""
    monkeypatch.setattr(runtime, "cgroup2_mounts_outside_root", lambda: [])
    info = RuntimeInfo("crun", "/usr/bin/crun", "1.8", "hybrid",
                       ("--cgroup-manager=disabled",), ("wrap",), own_cgroups=True)
    with pytest.raises(Exception, match="cannot start crun inside its cgroups"):
        info.run_argv_prefix([Path("/sys/fs/cgroup/devices/dockyard/c1")])


def test_the_wrapper_writes_its_pid_to_each_cgroup_before_the_exec(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cgroup2_mounts_outside_root",
                        lambda: ["/sys/fs/cgroup/unified"])
    argv = hide_cgroup2_wrapper(join=[Path("/sys/fs/cgroup/devices/dockyard/c1"),
                                      Path("/sys/fs/cgroup/pids/dockyard/c1")])
    script = argv[argv.index("-c") + 1]
    assert script == ("echo $$ > /sys/fs/cgroup/devices/dockyard/c1/cgroup.procs && "
                      "echo $$ > /sys/fs/cgroup/pids/dockyard/c1/cgroup.procs && "
                      "umount -l /sys/fs/cgroup/unified && exec \"$0\" \"$@\"")
