"""A build request checked before anything runs: ``dockyard.build`` calls :func:`check`
before it opens the context, so a bad ``-t``, ``--output``, ``--add-host``, secret or cache
option costs no step (docker validates its flags before it sends the build, too).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dockyard.errors import UsageError

if TYPE_CHECKING:
    from dockyard.exporter.spec import OutputSpec

__all__ = ["CheckedOutputs", "check_outputs", "check_tags", "parse_add_hosts"]


@dataclass(frozen=True)
class CheckedOutputs:
    """The parsed outputs and the names they add to the image (``type=image,name=a,b``)."""

    specs: tuple[OutputSpec, ...]
    names: tuple[str, ...]

    @property
    def to_stdout(self) -> bool:
        """An output writes to standard output (``-o -``, ``dest=-``)."""
        return any(spec.dest == "-" for spec in self.specs)


def check_tags(tags: Sequence[str], what: str = "-t") -> tuple[str, ...]:
    """Every ``-t`` value parsed as an image reference (docker refuses ``Foo`` or ``a:b:c``
    before it builds). Returns them as given."""
    from dockyard.image.reference import parse_reference

    for tag in tags:
        try:
            ref = parse_reference(tag)
        except UsageError as err:
            raise UsageError(f"invalid tag {tag!r} ({what}): {err}") from None
        if ref.digest is not None and what == "-t":
            raise UsageError(f"invalid tag {tag!r}: a tag cannot hold a digest")
    return tuple(tags)


def check_outputs(outputs: Sequence[str]) -> CheckedOutputs:
    """Parse every ``--output``; ``type=image``/``registry`` names are checked as tags, and
    ``type=docker`` without ``dest`` (``--load``) needs a Docker daemon that answers now."""
    from dockyard.exporter.spec import parse_output

    specs = tuple(parse_output(text) for text in outputs)
    names: list[str] = []
    for spec in specs:
        if spec.name and spec.type in ("image", "registry"):
            names += [n.strip() for n in spec.name.split(",") if n.strip()]
    check_tags(names, "--output name=")
    if sum(1 for s in specs if s.dest == "-") > 1:
        raise UsageError("--output: only one output can write to stdout")
    if any(s.type == "docker" and s.dest is None for s in specs):
        from dockyard.exporter.daemon import DockerDaemon

        DockerDaemon.from_env().ping()
    return CheckedOutputs(specs, tuple(dict.fromkeys(names)))


def parse_add_hosts(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--add-host NAME:ADDRESS`` (or ``NAME=ADDRESS``) as docker takes it: the address is
    an IPv4 or IPv6 address (``host:::1`` works, the name ends at the first ``:``)."""
    out: list[tuple[str, str]] = []
    for item in items:
        sep = "=" if "=" in item else ":"
        name, found, address = item.partition(sep)
        address = address.strip("[]")
        if not found or not name or not address:
            raise UsageError(f"--add-host {item!r}: expected NAME:ADDRESS")
        if any(c.isspace() for c in name) or name.startswith("-"):
            raise UsageError(f"--add-host {item!r}: {name!r} is not a host name")
        if address == "host-gateway":
            raise UsageError(f"--add-host {item!r}: host-gateway needs a daemon's bridge; "
                             "RUN steps share the host's network, give an address")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise UsageError(f"--add-host {item!r}: {address!r} is not an IP address") from None
        out.append((name, address))
    return tuple(out)
