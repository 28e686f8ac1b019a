"""The planner's expansion and config rules (no root): ENV over ARG, ARG defaults and
overrides, global ARGs, ENTRYPOINT/CMD, SHELL, EXPOSE, WORKDIR, ONBUILD."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from dockyard.dockerfile.stages import load_dockerfile, resolve
from dockyard.errors import DockerfileError, Location
from dockyard.plan.model import BuildPlan, CopyOp, MkdirOp, RunOp, Step
from dockyard.plan.planner import DEFAULT_PATH, plan_build

BASE_CONFIG: dict[str, Any] = {"Env": ["PATH=/bin"], "Cmd": ["sh"]}


def make_plan(
    text: str,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    images: Mapping[str, dict[str, Any]] | None = None,
    asked: list[str] | None = None,
) -> BuildPlan:
    """Plan ``text`` with base images answered from ``images`` (default: a busybox-like one)."""
    args = dict(build_args or {})

    def lookup(ref: str, location: Location, platform: str) -> tuple[str, dict[str, Any]]:
        if asked is not None:
            asked.append(ref)
        config = (images or {}).get(ref, BASE_CONFIG)
        return f"sha256:{abs(hash(ref)):064d}"[:71], {"config": config}

    graph = resolve(load_dockerfile(text), args, target, None)
    return plan_build(graph, lookup, platform="linux/amd64", build_args=args)


def ops(plan: BuildPlan, stage: int = -1) -> list[Step]:
    return [s for s in plan.stages[stage].steps if s.op is not None]


def copy_op(step: Step) -> CopyOp:
    assert isinstance(step.op, CopyOp)
    return step.op


def run_op(step: Step) -> RunOp:
    assert isinstance(step.op, RunOp)
    return step.op


def env_of(plan: BuildPlan, stage: int = -1) -> dict[str, str]:
    return dict(e.split("=", 1) for e in plan.stages[stage].config.get("Env") or [])


def test_env_overrides_arg() -> None:
    plan = make_plan("FROM busybox\n"
                     "ARG V=arg\n"
                     "COPY $V /before\n"
                     "ENV V=env\n"
                     "COPY $V /after\n"
                     "RUN echo $V\n",
                     build_args={"V": "cli"})
    before, after, run = ops(plan)
    assert copy_op(before).sources == ("cli",)
    assert copy_op(after).sources == ("env",)
    assert [e for e in run_op(run).env if e.startswith("V=")] == ["V=env"]
    assert [e for e in run_op(run).key_env if e.startswith("V=")] == ["V=env"]


def test_arg_default_and_build_arg_override() -> None:
    text = "FROM busybox\nARG A=default\nARG B\nCOPY $A ${B:-unset} /d/\nRUN echo $A\n"
    copy, run = ops(make_plan(text))
    assert copy_op(copy).sources == ("default", "unset")
    assert "A=default" in run_op(run).env
    copy, run = ops(make_plan(text, {"A": "over", "B": "b"}))
    assert copy_op(copy).sources == ("over", "b")
    assert "A=over" in run_op(run).env and "B=b" in run_op(run).env
    # ARGs reach RUN's environment but not the image config
    assert "A" not in env_of(make_plan(text, {"A": "over"}))


def test_arg_default_can_use_earlier_args_and_env() -> None:
    (copy,) = ops(make_plan("FROM busybox\nENV E=e\nARG A=a\nARG B=${A}-${E}\nCOPY $B /x\n"))
    assert copy_op(copy).sources == ("a-e",)


def test_global_arg_needs_redeclaring_in_the_stage() -> None:
    asked: list[str] = []
    text = ("ARG BASE=busybox\n"
            "ARG G=global\n"
            "FROM $BASE\n"
            "COPY ${G:-none} /x\n"
            "ARG G\n"
            "COPY $G /y\n")
    out_of_scope, redeclared = ops(make_plan(text, asked=asked))
    assert asked == ["busybox"]
    assert copy_op(out_of_scope).sources == ("none",)
    assert copy_op(redeclared).sources == ("global",)
    _, redeclared = ops(make_plan(text, {"G": "cli", "BASE": "other"}, asked=asked))
    assert copy_op(redeclared).sources == ("cli",)
    assert asked[-1] == "other"


def test_entrypoint_resets_inherited_cmd() -> None:
    plan = make_plan("FROM busybox\nENTRYPOINT [\"/ep\"]\n")
    assert plan.stages[0].config["Entrypoint"] == ["/ep"]
    assert not plan.stages[0].config.get("Cmd")
    # a CMD given in this stage before ENTRYPOINT is kept, and one after it too
    kept = make_plan("FROM busybox\nCMD [\"a\"]\nENTRYPOINT [\"/ep\"]\n").stages[0].config
    assert kept["Cmd"] == ["a"]
    after = make_plan("FROM busybox\nENTRYPOINT [\"/ep\"]\nCMD [\"b\"]\n").stages[0].config
    assert after["Cmd"] == ["b"]


def test_entrypoint_resets_cmd_of_a_stage_base() -> None:
    plan = make_plan("FROM busybox AS base\nCMD [\"x\"]\nFROM base\nENTRYPOINT [\"/ep\"]\n")
    assert plan.stages[0].config["Cmd"] == ["x"]
    assert not plan.stages[1].config.get("Cmd")


def test_shell_form_uses_shell() -> None:
    plan = make_plan("FROM busybox\n"
                     "CMD echo default\n"
                     "SHELL [\"/bin/bash\", \"-xc\"]\n"
                     "CMD echo hi\n"
                     "ENTRYPOINT exec app\n"
                     "RUN echo run\n"
                     "RUN [\"/bin/true\", \"x\"]\n")
    config = plan.stages[0].config
    assert config["Cmd"] == ["/bin/bash", "-xc", "echo hi"]
    assert config["Entrypoint"] == ["/bin/bash", "-xc", "exec app"]
    shell_run, exec_run = ops(plan)
    assert run_op(shell_run).args == ("/bin/bash", "-xc", "echo run")
    assert run_op(exec_run).args == ("/bin/true", "x")
    default = make_plan("FROM busybox\nCMD echo default\n").stages[0].config
    assert default["Cmd"] == ["/bin/sh", "-c", "echo default"]


def test_expose_ranges_and_protocols() -> None:
    config = make_plan("FROM busybox\nARG P=9000\nEXPOSE 8000-8002/udp 80 ${P}/TCP\n"
                       ).stages[0].config
    assert set(config["ExposedPorts"]) == {"8000/udp", "8001/udp", "8002/udp", "80/tcp",
                                          "9000/tcp"}
    with pytest.raises(DockerfileError):
        make_plan("FROM busybox\nEXPOSE 90-80\n")


def test_workdir_relative_join_and_mkdir_op() -> None:
    plan = make_plan("FROM busybox\n"
                     "ENV D=data\n"
                     "WORKDIR /a\n"
                     "WORKDIR b\n"
                     "WORKDIR ../c/$D\n"
                     "USER app\n"
                     "WORKDIR sub\n"
                     "COPY f .\n")
    steps = ops(plan)
    mkdirs = [s.op for s in steps if isinstance(s.op, MkdirOp)]
    assert [(m.path, m.user) for m in mkdirs] == [
        ("/a", ""), ("/a/b", ""), ("/a/c/data", ""), ("/a/c/data/sub", "app")]
    assert plan.stages[0].config["WorkingDir"] == "/a/c/data/sub"
    copy = copy_op(steps[-1])
    assert (copy.dest, copy.workdir, copy.user) == (".", "/a/c/data/sub", "app")


def test_onbuild_triggers_run_in_the_child_only() -> None:
    images = {"parent": {"Env": ["PATH=/bin"],
                         "OnBuild": ["ENV FROM_TRIGGER=1", "RUN echo trig > /trig"]}}
    plan = make_plan("FROM parent\nRUN echo own\n", images=images)
    steps = plan.stages[0].steps
    assert [s.instruction for s in steps] == ["ENV", "RUN", "RUN"]
    assert run_op(steps[1]).args[-1] == "echo trig > /trig"
    assert "FROM_TRIGGER=1" in run_op(steps[2]).env
    assert "OnBuild" not in plan.stages[0].config
    # declared in a stage: stored in its config, run by the stage built on it
    plan = make_plan("FROM busybox AS a\nONBUILD RUN echo later\nRUN echo now\n"
                     "FROM a\nRUN echo child\n")
    assert plan.stages[0].config["OnBuild"] == ["RUN echo later"]
    assert [run_op(s).args[-1] for s in ops(plan, 0)] == ["echo now"]
    assert [run_op(s).args[-1] for s in ops(plan, 1)] == ["echo later", "echo child"]
    assert "OnBuild" not in plan.stages[1].config


def test_scratch_gets_default_path_and_unused_stages_are_not_planned() -> None:
    asked: list[str] = []
    plan = make_plan("FROM missing:image AS unused\nRUN x\nFROM scratch\nCOPY a /a\n",
                     asked=asked)
    assert asked == []
    assert not plan.stages[0].needed and plan.stages[0].steps == ()
    assert env_of(plan) == {"PATH": DEFAULT_PATH}


def test_run_env_and_key_env() -> None:
    (run,) = ops(make_plan("FROM busybox\nARG USED=u\nARG UNUSED=x\nENV E=e\n"
                           "RUN echo ${USED}\n"))
    op = run_op(run)
    assert "UNUSED=x" in op.env and "USED=u" in op.env  # the process sees every ARG in scope
    # and so does the key (BuildKit: every build arg is in the exec's env), named or not
    assert "UNUSED=x" in op.key_env and "USED=u" in op.key_env
    assert "E=e" in op.key_env
    assert run.used_args == (("UNUSED", "x"), ("USED", "u"))


def test_proxy_args_reach_run_and_the_key_by_digest() -> None:
    """An undeclared proxy build arg reaches the process, so its key (FINDINGS soundness-3:
    BuildKit leaves it out and is stale), as a digest: no password of a proxy URL is kept."""
    def run_with(args: dict[str, str]) -> RunOp:
        (run,) = ops(make_plan("FROM busybox\nRUN wget x\n", args))
        return run_op(run)

    one = run_with({"HTTP_PROXY": "http://user:pw@proxy:3128"})
    assert "HTTP_PROXY=http://user:pw@proxy:3128" in one.env
    assert not any("pw@" in e for e in one.key_env) and "pw@" not in one.proxy_digest
    assert one.proxy_digest.startswith("sha256:")
    assert run_with({"HTTP_PROXY": "http://proxy:3129"}).proxy_digest != one.proxy_digest
    assert run_with({"https_proxy": "http://user:pw@proxy:3128"}).proxy_digest != \
        one.proxy_digest
    assert run_with({}).proxy_digest == ""


def test_declared_proxy_arg_is_in_the_key() -> None:
    (run,) = ops(make_plan("FROM busybox\nARG HTTP_PROXY\nRUN wget x\n",
                           {"HTTP_PROXY": "http://proxy:3128"}))
    assert "HTTP_PROXY=http://proxy:3128" in run_op(run).key_env


@pytest.mark.parametrize("how", ["default", "build-arg", "global"])
def test_sbom_scan_args_are_declared_but_not_in_the_environment(how: str) -> None:
    """BuildKit's nonEnvArgs: ``ARG BUILDKIT_SBOM_SCAN_STAGE`` / ``..._CONTEXT`` switch SBOM
    scanning on; RUN never sees them (so no key holds them), words expand them to nothing,
    and the RUN's history lists them with their value."""
    value = "" if how == "build-arg" else "=true"
    text = ("ARG BUILDKIT_SBOM_SCAN_CONTEXT=true\n" if how == "global" else "") + (
        "FROM busybox\n"
        f"ARG BUILDKIT_SBOM_SCAN_STAGE{value if how != 'global' else ''}\n"
        "ARG BUILDKIT_SBOM_SCAN_CONTEXT\n"
        "ARG OTHER=1\n"
        "ENV SEEN=x${BUILDKIT_SBOM_SCAN_STAGE}${BUILDKIT_SBOM_SCAN_CONTEXT}\n"
        "RUN env\n")
    args = {"BUILDKIT_SBOM_SCAN_STAGE": "true"} if how != "default" else {}
    plan = make_plan(text, args)
    (run,) = ops(plan)
    op = run_op(run)
    for env in (op.env, op.key_env):
        assert not any(e.startswith("BUILDKIT_SBOM_SCAN_") for e in env), env
        assert "OTHER=1" in env
    assert env_of(plan)["SEEN"] == "x"
    assert run.created_by.startswith("RUN |3 BUILDKIT_SBOM_SCAN_STAGE=true "
                                     "BUILDKIT_SBOM_SCAN_CONTEXT=")
    if how == "global":
        assert "BUILDKIT_SBOM_SCAN_CONTEXT=true OTHER=1" in run.created_by


