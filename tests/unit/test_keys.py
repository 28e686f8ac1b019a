"""Cache-key rules (no root): what does and does not change a RUN key, COPY --link, chaining."""

from __future__ import annotations

import pytest
from test_planner import make_plan, ops, run_op

from dockyard.plan.model import CopyOp
from dockyard.solver import keys

PARENT = keys.from_image_key("sha256:" + "1" * 64, "linux/amd64")


def run_key(text: str, build_args: dict[str, str] | None = None, index: int = -1) -> str:
    """The key of the stage's ``index``-th layer step, which must be a RUN, on PARENT."""
    step = ops(make_plan(text, build_args))[index]
    op = run_op(step)
    return keys.layer_key("run", PARENT, keys.run_components(op, [], "linux/amd64"))


BASE = "FROM busybox\n{meta}\nRUN make\n"


@pytest.mark.parametrize("meta", [
    "LABEL a=b", "EXPOSE 80", "CMD [\"x\"]", "ENTRYPOINT [\"y\"]", "VOLUME /v",
    "STOPSIGNAL SIGKILL", "HEALTHCHECK NONE", "MAINTAINER me", "ONBUILD RUN x",
    "ARG UNUSED=1",
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


def test_used_arg_changes_key_unused_does_not() -> None:
    text = "FROM busybox\nARG V\nARG U\nRUN echo $V\n"
    assert run_key(text, {"V": "1", "U": "a"}) != run_key(text, {"V": "2", "U": "a"})
    assert run_key(text, {"V": "1", "U": "a"}) == run_key(text, {"V": "1", "U": "b"})
    # braces count as a use too
    braced = "FROM busybox\nARG V\nRUN echo ${V}x\n"
    assert run_key(braced, {"V": "1"}) != run_key(braced, {"V": "2"})


def test_arg_shadowed_by_env_is_not_a_key_input() -> None:
    text = "FROM busybox\nARG V\nENV V=fixed\nRUN echo $V\n"
    assert run_key(text, {"V": "1"}) == run_key(text, {"V": "2"})


def test_run_network_and_security_change_key() -> None:
    plain = run_key("FROM busybox\nRUN make\n")
    assert run_key("FROM busybox\nRUN --network=none make\n") != plain
    assert run_key("FROM busybox\nRUN --security=insecure make\n") != plain


def _copy(link: bool, dest: str = "/app") -> CopyOp:
    return CopyOp(is_add=False, sources=("src",), heredocs=(), dest=dest, workdir="/",
                  chown=None, chmod=None, link=link, parents=False, excludes=(),
                  source_kind="context", source_name=None, source_stage=None)


def test_copy_link_key_does_not_depend_on_parent() -> None:
    other = keys.from_image_key("sha256:" + "2" * 64, "linux/amd64")
    linked = keys.copy_components(_copy(True), "sha256:c", None, None, "linux/amd64")
    assert keys.layer_key("copy", PARENT, linked, link=True) == keys.layer_key(
        "copy", other, linked, link=True)
    plain = keys.copy_components(_copy(False), "sha256:c", None, None, "linux/amd64")
    assert keys.layer_key("copy", PARENT, plain) != keys.layer_key("copy", other, plain)


def test_copy_content_and_options_change_key() -> None:
    comps = keys.copy_components(_copy(False), "sha256:c", None, None, "linux/amd64")
    base = keys.layer_key("copy", PARENT, comps)
    for changed in (
        keys.copy_components(_copy(False), "sha256:d", None, None, "linux/amd64"),
        keys.copy_components(_copy(False, "/other"), "sha256:c", None, None, "linux/amd64"),
        keys.copy_components(_copy(False), "sha256:c", None, (1, 1), "linux/amd64"),
    ):
        assert keys.layer_key("copy", PARENT, changed) != base


def test_chain_after_link_still_depends_on_parent() -> None:
    other = keys.from_image_key("sha256:" + "2" * 64, "linux/amd64")
    linked = keys.copy_components(_copy(True), "sha256:c", None, None, "linux/amd64")
    step = keys.layer_key("copy", PARENT, linked, link=True)
    assert keys.chain_key(PARENT, step, "sha256:l") != keys.chain_key(other, step, "sha256:l")


def test_chain_depends_on_the_layer_a_step_produced() -> None:
    step = keys.layer_key("run", PARENT, {"args": ["x"]})
    assert keys.chain_key(PARENT, step, "sha256:a") != keys.chain_key(PARENT, step, "sha256:b")
    assert keys.chain_key(PARENT, step, None) == keys.chain_key(PARENT, step, None)


def test_keys_are_versioned_and_stable() -> None:
    assert keys.KEY_VERSION == "dockyard.cache.v1"
    assert keys.digest_of({"b": 1, "a": [1, "x"]}) == keys.digest_of({"a": [1, "x"], "b": 1})
    assert keys.scratch_key("linux/amd64") != keys.scratch_key("linux/arm64")
