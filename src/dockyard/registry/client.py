"""A client for the distribution (OCI) v2 HTTP API: ping, token and Basic auth, manifests,
blobs (streamed downloads; monolithic, chunked and cross-repository-mounted uploads).

Flow, as Docker's: ``GET /v2/`` first finds the scheme and the auth challenge. With
``Bearer``, a token for the request's scopes (``repository:NAME:pull[,push]``) comes from the
challenge's realm, with Basic credentials when there are any (anonymous otherwise), and is
cached per scope set; a 401 later (an expired token) fetches a fresh one once. With
``Basic``, the credentials go with every request.

Plain HTTP is only spoken to registries Docker treats as insecure by default (``localhost``,
``127.0.0.0/8``, ``[::1]``), to those listed in ``insecure_registries`` (host, host:port or
CIDR; also ``$DOCKYARD_INSECURE_REGISTRIES``, comma-separated) and with
``tls_verify=False``; for those, HTTPS is tried first without verifying the certificate,
then plain HTTP, as Docker does.

httpx is imported here only, and this module only when a registry is used, so builds that
never talk to a registry do not pay for it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockyard.errors import RegistryError
from dockyard.registry.auth import Challenge, Credentials, load_credentials, parse_www_authenticate

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ACCEPT_MANIFESTS",
    "RegistryClient",
    "RegistryOptions",
    "api_host",
    "is_insecure_host",
]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Replies worth another try: a timeout, rate limiting, and server-side failures."""

ACCEPT_MANIFESTS = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_DOCKER_HUB_API = "registry-1.docker.io"
_USER_AGENT = "dockyard"

_READ_SIZE = 1 << 20
"""Bytes a connection asks its socket for at once (httpcore's default is 64 KiB). A blob is
received as one Python step per read (an h11 event, a generator step, a blob-writer write):
a 300 MB pull was 4,600 of them per layer set, and 1 MiB reads took issue 15's pull of 300
MB from 0.82 s to 0.68 s (docs/performance.md, section 21)."""


def _tune_reads() -> None:
    """Make httpcore's HTTP/1.1 connections read ``_READ_SIZE`` bytes at once. httpcore has
    no option for it, only the class attribute its connections read on each receive; when a
    later httpcore renames it, this does nothing and the reads stay at its default."""
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:  # pragma: no cover - httpcore is httpx's transport
        return
    if getattr(HTTP11Connection, "READ_NUM_BYTES", _READ_SIZE) < _READ_SIZE:
        HTTP11Connection.READ_NUM_BYTES = _READ_SIZE


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries. ``chunk_size``: blobs larger than this are uploaded in
    ``PATCH`` chunks of this size, smaller ones in one ``PUT``."""

    tls_verify: bool = True
    insecure_registries: tuple[str, ...] = ()
    auth_config: Path | None = None
    timeout: float = 60.0
    chunk_size: int = 32 << 20
    credentials: Mapping[str, Credentials] = field(default_factory=dict)
    retries: int = 4
    backoff: float = 0.25

    @classmethod
    def from_env(cls, **overrides: Any) -> RegistryOptions:
        """Options with ``$DOCKYARD_INSECURE_REGISTRIES`` added to the insecure list and
        ``$DOCKYARD_REGISTRY_RETRIES`` (how many times a failed transfer is tried again)."""
        env = os.environ.get("DOCKYARD_INSECURE_REGISTRIES", "")
        listed = tuple(x.strip() for x in env.split(",") if x.strip())
        extra = tuple(overrides.pop("insecure_registries", ()) or ())
        retries = os.environ.get("DOCKYARD_REGISTRY_RETRIES", "")
        if retries.isdigit() and "retries" not in overrides:
            overrides["retries"] = int(retries)
        return cls(insecure_registries=listed + extra, **overrides)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """How long to wait before try ``attempt + 1`` (``attempt`` counts from 0):
        exponential backoff with jitter, or the server's ``Retry-After`` (at most 30 s)."""
        if retry_after and retry_after.strip().isdigit():
            return min(30.0, float(retry_after.strip()))
        base = self.backoff * (2 ** attempt)
        return float(min(8.0, base * (0.5 + int.from_bytes(os.urandom(1), "big") / 255)))


def api_host(domain: str) -> str:
    """The host serving the API of ``domain`` (Docker Hub's is ``registry-1.docker.io``)."""
    return _DOCKER_HUB_API if domain in ("docker.io", "index.docker.io") else domain


