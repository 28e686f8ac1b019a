"""Image references: Docker's normalization and its refusals."""

from __future__ import annotations

import pytest

from dockyard.errors import UsageError
from dockyard.image.reference import Reference, parse_reference

HEX = "a" * 64
DIGEST = f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest", "localhost:5000/x:latest"),
        (f"localhost:5000/x@{DIGEST}", f"localhost:5000/x@{DIGEST}", f"localhost:5000/x@{DIGEST}"),
        (f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}", f"busybox:1@{DIGEST}"),
        (
            "ghcr.io/org/team/img:v1.2-rc_3",
            "ghcr.io/org/team/img:v1.2-rc_3",
            "ghcr.io/org/team/img:v1.2-rc_3",
        ),
        ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest"),  # upper case first part is a host
        ("[::1]:5000/x:t", "[::1]:5000/x:t", "[::1]:5000/x:t"),
        (
            "my-registry.example.com:443/a__b/c-d.e",
            "my-registry.example.com:443/a__b/c-d.e:latest",
            "my-registry.example.com:443/a__b/c-d.e:latest",
        ),
        ("a--b", "docker.io/library/a--b:latest", "a--b:latest"),
    ],
)
def test_normalize(text: str, full: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == full
    assert ref.familiar == familiar
    # normalizing is idempotent, from either spelling
    assert parse_reference(full) == ref
    assert parse_reference(familiar) == ref


def test_fields() -> None:
    ref = parse_reference(f"localhost:5000/team/app:1.0@{DIGEST}")
    assert ref == Reference("localhost:5000", "team/app", "1.0", DIGEST)
    assert ref.name == "localhost:5000/team/app"
    assert parse_reference(f"x@{DIGEST}").tag is None
    assert parse_reference("x", default_tag=False).tag is None


def test_with_tag_and_digest() -> None:
    ref = parse_reference(f"busybox@{DIGEST}")
    assert str(ref.with_tag("1.0")) == "docker.io/library/busybox:1.0"
    assert str(parse_reference("busybox").with_digest(DIGEST)) == (
        f"docker.io/library/busybox:latest@{DIGEST}"
    )
    with pytest.raises(UsageError):
        ref.with_tag("-bad")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid reference format"),
        ("Busybox", "must be lowercase"),
        ("user/App", "must be lowercase"),
        ("busybox:", "invalid reference format"),
        ("busybox:-x", "invalid reference format"),
        ("busybox:" + "t" * 129, "invalid reference format"),
        ("a/-b", "invalid reference format"),
        ("a//b", "invalid reference format"),
        ("a_-b", "invalid reference format"),
        ("a___b", "invalid reference format"),
        ("busybox@sha256:abc", "invalid reference format"),
        (f"busybox@sha256:{'A' * 64}", "invalid sha256 digest"),
        (f"busybox@md5:{'a' * 32}", "unsupported digest algorithm"),
        (HEX, "cannot specify 64-byte hexadecimal strings"),
        ("a" * 256, "must not be more than 255 characters"),
        ("host:port/x", "invalid reference format"),
        ("busy box", "invalid reference format"),
    ],
)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_reference(text)