def test_copy_from_stage_and_image() -> None:
    plan = make_plan("FROM busybox AS Build\nRUN make\nFROM busybox\n"
                     "COPY --from=build /a /a\nCOPY --from=0 /b /b\n"
                     "COPY --from=alpine:3 /c /c\n")
    by_name, by_index, image = (copy_op(s) for s in ops(plan))
    assert (by_name.source_kind, by_name.source_stage) == ("stage", 0)
    assert (by_index.source_kind, by_index.source_stage) == ("stage", 0)
    assert (image.source_kind, image.source_name) == ("image", "alpine:3")
    assert plan.stages[1].depends_on == (0,)


def test_step_numbering_follows_dockerfile_order() -> None:
    plan = make_plan("FROM busybox AS a\nRUN 1\nENV X=1\nRUN 2\nFROM busybox\nCOPY --from=a / /\n")
    vertices = [(s.stage_index, s.vertex, s.position, s.count) for st in plan.stages
                for s in st.steps if s.op is not None]
    assert vertices == [(0, 2, 2, 3), (0, 3, 3, 3), (1, 5, 2, 2)]


def test_run_history_is_buildkits_form() -> None:
    """``RUN |N K=V ... argv # buildkit`` (BuildKit's runCommandString): the stage's declared
    ARGs with the value the RUN sees (empty without one), then the argv joined by spaces."""
    plan = make_plan("FROM scratch\n"
                 "RUN echo plain\n"
                 "ARG VERSION=2\n"
                 "ARG EMPTY\n"
                 "RUN echo $VERSION\n"
                 "ENV VERSION=3\n"
                 'RUN ["echo", "exec form"]\n')
    history = [s.created_by for s in plan.stages[0].steps if s.instruction == "RUN"]
    assert history == [
        "RUN /bin/sh -c echo plain # buildkit",
        "RUN |2 VERSION=2 EMPTY= /bin/sh -c echo $VERSION # buildkit",
        "RUN |2 VERSION=3 EMPTY= echo exec form # buildkit",
    ]


