"""Cache-key rules (no root): what does and does not change a RUN key, COPY --link, chaining."""

from __future__ import annotations

from typing import Any

import pytest
from test_planner import make_plan, ops, run_op

from dockyard.plan.model import CopyOp, MkdirOp
from dockyard.solver import keys
from dockyard.solver.ops.run import network_mode

PARENT = keys.from_layers_key(["sha256:" + "1" * 64], "linux/amd64")


def run_key(text: str, build_args: dict[str, str] | None = None, index: int = -1, *,
            network: str = "host", sde: int | None = None) -> str:
    """The key of the stage's ``index``-th layer step, which must be a RUN, on PARENT."""
    step = ops(make_plan(text, build_args))[index]
    op = run_op(step)
    return keys.layer_key("run", PARENT, keys.run_components(
        op, [], "linux/amd64", network=network_mode(op, network), source_date_epoch=sde))


BASE = "FROM busybox\n{meta}\nRUN make\n"


@pytest.mark.parametrize("meta", [
    "LABEL a=b", "EXPOSE 80", "CMD [\"x\"]", "ENTRYPOINT [\"y\"]", "VOLUME /v",
    "STOPSIGNAL SIGKILL", "HEALTHCHECK NONE", "MAINTAINER me", "ONBUILD RUN x",
    "ARG DECLARED_WITHOUT_VALUE",
])
def test_metadata_does_not_change_run_key(meta: str) -> None:
    assert run_key(BASE.format(meta=meta)) == run_key(BASE.format(meta=""))


@pytest.mark.parametrize("meta", [
    "ENV A=1", "USER app", "WORKDIR /w", "SHELL [\"/bin/ash\", \"-c\"]",
])
def test_env_user_workdir_shell_change_run_key(meta: str) -> None:
    assert run_key(BASE.format(meta=meta)) != run_key(BASE.format(meta=""))


def test_changed_env_value_changes_key() -> None:
    assert run_key(BASE.format(meta="ENV A=1")) != run_key(BASE.format(meta="ENV A=2"))


@pytest.mark.parametrize("command", [
    "echo $V", "echo ${V}x", "echo ${#V}", "make", "./build.sh", "go build ./...",
])
def test_every_arg_in_scope_changes_the_key(command: str) -> None:
    """BuildKit keys every build arg in the RUN's environment, written in the command or not
    (``${#V}``, a script, make, go build all read it)."""
    text = f"FROM busybox\nARG V\nARG U\nRUN {command}\n"
    assert run_key(text, {"V": "1", "U": "a"}) != run_key(text, {"V": "2", "U": "a"})
    assert run_key(text, {"V": "1", "U": "a"}) != run_key(text, {"V": "1", "U": "b"})
    assert run_key(text, {"V": "1", "U": "a"}) == run_key(text, {"V": "1", "U": "a"})


def test_arg_out_of_scope_does_not_change_the_key() -> None:
    text = "ARG V\nFROM busybox\nRUN make\n"  # a meta ARG is not in a stage's scope
    assert run_key(text, {"V": "1"}) == run_key(text, {"V": "2"})
    undeclared = "FROM busybox\nRUN make\n"
    assert run_key(undeclared, {"V": "1"}) == run_key(undeclared, {"V": "2"})


def test_arg_shadowed_by_env_is_not_a_key_input() -> None:
    text = "FROM busybox\nARG V\nENV V=fixed\nRUN echo $V\n"
    assert run_key(text, {"V": "1"}) == run_key(text, {"V": "2"})


def test_run_network_and_security_change_key() -> None:
    plain = run_key("FROM busybox\nRUN make\n")
    assert run_key("FROM busybox\nRUN --network=none make\n") != plain
    assert run_key("FROM busybox\nRUN --security=insecure make\n") != plain


