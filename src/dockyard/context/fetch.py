"""ADD's remote sources: an http(s) URL (streamed, ``--checksum`` verified) and git URLs.

A URL's file is named from the Content-Disposition header, else from the URL path's last
element (``index.html`` when empty); its mtime comes from Last-Modified, as BuildKit does.
Git URLs (``https://host/repo.git#ref:subdir``, ``git@host:repo.git``, ``git://``,
``ssh://``) are fetched with the ``git`` binary, shallow when the server allows it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import httpx

from dockyard.errors import ContextError

__all__ = [
    "FetchedFile",
    "GitRef",
    "RemoteState",
    "fetch_git",
    "fetch_url",
    "is_git_url",
    "is_url",
    "parse_git_url",
    "resolve_git_ref",
    "revalidate_url",
]

_CHUNK = 1 << 20


def is_url(source: str) -> bool:
    """True for an http(s) URL."""
    return source.startswith(("http://", "https://"))


def is_git_url(source: str) -> bool:
    """True for a source BuildKit fetches with git (``file://`` too: a local repository)."""
    if source.startswith(("git://", "git@", "ssh://", "file://")):
        return True
    if is_url(source):
        path = urlsplit(source.partition("#")[0]).path
        return path.endswith(".git")
    return False


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """A downloaded file: where it is, its name, Last-Modified (epoch seconds) and digest."""

    path: Path
    name: str
    mtime: int | None
    digest: str


@dataclass(frozen=True, slots=True)
class RemoteState:
    """What a server last said of a URL: the file it gave (name, sha256 digest, size,
    Last-Modified as epoch seconds) and the validators to ask it again with."""

    name: str
    digest: str
    size: int
    mtime: int | None
    etag: str = ""
    last_modified: str = ""

    def to_json(self) -> dict[str, object]:
        """A JSON form (kept in the store between builds)."""
        return {"name": self.name, "digest": self.digest, "size": self.size,
                "mtime": self.mtime, "etag": self.etag, "last_modified": self.last_modified}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> RemoteState:
        """Inverse of :meth:`to_json` (ValueError/TypeError/KeyError for a bad record)."""
        mtime = data.get("mtime")
        return cls(str(data["name"]), str(data["digest"]), int(str(data["size"])),
                   int(str(mtime)) if mtime is not None else None,
                   str(data.get("etag") or ""), str(data.get("last_modified") or ""))


def revalidate_url(
    url: str,
    dest_dir: Path,
    *,
    known: RemoteState | None,
    client: httpx.Client | None = None,
    timeout: float = 60.0,
) -> tuple[RemoteState, Path | None]:
    """Ask the server for ``url`` as BuildKit's http source does on every build.

    With ``known`` (what it said last time, whose bytes the caller still has) the request is
    conditional (``If-None-Match`` with its ETag, ``If-Modified-Since`` with its
    Last-Modified): a 304 returns ``(known, None)``. Otherwise the body is downloaded into
    ``dest_dir`` and ``(its state, its path)`` returned; the caller keys on the digest, so a
    server that ignores the conditions only costs the download. Raises ContextError for an
    HTTP error or a network failure.
    """
    import httpx  # lazily: only ADD of a URL needs an HTTP client

    headers = {}
    if known is not None:
        if known.etag:
            headers["If-None-Match"] = known.etag
        if known.last_modified:
            headers["If-Modified-Since"] = known.last_modified
    own = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=timeout)
    try:
        with http.stream("GET", url, headers=headers) as response:
            if response.status_code == 304 and known is not None:
                return known, None
            if response.status_code >= 300:
                raise ContextError(
                    f"failed to fetch {url}: invalid response status {response.status_code}"
                )
            name = _filename(url, response)
            target = dest_dir / "download"
            sha = hashlib.sha256()
            size = 0
            with open(target, "wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            last_modified = response.headers.get("last-modified", "")
            state = RemoteState(name, "sha256:" + sha.hexdigest(), size,
                                _epoch(last_modified), response.headers.get("etag", ""),
                                last_modified)
            return state, target
    except httpx.HTTPError as err:
        raise ContextError(f"failed to fetch {url}: {err}") from None
    finally:
        if own:
            http.close()


def _epoch(http_date: str) -> int | None:
    if not http_date:
        return None
    try:
        import email.utils  # only for remote sources: email is ~8 modules

        return int(email.utils.parsedate_to_datetime(http_date).timestamp())
    except (TypeError, ValueError):
        return None


def _filename(url: str, response: httpx.Response) -> str:
    disposition = response.headers.get("content-disposition", "")
    found = re.search(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', disposition)
    if found:
        name = os.path.basename(unquote(found.group(1)).strip())
        if name and name not in (".", ".."):
            return name
    path = unquote(urlsplit(url).path)
    name = path.rstrip("/").rpartition("/")[2] if path.strip("/") else ""
    return name if name and name not in (".", "..") else "index.html"


def fetch_url(
    url: str,
    dest_dir: Path,
    *,
    checksum: str | None = None,
    client: httpx.Client | None = None,
    timeout: float = 60.0,
) -> FetchedFile:
    """Download ``url`` into ``dest_dir`` (streamed), verifying ``checksum`` (``sha256:<hex>``).

    Raises ContextError for an HTTP error, a network failure or a checksum mismatch.
    """
    expected = None
    if checksum:
        algo, _, hexdigest = checksum.partition(":")
        if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
            raise ContextError(f"invalid checksum {checksum!r}: want sha256:<64 hex digits>")
        expected = checksum
    own = client is None
    import httpx  # lazily: only ADD of a URL needs an HTTP client

    http = client or httpx.Client(follow_redirects=True, timeout=timeout)
    try:
        with http.stream("GET", url) as response:
            if response.status_code >= 400:
                raise ContextError(
                    f"failed to fetch {url}: invalid response status {response.status_code}"
                )
            name = _filename(url, response)
            target = dest_dir / name
            sha = hashlib.sha256()
            with open(target, "wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
            mtime = None
            last_modified = response.headers.get("last-modified")
            if last_modified:
                try:
                    import email.utils

                    mtime = int(email.utils.parsedate_to_datetime(last_modified).timestamp())
                except (TypeError, ValueError):
                    mtime = None
    except httpx.HTTPError as err:
        raise ContextError(f"failed to fetch {url}: {err}") from None
    finally:
        if own:
            http.close()
    digest = "sha256:" + sha.hexdigest()
    if expected is not None and digest != expected:
        target.unlink(missing_ok=True)
        raise ContextError(f"digest mismatch for {url}: expected {expected}, got {digest}")
    os.chmod(target, 0o600)
    if mtime is not None:
        os.utime(target, (mtime, mtime))
    return FetchedFile(target, name, mtime, digest)


@dataclass(frozen=True, slots=True)
class GitRef:
    """A git source: remote, ref (branch, tag or commit; None = default) and subdir."""

    remote: str
    ref: str | None
    subdir: str | None


def parse_git_url(url: str) -> GitRef:
    """Split ``remote#ref:subdir`` (either part of the fragment may be empty)."""
    remote, _, fragment = url.partition("#")
    ref, _, subdir = fragment.partition(":")
    return GitRef(remote, ref or None, subdir.strip("/") or None)


def _git(
    args: list[str], cwd: Path | None = None, *, local: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run git. ``local``: the remote is a repository on this machine (a ``file://`` build
    context the user named); otherwise the file protocol is refused, so that a submodule of a
    fetched repository cannot copy a repository of the host into the image."""
    env = dict(os.environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_COUNT="1",
        GIT_CONFIG_KEY_0="protocol.file.allow",
        GIT_CONFIG_VALUE_0="always" if local else "never",
    )
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def _checked_ref(ref: GitRef) -> str:
    """The ref to ask for (HEAD when none); never one git would read as an option."""
    wanted = ref.ref or "HEAD"
    if wanted.startswith("-"):
        raise ContextError(f"invalid git ref {wanted!r}")
    return wanted


_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SHORT_SHA = re.compile(r"[0-9a-f]{7,63}")


def _ref_candidates(name: str) -> list[str]:
    """The full names a ref name may stand for, in git's order (``git rev-parse``'s rules:
    a tag before a branch of the same name)."""
    return [name, f"refs/{name}", f"refs/tags/{name}", f"refs/heads/{name}",
            f"refs/remotes/{name}", f"refs/remotes/{name}/HEAD"]


def resolve_git_ref(url: str) -> str:
    """The commit ``url``'s ref (``remote#ref:subdir``; the remote's HEAD when none) names
    now, asked of the server (``git ls-remote``) as BuildKit's git source does on every
    build. A full commit id is its own answer (no request); an annotated tag gives the commit
    it points to. A ref the server does not have but that looks like an abbreviated commit id
    (7 hex digits or more) is returned as it is: it names one commit for good. Raises
    ContextError when git is missing, the server cannot be asked or has no such ref."""
    if shutil.which("git") is None:
        raise ContextError("ADD of a git URL needs the git binary, which is not installed")
    ref = parse_git_url(url)
    wanted = _checked_ref(ref)
    if _FULL_SHA.fullmatch(wanted):
        return wanted
    listed = _git(["ls-remote", "--", ref.remote, wanted, wanted + "^{}"],
                  local=ref.remote.startswith("file://"))
    if listed.returncode != 0:
        raise ContextError(f"failed to resolve {wanted} of {ref.remote}: "
                           f"{listed.stderr.strip() or 'git ls-remote failed'}")
    refs: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        sha, tab, name = line.partition("\t")
        if tab and _FULL_SHA.fullmatch(sha):
            refs[name] = sha
    for name in _ref_candidates(wanted):
        found = refs.get(name + "^{}") or refs.get(name)  # a tag object: the commit it names
        if found is not None:
            return found
    if _SHORT_SHA.fullmatch(wanted):
        return wanted
    raise ContextError(f"repository {ref.remote} does not contain ref {wanted}")


def fetch_git(
    url: str, dest_dir: Path, *, keep_git_dir: bool = False, commit: str | None = None
) -> Path:
    """Check out ``url`` (``remote#ref:subdir``) below ``dest_dir``; returns the tree to copy.

    With ``commit`` (what :func:`resolve_git_ref` gave when the step was keyed) exactly that
    commit is checked out, whatever the ref names by now; if the server no longer has it,
    the fetch fails. The ``.git`` directory is removed unless ``keep_git_dir``. Submodules
    are fetched. Raises ContextError when git is missing or the fetch fails.
    """
    if shutil.which("git") is None:
        raise ContextError("ADD of a git URL needs the git binary, which is not installed")
    ref = parse_git_url(url)
    checkout = dest_dir / "checkout"
    checkout.mkdir(parents=True, exist_ok=True)
    steps = [
        ["init", "-q"],
        ["remote", "add", "origin", ref.remote],
    ]
    local = ref.remote.startswith("file://")
    for args in steps:
        result = _git(args, cwd=checkout, local=local)
        if result.returncode != 0:
            raise ContextError(f"git {args[0]} failed: {result.stderr.strip()}")
    wanted = commit or _checked_ref(ref)
    if wanted.startswith("-"):
        raise ContextError(f"invalid git commit {wanted!r}")
    fetched = _git(["fetch", "-q", "--depth=1", "origin", "--", wanted], cwd=checkout,
                   local=local)
    if fetched.returncode != 0:
        # Some servers refuse a shallow fetch of a commit id; fetch everything instead.
        fetched = _git(["fetch", "-q", "--tags", "origin"], cwd=checkout, local=local)
        if fetched.returncode != 0:
            raise ContextError(f"failed to fetch {ref.remote}: {fetched.stderr.strip()}")
        target = wanted
    else:
        target = "FETCH_HEAD"
    result = _git(["checkout", "-q", "--detach", target, "--"], cwd=checkout, local=local)
    if result.returncode != 0:
        raise ContextError(f"failed to check out {wanted} of {ref.remote}: {result.stderr.strip()}")
    if commit is not None:
        head = _git(["rev-parse", "HEAD"], cwd=checkout, local=local).stdout.strip()
        if not head.startswith(commit):
            raise ContextError(
                f"failed to check out commit {commit} of {ref.remote}: got {head or 'nothing'}")
    if (checkout / ".gitmodules").exists():
        result = _git(["submodule", "update", "--init", "--recursive", "--depth=1"],
                      cwd=checkout, local=local)
        if result.returncode != 0:
            raise ContextError(f"failed to update submodules: {result.stderr.strip()}")
    if not keep_git_dir:
        shutil.rmtree(checkout / ".git", ignore_errors=True)
    tree = checkout
    if ref.subdir:
        tree = checkout / ref.subdir
        real = tree.resolve()
        if not real.is_relative_to(checkout.resolve()) or not real.is_dir():
            raise ContextError(f"subdirectory {ref.subdir!r} not found in {ref.remote}")
    return tree