def _named_plan(text: str, dirs: tuple[str, ...] = (), images: Mapping[str, str] | None = None,
                target: str | None = None, asked: list[str] | None = None) -> BuildPlan:
    """Plan ``text`` with named build contexts: directories ``dirs`` and ``images``
    (name -> docker-image reference)."""
    images = dict(images or {})

    def lookup(ref: str, location: Location, platform: str) -> tuple[str, dict[str, Any]]:
        if asked is not None:
            asked.append(ref)
        return f"sha256:{abs(hash(ref)):064d}"[:71], {"config": BASE_CONFIG}

    graph = resolve(load_dockerfile(text), {}, target, None,
                    named_contexts=[*dirs, *images])
    return plan_build(graph, lookup, platform="linux/amd64", build_args={},
                      named_images=images)


NAMED = """\
FROM busybox AS src
RUN echo stage > /f
FROM busybox
COPY --from=src /f /f
RUN --mount=type=bind,from=src,target=/m cat /m/f
"""


def test_a_named_context_wins_over_a_stage_of_the_same_name() -> None:
    plain = _named_plan(NAMED)
    assert plain.stages[0].needed and copy_op(ops(plain)[0]).source_kind == "stage"
    plan = _named_plan(NAMED, dirs=("src",))
    assert not plan.stages[0].needed  # the stage is never built: the context replaces it
    assert plan.stages[1].depends_on == ()
    op = copy_op(ops(plan)[0])
    assert (op.source_kind, op.source_name, op.source_stage) == ("image", "src", None)
    assert plan.named_contexts == frozenset({"src"})


def test_from_a_named_directory_context_copies_its_files_first() -> None:
    plan = _named_plan("FROM Data\nENV A=1\nCOPY x /x\n", dirs=("data",))
    stage = plan.stages[0]
    assert stage.base.kind == "scratch"
    first = ops(plan)[0]
    assert (first.position, first.count, first.display) == (2, 3, "COPY --from=data . /")
    op = copy_op(first)
    assert (op.source_kind, op.source_name, op.sources, op.dest) == (
        "named-context", "data", (".",), "/")
    assert env_of(plan) == {"PATH": DEFAULT_PATH, "A": "1"}


def test_from_a_named_image_context_and_a_replaced_target() -> None:
    asked: list[str] = []
    text = "FROM scratch AS base\nCOPY never /never\nFROM base\nRUN true\n"
    plan = _named_plan(text, images={"base": "busybox:1.36"}, asked=asked)
    assert plan.stages[1].base.kind == "image" and plan.stages[1].base.name == "busybox:1.36"
    assert asked == ["busybox:1.36"] and not plan.stages[0].needed
    # the replaced stage as the target: the context, none of its own instructions
    target = _named_plan(text, images={"base": "busybox:1.36"}, target="base")
    assert target.stages[0].base.name == "busybox:1.36" and target.stages[0].steps == ()