def test_build_wide_network_is_in_the_run_key() -> None:
    """``build --network none`` gives RUN no network: a result made so is not reused with
    ``host`` (and the reverse); ``RUN --network`` overrides the build's default."""
    text = "FROM busybox\nRUN make\n"
    assert run_key(text, network="none") != run_key(text, network="host")
    forced = "FROM busybox\nRUN --network=host make\n"
    assert run_key(forced, network="none") == run_key(forced, network="host")
    assert run_key("FROM busybox\nRUN --network=none make\n") == run_key(text, network="none")


def test_source_date_epoch_is_in_every_layer_key() -> None:
    text = "FROM busybox\nRUN make\n"
    assert run_key(text, sde=0) != run_key(text) != run_key(text, sde=1)
    op = _copy(False)
    assert keys.layer_key("copy", PARENT, copy_comps(op, "c", sde=5)) != keys.layer_key(
        "copy", PARENT, copy_comps(op, "c"))
    mkdir = MkdirOp(path="/w", user="")
    assert keys.mkdir_components(mkdir, "linux/amd64", source_date_epoch=5) != (
        keys.mkdir_components(mkdir, "linux/amd64", source_date_epoch=None))


def _copy(link: bool, dest: str = "/app") -> CopyOp:
    return CopyOp(is_add=False, sources=("src",), heredocs=(), dest=dest, workdir="/",
                  chown=None, chmod=None, link=link, parents=False, excludes=(),
                  source_kind="context", source_name=None, source_stage=None)


def copy_comps(op: CopyOp, content: str, *, chown: tuple[int, int] | None = None,
               sde: int | None = None) -> dict[str, Any]:
    return keys.copy_components(op, content, None, chown, "linux/amd64", source_date_epoch=sde)


def test_copy_link_key_does_not_depend_on_parent() -> None:
    other = keys.from_layers_key(["sha256:" + "2" * 64], "linux/amd64")
    linked = copy_comps(_copy(True), "sha256:c")
    assert keys.layer_key("copy", PARENT, linked, link=True) == keys.layer_key(
        "copy", other, linked, link=True)
    plain = copy_comps(_copy(False), "sha256:c")
    assert keys.layer_key("copy", PARENT, plain) != keys.layer_key("copy", other, plain)


def test_copy_content_and_options_change_key() -> None:
    comps = copy_comps(_copy(False), "sha256:c")
    base = keys.layer_key("copy", PARENT, comps)
    for changed in (
        copy_comps(_copy(False), "sha256:d"),
        copy_comps(_copy(False, "/other"), "sha256:c"),
        copy_comps(_copy(False), "sha256:c", chown=(1, 1)),
    ):
        assert keys.layer_key("copy", PARENT, changed) != base


def test_chain_after_link_still_depends_on_parent() -> None:
    other = keys.from_layers_key(["sha256:" + "2" * 64], "linux/amd64")
    linked = copy_comps(_copy(True), "sha256:c")
    step = keys.layer_key("copy", PARENT, linked, link=True)
    assert keys.chain_key(PARENT, step, "sha256:l") != keys.chain_key(other, step, "sha256:l")


def test_chain_depends_on_the_layer_a_step_produced() -> None:
    step = keys.layer_key("run", PARENT, {"args": ["x"]})
    assert keys.chain_key(PARENT, step, "sha256:a") != keys.chain_key(PARENT, step, "sha256:b")
    assert keys.chain_key(PARENT, step, None) == keys.chain_key(PARENT, step, None)


def test_keys_are_versioned_and_stable() -> None:
    assert keys.KEY_VERSION == "dockyard.cache.v3"
    # FROM keys the layers in order and the platform, nothing else
    layers = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
    assert keys.from_layers_key(layers, "linux/amd64") == \
        keys.from_layers_key(list(layers), "linux/amd64")
    assert keys.from_layers_key(layers[::-1], "linux/amd64") != \
        keys.from_layers_key(layers, "linux/amd64")
    assert keys.from_layers_key(layers, "linux/arm64") != \
        keys.from_layers_key(layers, "linux/amd64")
    assert keys.digest_of({"b": 1, "a": [1, "x"]}) == keys.digest_of({"a": [1, "x"], "b": 1})
    assert keys.scratch_key("linux/amd64") != keys.scratch_key("linux/arm64")
