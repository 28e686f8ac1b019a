"""Registries: ``pull``, ``push``, ``login``, ``logout``, ``get_login``.

Registry options are plain arguments: ``tls_verify`` (False also allows plain HTTP),
``insecure_registries`` (hosts or CIDRs that may use plain HTTP or unverified TLS; loopback
registries always may; ``$DOCKYARD_INSECURE_REGISTRIES`` adds to it) and ``authfile``
(Docker's ``config.json``; default ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dockyard._api._common import Root, open_store, registry_options
from dockyard.progress.events import ProgressMessage
from dockyard.rootless.namespace import in_namespace

__all__ = [
    "LoginResult",
    "LoginStatus",
    "LogoutResult",
    "PullResult",
    "PushResult",
    "get_login",
    "login",
    "logout",
    "pull",
    "push",
]

AuthFile = str | os.PathLike[str] | None


@dataclass(frozen=True)
class PullResult:
    """What ``pull`` stored."""

    reference: str  # the full reference pulled (docker.io/library/busybox:latest)
    name: str  # its familiar form (busybox:latest)
    image_id: str  # config digest
    manifest_digest: str  # the platform manifest stored
    digest: str  # the digest the reference resolved to (an index for multi-platform images)
    layers_downloaded: int
    layers_present: int  # layers the store already had


@dataclass(frozen=True)
class PushResult:
    """What ``push`` uploaded."""

    reference: str  # where it went
    digest: str  # the manifest digest in the registry
    size: int  # of the manifest
    media_type: str  # of the manifest
    uploaded: int  # blobs uploaded
    mounted: int  # blobs mounted from another repository of the registry
    present: int  # blobs the registry already had


@dataclass(frozen=True)
class LoginResult:
    """Credentials checked against ``registry`` and saved in ``config_path``."""

    registry: str
    config_path: Path


@dataclass(frozen=True)
class LoginStatus:
    """The user name stored for ``registry``, None when not logged in."""

    registry: str
    username: str | None


@dataclass(frozen=True)
class LogoutResult:
    """``removed``: whether credentials for ``registry`` were stored (and are now gone)."""

    registry: str
    removed: bool


def _progress(operation: str, on_event: Callable[[ProgressMessage], None] | None
              ) -> Callable[[str], None] | None:
    if on_event is None:
        return None
    return lambda message: on_event(ProgressMessage(operation, message, time.time()))


def pull(
    reference: str,
    *,
    platform: str | None = None,
    tls_verify: bool = True,
    insecure_registries: Sequence[str] = (),
    authfile: AuthFile = None,
    root: Root = None,
    on_event: Callable[[ProgressMessage], None] | None = None,
) -> PullResult:
    """Download ``reference`` (``NAME[:TAG|@DIGEST]``) into the store and name it so.

    ``platform`` (``os/arch[/variant]``, default the host's) picks from a multi-platform
    image. Layers the store has are not downloaded again. Each step (resolving, each
    layer) is reported to ``on_event`` as a :class:`ProgressMessage`.
    """
    from dockyard.image.reference import parse_reference
    from dockyard.registry.pull import pull as registry_pull

    with open_store(root) as store:
        got = registry_pull(store, reference, platform=platform,
                            options=registry_options(tls_verify, insecure_registries, authfile),
                            on_progress=_progress("pull", on_event))
    return PullResult(
        reference=got.reference,
        name=parse_reference(got.reference).familiar,
        image_id=got.image_id,
        manifest_digest=got.manifest_digest,
        digest=got.digest,
        layers_downloaded=got.layers_downloaded,
        layers_present=got.layers_present,
    )


@in_namespace
def push(
    image: str,
    destination: str | None = None,
    *,
    manifest_format: Literal["oci", "docker"] = "oci",
    compression: Literal["gzip", "zstd", "uncompressed"] = "gzip",
    tls_verify: bool = True,
    insecure_registries: Sequence[str] = (),
    authfile: AuthFile = None,
    root: Root = None,
    on_event: Callable[[ProgressMessage], None] | None = None,
) -> PushResult:
    """Upload ``image`` (a name or id in the store) to ``destination``
    (``registry/repository[:tag]``; default: ``image`` itself, which must then be a name).

    ``manifest_format``: an OCI manifest or a Docker schema2 one. Layers are compressed
    with ``compression`` (a compressed form made before is reused); blobs the registry
    has are skipped and blobs in another repository of it are mounted. Progress goes to
    ``on_event`` as :class:`ProgressMessage` events.
    """
    from dockyard.registry.push import push as registry_push

    with open_store(root) as store:
        got = registry_push(store, image, destination, manifest_format=manifest_format,
                            compression=compression,
                            options=registry_options(tls_verify, insecure_registries, authfile),
                            on_progress=_progress("push", on_event))
    return PushResult(got.reference, got.digest, got.size, got.media_type, got.uploaded,
                      got.mounted, got.present)


def _host(registry: str) -> str:
    text = registry.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host = text.split("/", 1)[0].lower() or "docker.io"
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def login(
    registry: str,
    username: str,
    password: str,
    *,
    tls_verify: bool = True,
    insecure_registries: Sequence[str] = (),
    authfile: AuthFile = None,
) -> LoginResult:
    """Check ``username`` and ``password`` (or a token) against ``registry`` (``host[:port]``;
    ``docker.io`` for Docker Hub) and save them in Docker's config file, as ``docker login``.
    RegistryError when the registry refuses them."""
    from dockyard.errors import UsageError
    from dockyard.registry.auth import Credentials, save_credentials
    from dockyard.registry.client import RegistryClient

    if not username:
        raise UsageError("give a user name with -u USER")
    if not password:
        raise UsageError("the password is empty")
    host = _host(registry)
    credentials = Credentials(username, password)
    options = registry_options(tls_verify, insecure_registries, authfile)
    with RegistryClient(host, options, credentials=credentials) as client:
        client.login()
    path = save_credentials(host, credentials, Path(authfile) if authfile else None)
    return LoginResult(host, path)


def logout(registry: str = "docker.io", *, authfile: AuthFile = None) -> LogoutResult:
    """Forget the stored credentials of ``registry``."""
    from dockyard.registry.auth import remove_credentials

    host = _host(registry)
    return LogoutResult(host, remove_credentials(host, Path(authfile) if authfile else None))


def get_login(registry: str = "docker.io", *, authfile: AuthFile = None) -> LoginStatus:
    """Who is logged in to ``registry``: the user name stored for it, if any."""
    from dockyard.registry.auth import load_credentials

    host = _host(registry)
    found = load_credentials(host, Path(authfile) if authfile else None)
    return LoginStatus(host, found.username if found is not None else None)
