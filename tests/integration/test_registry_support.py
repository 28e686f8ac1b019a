"""Shared fixtures for the registry tests: real registries (Debian's ``docker-registry``, the
CNCF distribution server) on free loopback ports, one open, one with htpasswd (Basic) auth,
one with Bearer token auth through a small token server of our own; and a store with a small
built image. No tests of its own.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

REGISTRY_BIN = shutil.which("docker-registry")
needs_registry = pytest.mark.skipif(
    REGISTRY_BIN is None, reason="docker-registry is not installed (apt-get install "
    "docker-registry)")

USER = "alice"
PASSWORD = "s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not start: {log.read_text()[-2000:]}")


@dataclass
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``."""

    host: str
    root: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_registry(root: Path, auth: str = "") -> Registry:
    """Start ``docker-registry serve`` with its own storage under ``root``."""
    assert REGISTRY_BIN is not None
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + auth
    )
    log = root / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    _wait_http(port, proc, log)
    return Registry(f"127.0.0.1:{port}", root, proc)


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line (the only hash distribution accepts)."""
    try:
        import bcrypt  # type: ignore[import-not-found]

        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        return f"{user}:{hashed}"
    except ImportError:
        pass
    tool = shutil.which("htpasswd")
    if tool is None:
        pytest.skip("no bcrypt: install apache2-utils (htpasswd) or the bcrypt module")
    out = subprocess.run([tool, "-nbB", "-C", "5", user, password], capture_output=True,
                         text=True, check=True).stdout
    return out.strip().splitlines()[0]


@dataclass
class TokenServer:
    """A token endpoint (the Bearer ``realm``): grants a token for Basic ``USER:PASSWORD``,
    and to anonymous clients for pulls of ``public/*`` only; remembers the scopes asked for."""

    port: int
    server: ThreadingHTTPServer
    scopes: list[list[str]] = field(default_factory=list)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"


def start_token_server() -> TokenServer:
    holder: dict[str, TokenServer] = {}
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            scopes = query.get("scope", [])
            holder["s"].scopes.append(scopes)
            anonymous_ok = bool(scopes) and all(
                s.startswith("repository:public/") and s.endswith(":pull") for s in scopes)
            auth = self.headers.get("Authorization")
            if auth != expected and not (auth is None and anonymous_ok):
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
                self.send_response(401)
            else:
                body = json.dumps({"token": "tok-" + str(time.time())}).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    token = TokenServer(server.server_address[1], server)
    holder["s"] = token
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return token


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """An open registry (no auth)."""
    root = Path(tempfile.mkdtemp(prefix="dockyard-registry-", dir="/var/tmp"))
    reg = start_registry(root)
    yield reg
    reg.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def basic_registry() -> Iterator[Registry]:
    """A registry with htpasswd (Basic) auth for USER / PASSWORD."""
    root = Path(tempfile.mkdtemp(prefix="dockyard-registry-basic-", dir="/var/tmp"))
    (root / "htpasswd").write_text(htpasswd_line(USER, PASSWORD) + "\n")
    reg = start_registry(root, "auth:\n  htpasswd:\n    realm: dockyard-test\n"
                               f"    path: {root / 'htpasswd'}\n")
    yield reg
    reg.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def token_registry() -> Iterator[tuple[Registry, TokenServer]]:
    """A registry that answers with a Bearer challenge pointing at our token server.

    distribution's ``silly`` access controller sends the real challenge (realm, service,
    scope) and accepts any token; the token server is what checks the credentials.
    """
    token = start_token_server()
    root = Path(tempfile.mkdtemp(prefix="dockyard-registry-token-", dir="/var/tmp"))
    reg = start_registry(root, f"auth:\n  silly:\n    realm: {token.realm}\n"
                               "    service: dockyard-test\n")
    yield reg, token
    reg.stop()
    token.server.shutdown()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ``$DOCKER_CONFIG`` directory (no credentials yet)."""
    path = tmp_path / "docker-config"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    monkeypatch.delenv("DOCKYARD_AUTH_CONFIG", raising=False)
    return path


def store_blobs(root: Path) -> set[str]:
    """The blob digests visible in a store."""
    blob_dir = root / "blobs" / "sha256"
    return {"sha256:" + p.name for p in blob_dir.iterdir()} if blob_dir.is_dir() else set()


def store_tmp(root: Path) -> list[str]:
    """Leftover temp files of a store."""
    tmp = root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []
