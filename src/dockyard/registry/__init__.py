"""registry room: the distribution (OCI) API client: token/Basic auth, pull, push
(chunked, cross-repository mounts), manifest lists. See docs/registries.md.

Importing this package does not import httpx; the client does, when it is created.
"""

from __future__ import annotations

from dockyard.registry.auth import (
    Challenge,
    Credentials,
    load_credentials,
    parse_www_authenticate,
    remove_credentials,
    save_credentials,
)
from dockyard.registry.client import RegistryClient, RegistryOptions, is_insecure_host
from dockyard.registry.pull import PullResult, pull
from dockyard.registry.push import PushResult, push

__all__ = [
    "Challenge",
    "Credentials",
    "PullResult",
    "PushResult",
    "RegistryClient",
    "RegistryOptions",
    "is_insecure_host",
    "load_credentials",
    "parse_www_authenticate",
    "pull",
    "push",
    "remove_credentials",
    "save_credentials",
]
