"""Typed instructions: flags, argument rules and errors, as BuildKit's instructions package."""

from __future__ import annotations

import pytest

from dockyard.dockerfile.instructions import (
    AddInstruction,
    ArgInstruction,
    CmdInstruction,
    CopyInstruction,
    EnvInstruction,
    FromInstruction,
    HealthcheckInstruction,
    Instruction,
    OnbuildInstruction,
    RunInstruction,
    ShellInstruction,
    VolumeInstruction,
    parse_duration,
    parse_instruction,
)
from dockyard.dockerfile.parser import parse
from dockyard.errors import DockerfileError, Location


def one(line: str) -> Instruction:
    text = "FROM a\n" + line
    result = parse(text, "Dockerfile")
    return parse_instruction(result.nodes[-1], filename="Dockerfile", source=text)


def error(line: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        one(line)
    return info.value


def test_from() -> None:
    inst = one("FROM --platform=linux/arm64 Img:1 AS Builder")
    assert inst == FromInstruction(
        Location("Dockerfile", 2, 2), "FROM --platform=linux/arm64 Img:1 AS Builder",
        "Img:1", "builder", "linux/arm64",
    )
    assert error("FROM a b").message == "FROM requires either one or three arguments"
    assert "invalid name for build stage" in error("FROM a AS 1x").message


def test_run_forms_and_flags() -> None:
    inst = one("RUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --network=none make all")
    assert isinstance(inst, RunInstruction)
    assert inst.command == ("make all",) and inst.prepends_shell
    assert inst.mounts == ("type=cache,target=/c", "type=tmpfs,target=/t")
    assert inst.network == "none" and inst.security is None
    exec_form = one('RUN ["echo", "$HOME"]')
    assert isinstance(exec_form, RunInstruction)
    assert exec_form.command == ("echo", "$HOME") and not exec_form.prepends_shell
    heredoc = one("RUN <<EOF\necho hi\nEOF")
    assert isinstance(heredoc, RunInstruction) and heredoc.heredocs[0].content == "echo hi\n"
    assert error("RUN --network=bogus x").message == "unsupported network mode: bogus"
    assert error("RUN").message == "RUN requires at least one argument"


def test_unknown_flag_names_allowed_flags() -> None:
    err = error("COPY --form=x a b")
    assert err.message == "unknown flag: --form"
    assert err.hint is not None and "did you mean --from?" in err.hint
    assert "--chown" in err.hint and "--parents" in err.hint
    assert str(err).startswith("Dockerfile:2: unknown flag: --form (")
    assert "accepts no flags" in (error("ENV --x=1 a=b").hint or "")


def test_flag_values() -> None:
    copy = one("COPY --link --parents=false --exclude=*.md --exclude=.git --chmod=755 --from=b a c /d/")
    assert isinstance(copy, CopyInstruction)
    assert copy.link and not copy.parents
    assert copy.exclude == ("*.md", ".git")
    assert (copy.sources, copy.dest, copy.from_, copy.chmod) == (("a", "c"), "/d/", "b", "755")
    add = one("ADD --keep-git-dir=TRUE --checksum=sha256:abc https://x/y /z")
    assert isinstance(add, AddInstruction) and add.keep_git_dir and add.checksum == "sha256:abc"
    assert error("COPY --link=maybe a b").message == "expecting boolean value for flag --link, not: maybe"
    assert error("COPY --link= a b").message == "missing a value on flag: --link"
    assert error("COPY --from a b").message == "missing a value on flag: --from"
    assert error("COPY --from=a --from=b a b").message == "duplicate flag specified: --from"
    assert error("ADD --from=x a b").message == "unknown flag: --from"


def test_copy_heredoc_sources() -> None:
    inst = one('COPY <<EOF <<"TWO" file /dest/\nhello\nEOF\nworld\nTWO')
    assert isinstance(inst, CopyInstruction)
    assert inst.sources == ("file",)
    assert [h.name for h in inst.heredocs] == ["EOF", "TWO"]
    assert not inst.heredocs[1].expand
    assert "Destination could not be determined" in error("COPY onlyone").message


def test_env_label_arg() -> None:
    env = one('ENV A=1 B="x y"')
    assert isinstance(env, EnvInstruction) and env.pairs == (("A", "1"), ("B", '"x y"'))
    legacy = one("ENV KEY some value")
    assert isinstance(legacy, EnvInstruction) and legacy.pairs == (("KEY", "some value"),)
    assert error("ENV").message == "ENV requires at least one argument"
    arg = one("ARG A B=1 C=")
    assert isinstance(arg, ArgInstruction)
    assert arg.args == (("A", None), ("B", "1"), ("C", ""))
    assert error("ARG =x").message == "ARG names can not be blank"


def test_cmd_shell_volume() -> None:
    cmd = one("CMD []")
    assert isinstance(cmd, CmdInstruction) and cmd.command == () and not cmd.prepends_shell
    assert error("SHELL /bin/sh -c").message == "SHELL requires the arguments to be in JSON form"
    shell = one('SHELL ["pwsh", "-c"]')
    assert isinstance(shell, ShellInstruction) and shell.shell == ("pwsh", "-c")
    vol = one('VOLUME ["/a", "/b"]')
    assert isinstance(vol, VolumeInstruction) and vol.paths == ("/a", "/b")
    assert error('VOLUME [""]').message == "VOLUME specified can not be an empty string"
    assert error("USER").message == "USER requires exactly one argument"
    assert one("USER a b").user == "a b"  # type: ignore[union-attr]


def test_unknown_instruction_suggests() -> None:
    err = error("FORM b")
    assert str(err) == "Dockerfile:2: unknown instruction: FORM (did you mean FROM?)"
    assert error("XYZZYQ b").hint is None


def test_onbuild() -> None:
    inst = one("ONBUILD COPY --from=x a b")
    assert isinstance(inst, OnbuildInstruction)
    assert inst.expression == "COPY --from=x a b"
    assert isinstance(inst.inner, CopyInstruction) and inst.inner.from_ == "x"
    assert "Chaining ONBUILD" in error("ONBUILD ONBUILD RUN x").message
    assert error("ONBUILD FROM x").message == "FROM isn't allowed as an ONBUILD trigger"
    assert error("ONBUILD MAINTAINER x").message == "MAINTAINER isn't allowed as an ONBUILD trigger"


def test_healthcheck() -> None:
    inst = one("HEALTHCHECK --interval=1m30s --timeout=1.5s --start-period=0s --retries=3 CMD curl x")
    assert inst == HealthcheckInstruction(
        Location("Dockerfile", 2, 2), inst.original, ("CMD-SHELL", "curl x"),
        90_000_000_000, 1_500_000_000, 0, None, 3,
    )
    none = one("HEALTHCHECK NONE")
    assert isinstance(none, HealthcheckInstruction) and none.test == ("NONE",)
    exec_form = one('HEALTHCHECK CMD ["a", "b"]')
    assert isinstance(exec_form, HealthcheckInstruction) and exec_form.test == ("CMD", "a", "b")
    assert error("HEALTHCHECK --interval=1us CMD x").message.startswith("Interval")
    assert error("HEALTHCHECK --retries=-1 CMD x").message == "--retries cannot be negative (-1)"
    assert "invalid syntax" in error("HEALTHCHECK --retries=x CMD x").message
    assert error("HEALTHCHECK CMD").message == "Missing command after HEALTHCHECK CMD"
    assert "Unknown type" in error("HEALTHCHECK TCP x").message
    assert "unknown flag" in error("HEALTHCHECK --bogus=1 CMD x").message


@pytest.mark.parametrize(
    ("text", "nanos"),
    [("0", 0), ("1ns", 1), ("1.5h", 5_400_000_000_000), ("-2m", -120_000_000_000),
     ("1h2m3s4ms5us6ns", 3_723_004_005_006), (".5s", 500_000_000), ("1µs", 1000),
     ("2562047h47m16.854775807s", (1 << 63) - 1)],
)
def test_parse_duration(text: str, nanos: int) -> None:
    assert parse_duration(text) == nanos


@pytest.mark.parametrize("text", ["", "1", "s", "1x", ".s", "2562047h47m16.854775808s", "--1s"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