# Every field of an image config (OCI's, and Docker's Shell and OnBuild). FROM keys only the
# base's layers (keys.from_layers_key), so what a step reads from the config must reach its
# op, and so its key; the rest must not change any op.
READ_BY_STEPS: dict[str, Any] = {
    "Env": ["PATH=/bin", "HOME=/home/other"],
    "User": "1000",
    "WorkingDir": "/srv",
    "Shell": ["/bin/bash", "-c"],
    "OnBuild": ["RUN echo trigger"],
}
METADATA_ONLY: dict[str, Any] = {
    "Labels": {"a": "b"},
    "Cmd": ["other"],
    "Entrypoint": ["/entry"],
    "ExposedPorts": {"80/tcp": {}},
    "Volumes": {"/data": {}},
    "StopSignal": "SIGKILL",
    "Healthcheck": {"Test": ["CMD", "true"]},
    "ArgsEscaped": True,
}
CONFIG_TEXT = """\
FROM base
RUN echo "$HOME" > out
RUN ["cat", "out"]
COPY a rel/
ADD b $HOME/b
COPY --chown=app c /c
WORKDIR sub
RUN true
"""


def _ops_over(config: dict[str, Any]) -> list[Any]:
    plan = make_plan(CONFIG_TEXT, images={"base": config})
    return [(s.instruction, s.op) for s in plan.stages[-1].steps if s.op is not None]


def test_base_config_reaches_keys_only_through_ops() -> None:
    base = {"Env": ["PATH=/bin", "HOME=/root"], "User": "", "WorkingDir": "/",
            "Cmd": ["sh"]}
    fields = set(READ_BY_STEPS) | set(METADATA_ONLY)
    assert fields == {"User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes",
                      "WorkingDir", "Labels", "StopSignal", "ArgsEscaped", "Healthcheck",
                      "OnBuild", "Shell"}
    plain = _ops_over(base)
    for name, value in METADATA_ONLY.items():
        assert _ops_over({**base, name: value}) == plain, f"{name} changed an op"
    for name, value in READ_BY_STEPS.items():
        assert _ops_over({**base, name: value}) != plain, f"{name} reaches no op"