def _split_host(host: str) -> tuple[str, str | None]:
    if host.startswith("["):
        end = host.find("]")
        name = host[1:end]
        rest = host[end + 1 :]
        return name, rest[1:] if rest.startswith(":") else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and name:
        return name, port
    return host, None


def is_insecure_host(host: str, listed: Sequence[str] = ()) -> bool:
    """Whether plain HTTP may be used for ``host`` (``name[:port]``): loopback names and
    addresses always, plus anything in ``listed`` (host, host:port or a CIDR range)."""
    name, _port = _split_host(host)
    if name == "localhost":
        return True
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is not None and address.is_loopback:
        return True
    for item in listed:
        if item in (host, name):
            return True
        if address is not None and "/" in item:
            try:
                if address in ipaddress.ip_network(item, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _error_detail(response: httpx.Response) -> str:
    """The distribution error codes and messages of a reply, or its status text."""
    try:
        body = response.read()
    except Exception:  # a broken error body must not hide the status
        body = b""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    parts: list[str] = []
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        for err in data["errors"]:
            if isinstance(err, dict):
                code, msg = err.get("code", ""), err.get("message", "")
                parts.append(f"{code}: {msg}" if code and msg else str(code or msg))
    if parts:
        return "; ".join(parts)
    return response.reason_phrase or ""


class RegistryClient:
    """One registry (``domain``, as in a reference: ``docker.io``, ``localhost:5000``).

    Not thread-safe; one client per operation is cheap. Close it (or use ``with``).
    """

    def __init__(
        self,
        domain: str,
        options: RegistryOptions | None = None,
        *,
        credentials: Credentials | None = None,
        use_stored_credentials: bool = True,
    ) -> None:
        import httpx

        _tune_reads()
        self.domain = domain
        self.host = api_host(domain)
        self.options = options or RegistryOptions.from_env()
        if credentials is None and use_stored_credentials:
            credentials = self.options.credentials.get(domain) or load_credentials(
                domain, self.options.auth_config
            )
        self.credentials = credentials
        self._insecure = not self.options.tls_verify or is_insecure_host(
            self.host, self.options.insecure_registries
        )
        verify = self.options.tls_verify and not self._insecure
        timeout = httpx.Timeout(self.options.timeout, connect=min(self.options.timeout, 15.0))
        headers = {"User-Agent": _USER_AGENT}
        self._http = httpx.Client(verify=verify, timeout=timeout, headers=headers,
                                  follow_redirects=False)
        self._base: str | None = None
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], str] = {}
        self._ping_lock = threading.Lock()
        self.retried = 0  # how many requests or transfers were tried again

    def sibling(self) -> RegistryClient:
        """Another client of the same registry, for another thread (a client is not
        thread-safe): a connection of its own, but the scheme, the challenge and the tokens
        this one found are shared (no second ping; a token fetched by one serves all)."""
        other = RegistryClient(self.domain, self.options, credentials=self.credentials,
                               use_stored_credentials=False)
        other._base = self.base_url()
        other._challenge = self._challenge
        other._tokens = self._tokens  # dict reads and writes are atomic
        return other

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # --- errors ---

    def _fail(self, what: str, repo: str | None = None, detail: str = "") -> RegistryError:
        where = f"{self.domain}/{repo}" if repo else self.domain
        return RegistryError(f"{where}: {what}" + (f": {detail}" if detail else ""))

    def _transport(self, err: Exception, what: str, repo: str | None) -> RegistryError:
        return self._fail(what, repo, f"{type(err).__name__}: {err}")

    # --- ping and scheme ---

    def base_url(self) -> str:
        """``https://host`` or, for an insecure registry without TLS, ``http://host``."""
        if self._base is None:
            with self._ping_lock:  # siblings are made on several threads
                if self._base is None:
                    self.ping()
        assert self._base is not None
        return self._base

    def ping(self) -> Challenge | None:
        """``GET /v2/``: find the scheme and the auth challenge (None when none is needed).
        Tried again with backoff when the connection drops or the registry answers 5xx."""
        attempts = 1 + max(0, self.options.retries)
        for attempt in range(attempts):
            try:
                return self._ping_once()
            except _Transient as err:
                if attempt == attempts - 1:
                    raise RegistryError(f"{err} (tried {attempts} times)") from None
                self._pause(attempt, None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _ping_once(self) -> Challenge | None:
        import httpx

        schemes = ("https", "http") if self._insecure else ("https",)
        last: Exception | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.host}/v2/"
            try:
                response = self._http.get(url)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as err:
                last = err
                continue
            except httpx.HTTPError as err:
                raise _Transient(str(self._transport(err, "cannot reach the registry",
                                                     None))) from None
            if response.status_code in RETRY_STATUSES:
                raise _Transient(str(self._fail("GET /v2/ failed", None,
                                                f"HTTP {response.status_code}")))
            self._base = f"{scheme}://{self.host}"
            if response.status_code == 401:
                challenges = parse_www_authenticate(response.headers.get("www-authenticate", ""))
                self._challenge = _pick(challenges)
                if self._challenge is None:
                    raise self._fail("registry wants authentication, but its challenge "
                                     "(WWW-Authenticate) names no scheme dockyard supports")
                return self._challenge
            if response.status_code >= 400:
                raise self._fail("not a registry (GET /v2/)", None,
                                 f"HTTP {response.status_code} {_error_detail(response)}")
            self._challenge = None
            return None
        error = self._fail("cannot reach the registry" + connect_hint(last, self.host,
                                                                      self._insecure), None,
                           f"{type(last).__name__}: {last}" if last else "")
        if isinstance(last, (httpx.RemoteProtocolError, httpx.ReadError)):
            raise _Transient(str(error))  # the connection was dropped: worth another try
        raise error

    # --- auth ---

    def _token(self, scopes: tuple[str, ...], *, fresh: bool = False) -> str:
        import httpx

        assert self._challenge is not None
        if not fresh and scopes in self._tokens:
            return self._tokens[scopes]
        realm = self._challenge.realm
        if not realm:
            raise self._fail("the registry's Bearer challenge has no realm")
        params: list[tuple[str, str | int | float | bool | None]] = []
        service = self._challenge.params.get("service")
        if service:
            params.append(("service", service))
        params += [("scope", s) for s in scopes]
        creds = self.credentials
        # the token server is a registry transfer too: tried again with backoff on a dropped
        # connection, a timeout, 429 and 5xx
        attempts = 1 + max(0, self.options.retries)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                if creds is not None and creds.identity_token:
                    form = {"grant_type": "refresh_token",
                            "refresh_token": creds.identity_token,
                            "client_id": _USER_AGENT, "service": service or "",
                            "scope": " ".join(scopes)}
                    response = self._http.post(realm, data=form)
                else:
                    headers = {"Authorization": creds.basic()} if creds is not None else {}
                    response = self._http.get(realm, params=params, headers=headers)
            except httpx.TransportError as err:
                if last:
                    raise self._fail(f"cannot get a token from {realm} (tried {attempts} "
                                     "times)", None, f"{type(err).__name__}: {err}") from None
                self._pause(attempt, None)
                continue
            except httpx.HTTPError as err:
                raise self._transport(err, f"cannot get a token from {realm}", None) from None
            if response.status_code in RETRY_STATUSES and not last:
                retry_after = response.headers.get("retry-after")
                response.close()
                self._pause(attempt, retry_after)
                continue
            break
        if response.status_code in (401, 403):
            if creds is None:
                raise self._fail("authentication required", None,
                                 f"the token server {realm} refused anonymous access "
                                 f"(run 'dockyard login {self.domain}')")
            raise self._fail("authentication failed", None,
                             f"the token server {realm} refused the credentials of "
                             f"{creds.username!r}: HTTP {response.status_code} "
                             f"{_error_detail(response)}")
        if response.status_code >= 400:
            tried = (f" (tried {attempts} times)"
                     if response.status_code in RETRY_STATUSES and attempts > 1 else "")
            raise self._fail(f"cannot get a token from {realm}", None,
                             f"HTTP {response.status_code} {_error_detail(response)}{tried}")
        try:
            data = response.json()
        except ValueError:
            raise self._fail(f"the token server {realm} did not answer JSON") from None
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise self._fail(f"the token server {realm} gave no token")
        self._tokens[scopes] = token
        return token

    def _auth_header(self, scopes: tuple[str, ...], *, fresh: bool = False) -> dict[str, str]:
        challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "bearer":
            return {"Authorization": f"Bearer {self._token(scopes, fresh=fresh)}"}
        if self.credentials is None:
            raise self._fail("authentication required", None,
                             f"the registry wants Basic auth (run 'dockyard login {self.domain}')")
        return {"Authorization": self.credentials.basic()}

    def login(self) -> None:
        """Check the credentials: ping, then authenticate (a token without scopes, or
        ``GET /v2/`` with Basic auth). Raises RegistryError when they are refused."""
        if self.ping() is None:
            return
        self._request("GET", "/v2/", (), what="log in")

    # --- requests ---

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url() + path_or_url

    def _send(
        self,
        method: str,
        path_or_url: str,
        scopes: tuple[str, ...],
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | Callable[[], Iterable[bytes]] | None = None,
        params: Mapping[str, str] | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        url = self._url(path_or_url)
        fresh = False
        for attempt in range(2):
            all_headers = dict(headers or {})
            all_headers.update(self._auth_header(scopes, fresh=fresh))
            body: Any = content() if callable(content) else content
            request = self._http.build_request(method, url, headers=all_headers, content=body,
                                               params=params)
            response = self._http.send(request, stream=stream,
                                       follow_redirects=follow_redirects)
            if response.status_code != 401 or attempt == 1:
                return response
            # a 401 after the ping: a token that expired, a wider scope, or auth that the
            # ping did not ask for (some registries answer /v2/ anonymously)
            challenges = parse_www_authenticate(response.headers.get("www-authenticate", ""))
            picked = _pick(challenges)
            response.close()
            if picked is None:
                return response
            if self._challenge is not None and picked.scheme == self._challenge.scheme == "basic":
                return response
            self._challenge = picked
            fresh = True
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(
        self,
        method: str,
        path_or_url: str,
        scopes: tuple[str, ...],
        *,
        what: str,
        repo: str | None = None,
        ok: tuple[int, ...] = (200,),
        retry: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request, tried again with backoff on a dropped connection, a timeout, 429 and
        5xx (``retry=False``: once; for requests that cannot simply be sent again)."""
        import httpx

        attempts = 1 + (max(0, self.options.retries) if retry else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._send(method, path_or_url, scopes, **kwargs)
            except RegistryError:
                raise
            except httpx.TransportError as err:
                if last or not retry:
                    suffix = f" (tried {attempts} times)" if attempts > 1 else ""
                    raise self._fail(what + suffix, repo,
                                     f"{type(err).__name__}: {err}") from None
                self._pause(attempt, None)
                continue
            except httpx.HTTPError as err:
                raise self._transport(err, what, repo) from None
            if response.status_code in RETRY_STATUSES and response.status_code not in ok \
                    and not last:
                retry_after = response.headers.get("retry-after")
                response.close()
                self._pause(attempt, retry_after)
                continue
            break
        if response.status_code not in ok:
            tried = attempts if response.status_code in RETRY_STATUSES else 1
            raise self._refuse(response, what, repo, tried)
        return response

    def _refuse(self, response: httpx.Response, what: str, repo: str | None,
                tried: int = 1) -> RegistryError:
        """The error for a reply with an unexpected status (the response is closed)."""
        detail = f"HTTP {response.status_code} {_error_detail(response)}".strip()
        if tried > 1:
            detail += f" (tried {tried} times)"
        response.close()
        if response.status_code == 401:
            who = (f"as {self.credentials.username!r}" if self.credentials
                   else f"anonymously (run 'dockyard login {self.domain}')")
            return self._fail(f"{what}: not authorized {who}", repo, detail)
        if response.status_code == 403:
            return self._fail(f"{what}: access denied", repo, detail)
        return self._fail(what, repo, detail)

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        import time

        self.retried += 1
        time.sleep(self.options.delay(attempt, retry_after))

    # --- manifests ---

    def get_manifest(
        self, repo: str, reference: str, accept: Sequence[str] = ACCEPT_MANIFESTS
    ) -> tuple[bytes, str, str | None]:
        """``GET /v2/REPO/manifests/REF``: (body, media type, Docker-Content-Digest or None)."""
        response = self._request(
            "GET", f"/v2/{repo}/manifests/{reference}", (f"repository:{repo}:pull",),
            what=f"manifest {reference}", repo=repo, headers={"Accept": ", ".join(accept)},
            follow_redirects=True,
        )
        body = response.content
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
        return body, media_type, response.headers.get("docker-content-digest")

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str | None:
        """``PUT /v2/REPO/manifests/REF``; returns the digest the registry reports."""
        response = self._request(
            "PUT", f"/v2/{repo}/manifests/{reference}", (f"repository:{repo}:pull,push",),
            what=f"upload of manifest {reference}", repo=repo, ok=(200, 201, 202),
            headers={"Content-Type": media_type}, content=body,
        )
        response.close()
        digest = response.headers.get("docker-content-digest")
        return str(digest) if digest else None

    # --- blobs ---

    def blob_size(self, repo: str, digest: str, *, push: bool = False) -> int | None:
        """``HEAD`` a blob: its size, or None if the repository does not have it."""
        scope = f"repository:{repo}:pull,push" if push else f"repository:{repo}:pull"
        response = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", (scope,),
                                 what=f"check of blob {digest}", repo=repo, ok=(200, 404),
                                 follow_redirects=True)
        response.close()
        if response.status_code == 404:
            return None
        length = response.headers.get("content-length")
        return int(length) if length and length.isdigit() else -1

    @contextmanager
    def open_blob(self, repo: str, digest: str) -> Iterator[httpx.Response]:
        """``GET`` a blob as a streamed response (redirects to storage are followed; the
        registry's credentials are not sent there)."""
        response = self._request("GET", f"/v2/{repo}/blobs/{digest}",
                                 (f"repository:{repo}:pull",), what=f"download of blob {digest}",
                                 repo=repo, stream=True, follow_redirects=True)
        try:
            yield response
        finally:
            response.close()

    def _location(self, response: httpx.Response, repo: str) -> str:
        location = response.headers.get("location")
        if not location:
            raise self._fail("the registry gave no upload location", repo)
        return str(response.url.join(location))

    def start_upload(self, repo: str, mount: tuple[str, str] | None = None) -> str | None:
        """``POST /v2/REPO/blobs/uploads/``: the upload URL, or None when ``mount``
        (digest, source repository) was mounted from the other repository."""
        scopes: tuple[str, ...] = (f"repository:{repo}:pull,push",)
        params: dict[str, str] = {}
        if mount is not None:
            params = {"mount": mount[0], "from": mount[1]}
            scopes += (f"repository:{mount[1]}:pull",)
        response = self._request("POST", f"/v2/{repo}/blobs/uploads/", scopes,
                                 what="start of a blob upload", repo=repo, ok=(201, 202),
                                 params=params, content=b"")
        response.close()
        if response.status_code == 201 and mount is not None:
            return None
        return self._location(response, repo)

    def upload_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        open_data: Callable[[], Any],
        *,
        location: str | None = None,
    ) -> None:
        """Upload ``size`` bytes (``open_data()`` returns a fresh binary file each call):
        one ``PUT`` when ``size`` is at most ``chunk_size``, else ``PATCH`` chunks, then
        the closing ``PUT ?digest=``. A transfer that fails (a dropped connection, a 5xx) is
        started again from the beginning in a new upload session, with backoff."""
        attempts = 1 + max(0, self.options.retries)
        for attempt in range(attempts):
            try:
                self._upload_once(repo, digest, size, open_data, location)
                return
            except _Transient as err:
                if attempt == attempts - 1:
                    raise RegistryError(f"{err} (tried {attempts} times)") from None
            location = None  # a new session: the old one may hold a partial upload
            self._pause(attempt, None)

    def _upload_once(
        self, repo: str, digest: str, size: int, open_data: Callable[[], Any],
        location: str | None,
    ) -> None:
        import httpx

        url = location or self.start_upload(repo)
        assert url is not None
        scopes = (f"repository:{repo}:pull,push",)
        chunk = max(1, self.options.chunk_size)
        what = f"upload of blob {digest}"
        if size <= chunk:
            def whole() -> Iterator[bytes]:
                with open_data() as f:
                    while data := f.read(1 << 20):
                        yield data

            put_url = str(httpx.URL(url).copy_merge_params({"digest": digest}))
            response = self._transfer(
                "PUT", put_url, scopes, what=what, repo=repo, ok=(201, 204),
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(size)}, content=whole)
            response.close()
            return
        with open_data() as f:
            offset = 0
            while offset < size:
                data = f.read(min(chunk, size - offset))
                if not data:
                    raise self._fail(what, repo, f"local blob ended after {offset} of {size} "
                                     "bytes")
                response = self._transfer(
                    "PATCH", url, scopes, what=what, repo=repo, ok=(202, 204),
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Length": str(len(data)),
                             "Content-Range": f"{offset}-{offset + len(data) - 1}"},
                    content=data)
                response.close()
                url = self._location(response, repo)
                offset += len(data)
        put_url = str(httpx.URL(url).copy_merge_params({"digest": digest}))
        response = self._transfer("PUT", put_url, scopes, what=what, repo=repo, ok=(201, 204),
                                  headers={"Content-Length": "0"}, content=b"")
        response.close()

    def upload_stream(
        self, repo: str, pieces: Iterable[bytes], close: Callable[[], tuple[str, int]],
    ) -> str:
        """Upload a blob while it is being made, its digest known only at the end (as
        ``docker push`` streams a layer): ``POST``, one ``PATCH`` whose body is ``pieces``
        (chunked transfer encoding), then ``PUT ?digest=`` with the digest ``close()``
        returns once ``pieces`` is exhausted. ``close()`` must raise when the blob did not
        come out whole; the upload is then left unfinished (the registry drops it). The
        size the registry acknowledges must be ``close()``'s, and the registry checks the
        digest itself. Sent once: a failure raises RegistryError and the caller uploads the
        stored blob instead. Returns the digest."""
        import httpx

        url = self.start_upload(repo)
        assert url is not None
        scopes = (f"repository:{repo}:pull,push",)
        digest = "upload"
        what = f"streamed upload of a blob to {repo}"
        response = self._transfer(
            "PATCH", url, scopes, what=what, repo=repo, ok=(202, 204),
            headers={"Content-Type": "application/octet-stream"},
            content=lambda: iter(pieces))
        response.close()
        url = self._location(response, repo)
        digest, size = close()
        what = f"upload of blob {digest}"
        last = response.headers.get("range", "")
        if last and last != f"0-{size - 1}" and not (size == 0 and last in ("0-0", "")):
            raise self._fail(what, repo, f"the registry received {last}, expected {size} "
                             "bytes")
        put_url = str(httpx.URL(url).copy_merge_params({"digest": digest}))
        response = self._transfer("PUT", put_url, scopes, what=what, repo=repo, ok=(201, 204),
                                  headers={"Content-Length": "0"}, content=b"")
        response.close()
        return digest

    def _transfer(self, method: str, url: str, scopes: tuple[str, ...], *, what: str,
                  repo: str, ok: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        """One request of an upload, sent once; a failure worth starting the upload again
        for raises a RegistryError marked ``transient``."""
        import httpx

        try:
            response = self._send(method, url, scopes, **kwargs)
        except RegistryError:
            raise
        except httpx.HTTPError as err:
            raise _Transient(str(self._transport(err, what, repo))) from None
        if response.status_code in RETRY_STATUSES:
            raise _Transient(str(self._refuse(response, what, repo)))
        if response.status_code not in ok:
            raise self._refuse(response, what, repo)
        return response


class _Transient(RegistryError):
    """A failed upload request worth starting the upload again for."""


def _pick(challenges: list[Challenge]) -> Challenge | None:
    """Bearer over Basic, as Docker prefers; None if neither is offered."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


def connect_hint(err: BaseException | None, host: str, insecure: bool) -> str:
    """Why a registry could not be reached, as a hint: a host name that does not resolve
    (DNS), a TLS handshake that failed (a registry without TLS, or an untrusted
    certificate), or nothing listening. Only the TLS case suggests an insecure registry."""
    import socket
    import ssl

    chain: list[BaseException] = []
    while err is not None and len(chain) < 10:
        chain.append(err)
        err = err.__cause__ or err.__context__
    text = " ".join(str(e) for e in chain).lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if any(isinstance(e, socket.gaierror) for e in chain) or any(
            s in text for s in ("name or service not known", "temporary failure in name",
                                "nodename nor servname", "no address associated")):
        return (f" (the host name {name} does not resolve: check the name, or the machine's "
                "DNS; with no network, load the image from an archive instead)")
    if any(isinstance(e, ssl.SSLError) for e in chain) or any(
            s in text for s in ("ssl", "certificate", "tls", "wrong version number")):
        if insecure:
            return " (the TLS handshake failed)"
        return (" (the TLS handshake failed: for a registry without TLS or with a "
                "self-signed certificate, add it to DOCKYARD_INSECURE_REGISTRIES; pull and "
                "push also take --tls-verify=false)")
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return f" (nothing listens at {host})"
    return ""
