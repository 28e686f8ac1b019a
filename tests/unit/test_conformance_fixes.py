"""The fixes that closed issue 7's open conformance differences (see docs/compat.md).

Each test pins one BuildKit behaviour the conformance suite found: ARG/ENV order in the RUN
environment, several COPY sources onto a non-slash destination, ``--chmod`` special bits,
hardlink headers in an ADDed tar, and SSH_AUTH_SOCK for an optional ssh mount.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from dockyard.context.copy import ChmodSpec, copy_into, parse_chmod
from dockyard.dockerfile.stages import load_dockerfile, resolve
from dockyard.errors import ContextError, DockerfileError, ExecutorError, Location
from dockyard.executor.mounts import parse_run_mount, ssh_mount
from dockyard.layers.apply import apply_layer
from dockyard.plan.model import BuildPlan, CopyOp, RunOp, Step
from dockyard.plan.planner import plan_build

BASE: dict[str, Any] = {"Env": ["PATH=/bin"], "Cmd": ["sh"]}


def make_plan(text: str, build_args: Mapping[str, str] | None = None) -> BuildPlan:
    args = dict(build_args or {})

    def lookup(ref: str, location: Location, platform: str) -> tuple[str, dict[str, Any]]:
        return "sha256:" + "0" * 64, {"config": BASE}

    return plan_build(resolve(load_dockerfile(text), args, None, None), lookup,
                      platform="linux/amd64", build_args=args)


def op_steps(plan: BuildPlan, stage: int = -1) -> list[Step]:
    return [s for s in plan.stages[stage].steps if s.op is not None]


def run_env(step: Step) -> dict[str, str]:
    assert isinstance(step.op, RunOp)
    return dict(e.split("=", 1) for e in step.op.env)


def config_env(plan: BuildPlan, stage: int = -1) -> dict[str, str]:
    return dict(e.split("=", 1) for e in plan.stages[stage].config.get("Env") or [])


# ------------------------------------------------------------------ ARG / ENV precedence


def test_arg_redeclared_after_env_wins_for_run_and_expansion_not_config() -> None:
    text = ("FROM busybox\nARG X=arg\nENV X=env\nARG X=again\nRUN echo $X\n"
            "COPY $X /d/\n")
    run, copy = op_steps(make_plan(text, {"X": "cli"}))
    assert run_env(run)["X"] == "cli"
    assert isinstance(copy.op, CopyOp) and copy.op.sources == ("cli",)
    assert config_env(make_plan(text, {"X": "cli"}))["X"] == "env"
    # without a build arg the re-declared default is the value
    run, _ = op_steps(make_plan(text))
    assert run_env(run)["X"] == "again"


def test_arg_without_value_keeps_earlier_value_and_env() -> None:
    text = "FROM busybox\nARG A=1\nARG A\nENV C=env\nARG C\nRUN echo $A $C\n"
    (run,) = op_steps(make_plan(text))
    assert run_env(run)["A"] == "1" and run_env(run)["C"] == "env"
    (run,) = op_steps(make_plan(text, {"C": "cli"}))
    assert run_env(run)["C"] == "cli"


def test_env_after_arg_still_wins() -> None:
    (run,) = op_steps(make_plan("FROM busybox\nARG V=arg\nENV V=env\nRUN echo $V\n", {"V": "c"}))
    assert run_env(run)["V"] == "env"


def test_run_env_order_follows_latest_assignment() -> None:
    (run,) = op_steps(make_plan("FROM busybox\nENV A=1 B=2\nARG A=3\nRUN env\n"))
    assert isinstance(run.op, RunOp)
    assert [e.split("=", 1)[0] for e in run.op.env] == ["PATH", "B", "A"]
    assert run.op.env[-1] == "A=3"


def test_child_stage_inherits_parent_arg_values_with_image_env_on_top() -> None:
    parent = "FROM busybox AS base\nARG LEAK=from-base\nENV KEEP=env\nARG KEEP=arg\n"
    plan = make_plan(parent + "FROM base\nRUN echo $LEAK $KEEP\nENV OUT=$LEAK\n")
    (child_run,) = op_steps(plan)
    env = run_env(child_run)
    assert env["LEAK"] == "from-base"
    assert env["KEEP"] == "env"  # the image env is re-applied over the inherited state
    assert config_env(plan)["OUT"] == "from-base"
    assert "LEAK" not in config_env(plan)
    plan = make_plan(parent + "RUN true\nFROM busybox\nCOPY --from=base /x /x\nRUN echo $LEAK\n")
    (_, fresh_run) = op_steps(plan)
    assert "LEAK" not in run_env(fresh_run)


def test_required_variable_error_names_the_message() -> None:
    with pytest.raises(DockerfileError, match="V must be set"):
        make_plan("FROM busybox\nARG V\nWORKDIR /${V:?V must be set}\n")
    plan = make_plan("FROM busybox\nARG V=x\nWORKDIR /${V:?no}\n")
    assert plan.stages[-1].config["WorkingDir"] == "/x"


# ------------------------------------------------------------------ COPY


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "dir").mkdir(parents=True)
    (root / "a").write_text("a")
    (root / "b").write_text("bb")
    (root / "dir" / "c").write_text("c")
    return root


def copy(ctx: Path, dst: Path, sources: list[str], dest: str, chmod: ChmodSpec | None = None) -> None:
    copy_into(ctx, sources, dest, dst, workdir="/", chown=None, chmod=chmod, parents=False,
              excludes=(), is_add=False, ignore=None)


def test_several_sources_onto_a_non_slash_path(ctx: Path, tmp_path: Path) -> None:
    dst = tmp_path / "root"
    dst.mkdir()
    copy(ctx, dst, ["a", "b"], "/not-a-dir")
    assert (dst / "not-a-dir").read_text() == "bb"  # the last source wins
    copy(ctx, dst, ["dir", "a"], "/fresh")
    assert sorted(os.listdir(dst / "fresh")) == ["a", "c"]  # the dir source made a directory
    copy(ctx, dst, ["?"], "/wild")
    assert (dst / "wild").read_text() == "bb"  # a wildcard matching several: the same
    with pytest.raises(ContextError, match="non-directory"):
        copy(ctx, dst, ["a", "dir"], "/file-then-dir")


def test_chmod_octal_special_bits(ctx: Path, tmp_path: Path) -> None:
    dst = tmp_path / "root"
    dst.mkdir()
    copy(ctx, dst, ["a"], "/suid", parse_chmod("4755"))
    assert stat.S_IMODE(os.stat(dst / "suid").st_mode) == 0o4755
    os.chmod(ctx / "b", 0o2755)
    copy(ctx, dst, ["b"], "/sgid-kept", parse_chmod("0700"))
    assert stat.S_IMODE(os.stat(dst / "sgid-kept").st_mode) == 0o2700
    assert ChmodSpec(octal=0o1755).apply(0o4644, is_dir=False) == 0o5755


# ------------------------------------------------------------------ tar hardlink headers


def test_hardlink_header_metadata_lands_on_the_shared_inode(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("f")
        info.size, info.mode, info.uid, info.gid = 5, 0o640, 1234, 5678
        tf.addfile(info, io.BytesIO(b"data\n"))
        link = tarfile.TarInfo("g")
        link.type, link.linkname, link.mode, link.uid, link.gid = tarfile.LNKTYPE, "f", 0o600, 42, 43
        tf.addfile(link)
    root = tmp_path / "root"
    root.mkdir()
    buf.seek(0)
    apply_layer(buf, root)
    for name in ("f", "g"):
        st = os.lstat(root / name)
        assert stat.S_IMODE(st.st_mode) == 0o600
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (42, 43)
    assert os.stat(root / "f").st_ino == os.stat(root / "g").st_ino


# ------------------------------------------------------------------ ssh mounts


def test_optional_ssh_mount_without_agent_still_sets_sock() -> None:
    m = parse_run_mount("type=ssh", index=0)
    spec, env = ssh_mount(m, None)
    assert spec is None and env == ("SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0",)
    assert ssh_mount(parse_run_mount("type=ssh,target=/s", index=1), None)[1] == ("SSH_AUTH_SOCK=/s",)
    with pytest.raises(ExecutorError):
        ssh_mount(parse_run_mount("type=ssh,required=true", index=0), None)
