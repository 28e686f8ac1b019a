"""Registry credentials and auth challenges.

Credentials live where Docker keeps them, so ``docker login`` and ``dockyard login`` share
them: ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``), in ``auths``::

    {"auths": {"registry.example.com": {"auth": "<base64 of user:password>"}}}

Docker Hub's key is ``https://index.docker.io/v1/``; keys written by other tools as URLs
(``https://host/v2/``) match their host. ``credHelpers``/``credsStore`` entries are honoured by
running ``docker-credential-<name> get`` as Docker does. ``DOCKYARD_AUTH_CONFIG`` may hold a
whole config document (the same JSON, as CI systems pass ``DOCKER_AUTH_CONFIG``); it is read
before the file and never written.

``WWW-Authenticate`` challenges (RFC 7235, as distribution sends them)::

    Bearer realm="https://auth.example.com/token",service="registry",scope="repository:a:pull"
    Basic realm="Registry Realm"
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.errors import RegistryError, UsageError

__all__ = [
    "DOCKER_HUB_AUTH_KEY",
    "Challenge",
    "Credentials",
    "auth_key",
    "config_path",
    "load_credentials",
    "parse_www_authenticate",
    "remove_credentials",
    "save_credentials",
]

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


@dataclass(frozen=True)
class Challenge:
    """One auth challenge: the scheme (lower-cased) and its parameters (names lower-cased)."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        """The ``realm`` parameter (the token endpoint for Bearer)."""
        return self.params.get("realm")


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or an identity token, Docker's ``identitytoken``)."""

    username: str
    password: str
    identity_token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"

    def basic(self) -> str:
        """The ``Authorization: Basic ...`` value."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


# --- WWW-Authenticate ---------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM_RE = re.compile(rf"\s*({_TOKEN})\s*=\s*({_QUOTED}|{_TOKEN})\s*")
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?=\s|$|,)")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges, in order.

    Handles several challenges in one header (``Basic realm="x", Bearer realm="y"``),
    quoted values with commas and escapes, and bare tokens. Unparseable text is skipped,
    as Docker's parser does, rather than failing the request.
    """
    challenges: list[Challenge] = []
    pos = 0
    text = header
    while pos < len(text):
        while pos < len(text) and text[pos] in ", \t":
            pos += 1
        if pos >= len(text):
            break
        scheme_match = _SCHEME_RE.match(text, pos)
        if scheme_match is None:
            break
        scheme = scheme_match.group(1)
        pos = scheme_match.end()
        params: dict[str, str] = {}
        while True:
            param = _PARAM_RE.match(text, pos)
            if param is None:
                break
            params[param.group(1).lower()] = _unquote(param.group(2))
            pos = param.end()
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            break
        if not params:
            # a token68 (``Negotiate abc==``) or nothing: skip to the next comma
            nxt = text.find(",", pos)
            pos = len(text) if nxt < 0 else nxt + 1
        challenges.append(Challenge(scheme.lower(), params))
    return challenges


# --- the config file ----------------------------------------------------------------------


def config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    if base:
        return Path(base) / "config.json"
    return Path.home() / ".docker" / "config.json"


def auth_key(registry: str) -> str:
    """The ``auths`` key Docker uses for ``registry`` (a host, host:port or URL)."""
    host = _host_of(registry)
    if host in _DOCKER_HUB_HOSTS:
        return DOCKER_HUB_AUTH_KEY
    return host


def _host_of(key: str) -> str:
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0].lower()


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise RegistryError(f"cannot read {path}: {err.strerror}") from None
    return _parse_config(text, str(path))


def _parse_config(text: str, what: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as err:
        raise RegistryError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return data


def _entry_credentials(entry: Any, what: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    identity = entry.get("identitytoken") or None
    user = entry.get("username")
    password = entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            raw = base64.b64decode(encoded, validate=False).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryError(f"{what}: the 'auth' value is not base64 of user:password") from None
        user, sep, password = raw.partition(":")
        if not sep:
            raise RegistryError(f"{what}: the 'auth' value is not base64 of user:password")
    if isinstance(user, str) and isinstance(password, str) and (user or password):
        return Credentials(user, password, identity if isinstance(identity, str) else None)
    if isinstance(identity, str):
        return Credentials(user if isinstance(user, str) else "", "", identity)
    return None


def _from_auths(config: Mapping[str, Any], registry: str, what: str) -> Credentials | None:
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return None
    want = auth_key(registry)
    if want in auths:
        return _entry_credentials(auths[want], f"{what} ({want})")
    for key, entry in auths.items():
        if auth_key(key) == want:
            return _entry_credentials(entry, f"{what} ({key})")
    return None


def _from_helper(config: Mapping[str, Any], registry: str) -> Credentials | None:
    key = auth_key(registry)
    helpers = config.get("credHelpers")
    helper = None
    if isinstance(helpers, dict):
        helper = helpers.get(key) or helpers.get(_host_of(registry))
    if not helper:
        store = config.get("credsStore")
        helper = store if isinstance(store, str) and store else None
    if not helper:
        return None
    exe = shutil.which(f"docker-credential-{helper}")
    if exe is None:
        return None
    proc = subprocess.run([exe, "get"], input=key.encode(), capture_output=True, check=False,
                          timeout=30)
    if proc.returncode != 0:
        return None  # "credentials not found in native keychain"
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise RegistryError(f"docker-credential-{helper} printed something that is not JSON"
                            ) from None
    user, secret = data.get("Username", ""), data.get("Secret", "")
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        return None
    if user == "<token>":
        return Credentials("", "", secret)
    return Credentials(user, secret)


def load_credentials(registry: str, path: Path | None = None) -> Credentials | None:
    """The credentials for ``registry`` (host[:port]; ``docker.io`` for Docker Hub), or None.

    Looks in ``DOCKYARD_AUTH_CONFIG`` (when ``path`` is not given), then the config file's
    credential helpers and ``auths``.
    """
    if path is None:
        env = os.environ.get("DOCKYARD_AUTH_CONFIG")
        if env:
            found = _from_auths(_parse_config(env, "DOCKYARD_AUTH_CONFIG"), registry,
                                "DOCKYARD_AUTH_CONFIG")
            if found is not None:
                return found
    file = path or config_path()
    config = _read_config(file)
    return _from_helper(config, registry) or _from_auths(config, registry, str(file))


def _write_config(path: Path, config: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(config, f, indent="\t")
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_credentials(registry: str, credentials: Credentials, path: Path | None = None) -> Path:
    """Store ``credentials`` for ``registry`` in the config file (other keys are kept);
    returns the file written."""
    if ":" in credentials.username:
        raise UsageError("a user name cannot contain ':'")
    file = path or config_path()
    config = _read_config(file)
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    key = auth_key(registry)
    for other in [k for k in auths if k != key and auth_key(k) == key]:
        del auths[other]
    raw = f"{credentials.username}:{credentials.password}".encode()
    auths[key] = {"auth": base64.b64encode(raw).decode("ascii")}
    config["auths"] = auths
    _write_config(file, config)
    return file


def remove_credentials(registry: str, path: Path | None = None) -> bool:
    """Forget the stored credentials for ``registry``; False if there were none."""
    file = path or config_path()
    config = _read_config(file)
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return False
    key = auth_key(registry)
    doomed = [k for k in auths if auth_key(k) == key]
    if not doomed:
        return False
    for k in doomed:
        del auths[k]
    _write_config(file, config)
    return True
