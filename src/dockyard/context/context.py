"""Opening a build context: a directory, a tarball, ``-`` (stdin), or a git/http URL.

A directory is used in place (never copied). A tarball (any compression) or a tar on stdin
is unpacked safely into ``tmpdir``; stdin that is not a tar is taken as a Dockerfile with an
empty context, as ``docker build - < Dockerfile`` does. The Dockerfile is read directly (so a
.dockerignore cannot hide it from the frontend); ``-f -`` reads it from stdin. Named extra
contexts (``--build-context name=DIR``) open the same way, without a Dockerfile.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from dockyard.context._paths import root_path
from dockyard.context.dockerignore import PatternMatcher, go_clean, load_dockerignore
from dockyard.errors import ContextError, UsageError

__all__ = ["BuildContext", "open_named_contexts"]

_STDIN_LIMIT = 1 << 34


class BuildContext:
    """An opened build context, a directory on disk.

    ``root`` is the directory; ``ignore_patterns`` and ``matcher`` come from the
    (``<Dockerfile>``-specific or plain) .dockerignore; ``dockerfile_text`` and
    ``dockerfile_name`` are set when a Dockerfile was asked for.
    """

    def __init__(
        self,
        root: Path,
        *,
        ignore_patterns: list[str] | None = None,
        dockerfile_text: str | None = None,
        dockerfile_name: str = "Dockerfile",
        dockerfile_path: Path | None = None,
        name: str = "context",
    ) -> None:
        self.root = root
        self.name = name
        self.ignore_patterns = list(ignore_patterns or [])
        self.matcher = PatternMatcher(self.ignore_patterns)
        self.dockerfile_text = dockerfile_text
        self.dockerfile_name = dockerfile_name
        self.dockerfile_path = dockerfile_path

    def __repr__(self) -> str:
        return f"BuildContext(root={str(self.root)!r}, name={self.name!r})"

    @property
    def ignore(self) -> PatternMatcher | None:
        """The .dockerignore matcher, or None when there are no patterns."""
        return self.matcher if self.matcher else None

    def is_excluded(self, rel: str) -> bool:
        """True if .dockerignore excludes ``rel`` (a path relative to the context root)."""
        return self.matcher.matches(go_clean(rel).lstrip("/"))

    def resolve(self, rel: str) -> Path:
        """``rel`` resolved inside the context, symlinks followed but never out of it."""
        return root_path(self.root, rel)

    @classmethod
    def open(
        cls,
        spec: str,
        *,
        dockerfile: str | None,
        tmpdir: Path,
        stdin: BinaryIO | None = None,
        name: str = "context",
    ) -> BuildContext:
        """Open ``spec`` (a directory, a tarball, ``-`` or a URL).

        ``dockerfile`` is the ``-f`` value: None for ``Dockerfile`` in the context, ``-`` for
        stdin, else a path (absolute, or relative to the current directory and then to the
        context root, as the docker CLI tries; inside a tarball, relative to its root).
        ``tmpdir`` receives unpacked contexts. Raises ContextError / UsageError.
        """
        stdin = stdin if stdin is not None else sys.stdin.buffer
        if spec == "-" and dockerfile == "-":
            raise UsageError("can't use stdin for both the build context and the Dockerfile")
        dockerfile_text: str | None = None
        stdin_dockerfile = False
        if spec == "-":
            root, dockerfile_text = _open_stdin(stdin, tmpdir)
            stdin_dockerfile = dockerfile_text is not None
            unpacked = True
        elif _is_remote(spec):
            root = _open_remote(spec, tmpdir)
            unpacked = True
        else:
            path = Path(spec)
            if path.is_dir():
                root = path.resolve()
                unpacked = False
            elif path.exists():
                root = _unpack(path, tmpdir)
                unpacked = True
            else:
                raise ContextError(f"unable to prepare context: path {spec!r} not found")
        if dockerfile == "-":
            dockerfile_text = _decode(stdin.read())
            return cls(
                root,
                ignore_patterns=load_dockerignore(root, ""),
                dockerfile_text=dockerfile_text,
                dockerfile_name="Dockerfile",
                name=name,
            )
        if stdin_dockerfile:
            return cls(root, dockerfile_text=dockerfile_text, name=name)
        dockerfile_path = _find_dockerfile(root, dockerfile, in_place=not unpacked)
        try:
            text = _decode(dockerfile_path.read_bytes())
        except OSError as err:
            raise ContextError(f"cannot read {dockerfile_path}: {err.strerror}") from None
        display = dockerfile or ("Containerfile" if dockerfile_path.name == "Containerfile"
                                 else "Dockerfile")
        return cls(
            root,
            ignore_patterns=load_dockerignore(root, str(dockerfile_path)),
            dockerfile_text=text,
            dockerfile_name=os.path.basename(display),
            dockerfile_path=dockerfile_path,
            name=name,
        )

    @classmethod
    def open_named(cls, name: str, spec: str, *, tmpdir: Path) -> BuildContext:
        """A named extra context (``--build-context name=spec``): no Dockerfile; its own
        .dockerignore applies."""
        if _is_remote(spec):
            root = _open_remote(spec, tmpdir)
        else:
            path = Path(spec)
            if path.is_dir():
                root = path.resolve()
            elif path.exists():
                root = _unpack(path, tmpdir)
            else:
                raise ContextError(f"build context {name!r}: path {spec!r} not found")
        return cls(root, ignore_patterns=load_dockerignore(root, ""), name=name)


def open_named_contexts(specs: Mapping[str, str], *, tmpdir: Path) -> dict[str, BuildContext]:
    """Open every ``--build-context name=spec`` (names are lower-cased, as stage names)."""
    out: dict[str, BuildContext] = {}
    for raw_name, spec in specs.items():
        name = raw_name.lower()
        if spec.startswith("docker-image://") or spec.startswith("target:"):
            continue  # image and target contexts are resolved by the planner, not here
        sub = Path(tempfile.mkdtemp(prefix=f"ctx-{name}-", dir=tmpdir))
        out[name] = BuildContext.open_named(name, spec, tmpdir=sub)
    return out


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


_REMOTE_PREFIXES = ("http://", "https://", "git://", "git@", "ssh://", "file://")


def _is_remote(spec: str) -> bool:
    # every remote form starts with one of these; only then pay for importing the fetcher
    if not spec.startswith(_REMOTE_PREFIXES):
        return False
    from dockyard.context.fetch import is_git_url, is_url

    return is_url(spec) or is_git_url(spec)


def _open_remote(spec: str, tmpdir: Path) -> Path:
    from dockyard.context.archive import is_archive
    from dockyard.context.fetch import fetch_git, fetch_url, is_git_url

    if is_git_url(spec):
        return fetch_git(spec, tmpdir / "git")
    download = tmpdir / "download"
    download.mkdir(parents=True, exist_ok=True)
    fetched = fetch_url(spec, download)
    if is_archive(fetched.path):
        return _unpack(fetched.path, tmpdir)
    # A plain file at a URL is a Dockerfile, as docker build does with a remote file.
    root = tmpdir / "context"
    root.mkdir(parents=True, exist_ok=True)
    shutil.move(fetched.path, root / "Dockerfile")
    return root


def _unpack(archive: Path, tmpdir: Path) -> Path:
    # imported here: tarfile is not needed for a directory context
    from dockyard.context.archive import extract_archive, is_archive

    if not is_archive(archive):
        raise ContextError(f"unable to prepare context: {archive} is not a directory or a tar")
    root = tmpdir / "context"
    root.mkdir(parents=True, exist_ok=True)
    extract_archive(archive, root, devices=False)
    return root.resolve()


def _open_stdin(stdin: BinaryIO, tmpdir: Path) -> tuple[Path, str | None]:
    """A tar on stdin becomes the context; anything else is a Dockerfile (empty context)."""
    from dockyard.context.archive import is_archive

    tmpdir.mkdir(parents=True, exist_ok=True)
    spool = tmpdir / "stdin-context"
    size = 0
    with open(spool, "wb") as out:
        while chunk := stdin.read(1 << 20):
            size += len(chunk)
            if size > _STDIN_LIMIT:
                raise ContextError("the context on stdin is too large")
            out.write(chunk)
    try:
        if is_archive(spool):
            return _unpack(spool, tmpdir), None
        root = tmpdir / "context"
        root.mkdir(parents=True, exist_ok=True)
        return root.resolve(), _decode(spool.read_bytes())
    finally:
        spool.unlink(missing_ok=True)


def _find_dockerfile(root: Path, dockerfile: str | None, *, in_place: bool) -> Path:
    if dockerfile is None:
        candidate = root_path(root, "Dockerfile")
        if candidate.is_file():
            return candidate
        lower = root_path(root, "dockerfile")
        if lower.is_file():
            return lower
        # Podman's and Buildah's name, which the docker CLI does not look for
        containerfile = root_path(root, "Containerfile")
        if containerfile.is_file():
            return containerfile
        raise ContextError(
            f"failed to read dockerfile: open {root / 'Dockerfile'}: no such file or directory"
            " (nor a Containerfile)"
        )
    path = Path(dockerfile)
    tried = []
    if path.is_absolute():
        tried.append(path)
    else:
        if in_place:
            tried.append(Path.cwd() / path)
        tried.append(root_path(root, dockerfile))
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise ContextError(f"failed to read dockerfile: {dockerfile}: no such file or directory")
