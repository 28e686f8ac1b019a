"""Image references, parsed and normalized as Docker does (``distribution/reference``).

The grammar (written fresh from Docker's documented one)::

    reference       := name [ ":" tag ] [ "@" digest ]
    name            := [domain "/"] path-component ["/" path-component]*
    domain          := host [":" port]
    host            := domain-name | "[" ipv6 "]"
    domain-name     := component ("." component)*       component: [a-zA-Z0-9] or
                                                         [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
    path-component  := [a-z0-9]+ (separator [a-z0-9]+)*  separator: "." | "_" | "__" | "-"+
    tag             := [\\w][\\w.-]{0,127}
    digest          := algorithm ":" hex                 (sha256: 64 lower-case hex digits)

Normalization (``ParseNormalizedNamed`` + ``TagNameOnly``):

* the first ``/``-separated part is a domain when it contains ``.`` or ``:``, is
  ``localhost``, or has an upper-case letter; otherwise the domain is ``docker.io``;
* ``index.docker.io`` is spelled ``docker.io``;
* a one-component path on ``docker.io`` gets ``library/`` in front;
* with neither tag nor digest, the tag is ``latest``.

``name:tag@digest`` keeps both parts; the digest is what identifies the content.
Invalid references raise :class:`~dockyard.errors.UsageError` (they always come from
the user: a command line, a FROM line, a ``-t`` flag), with Docker's wording.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard.errors import UsageError

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "OFFICIAL_REPO_PREFIX",
    "Reference",
    "is_valid_tag",
    "parse_reference",
    "split_domain",
]

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_TAG_RE = re.compile(_TAG)
_ID_RE = re.compile(r"[a-f0-9]{64}")
# Digest algorithms we can verify, with the length of their hex encoding.
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def _invalid(s: str, why: str = "") -> UsageError:
    detail = f": {why}" if why else ""
    return UsageError(f"invalid reference format{detail}: {s!r}")


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalized image reference: ``domain/path[:tag][@digest]``.

    ``path`` is the repository path inside the registry (``library/busybox``).
    """

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The full repository name: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        """The full form: ``docker.io/library/busybox:latest``."""
        return self.name + self._suffix()

    def _suffix(self) -> str:
        text = f":{self.tag}" if self.tag is not None else ""
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def familiar_name(self) -> str:
        """The repository as Docker shows it: ``busybox``, ``user/app``, ``ghcr.io/x/y``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        if self.path.startswith(OFFICIAL_REPO_PREFIX):
            rest = self.path[len(OFFICIAL_REPO_PREFIX) :]
            if "/" not in rest:
                return rest
        return self.path

    @property
    def familiar(self) -> str:
        """The reference as Docker shows it: ``busybox:latest``."""
        return self.familiar_name + self._suffix()

    def with_tag(self, tag: str | None) -> Reference:
        """The same repository with another tag (or none); the digest is dropped."""
        if tag is not None and not is_valid_tag(tag):
            raise UsageError(f"invalid tag format: {tag!r}")
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str | None) -> Reference:
        """The same repository pinned to ``digest`` (the tag is kept)."""
        if digest is not None:
            _check_digest(digest, digest)
        return Reference(self.domain, self.path, self.tag, digest)


def is_valid_tag(tag: str) -> bool:
    """Whether ``tag`` matches Docker's tag grammar."""
    return _TAG_RE.fullmatch(tag) is not None


def split_domain(name: str) -> tuple[str, str]:
    """Split a repository name into (domain, path) the way Docker normalizes it."""
    first, sep, rest = name.partition("/")
    if not sep or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def _check_digest(digest: str, original: str) -> None:
    algorithm, _, encoded = digest.partition(":")
    expected = _DIGEST_LENGTHS.get(algorithm)
    if expected is None:
        raise _invalid(original, f"unsupported digest algorithm {algorithm!r}")
    if len(encoded) != expected or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise _invalid(original, f"invalid {algorithm} digest {digest!r}")


def parse_reference(s: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalize a reference: ``busybox`` -> ``docker.io/library/busybox:latest``.

    With ``default_tag=False`` a reference with neither tag nor digest keeps ``tag=None``
    (for "every tag of this repository" uses). Raises :class:`UsageError` when ``s`` is not
    a valid reference, with the reason Docker gives.
    """
    if not s:
        raise _invalid(s, "empty reference")
    if _ID_RE.fullmatch(s):
        raise UsageError(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )
    match = _REFERENCE_RE.fullmatch(s)
    if match is None:
        # Docker's one specific hint: an upper-case repository is otherwise well-formed.
        if _REFERENCE_RE.fullmatch(_lower_path(s)) is not None:
            raise UsageError(f"invalid reference format: repository name must be lowercase: {s!r}")
        raise _invalid(s)
    name, tag, digest = match.group("name"), match.group("tag"), match.group("digest")
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(
            s, f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    domain, path = split_domain(name)
    if path.lower() != path:
        raise UsageError(f"invalid reference format: repository name must be lowercase: {s!r}")
    if _ID_RE.fullmatch(path.removeprefix(OFFICIAL_REPO_PREFIX)) and domain == DEFAULT_DOMAIN:
        raise UsageError(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )
    if digest is not None:
        _check_digest(digest, s)
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def _lower_path(s: str) -> str:
    """``s`` with its repository path lower-cased (domain, tag and digest left alone)."""
    rest, at, digest = s.partition("@")
    name, tag = rest, ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon:]
    first, sep, tail = name.partition("/")
    if sep and (any(c in first for c in ".:") or first == "localhost"):
        name = f"{first}/{tail.lower()}"
    else:
        name = name.lower()
    return name + tag + at + digest
