"""A loopback HTTP proxy in front of a registry: counts what passes and injects faults.

``RegistryProxy(upstream)`` listens on a free loopback port and forwards every request to
``upstream`` (``127.0.0.1:PORT``), the Host header unchanged so the registry's upload
``Location`` URLs point back at the proxy. It records each request (method, path, status,
response body bytes) so a test can count the layer bytes downloaded.

Faults are a schedule per request kind: ``proxy.faults["blob-get"] = ["drop", "500"]`` makes
the first GET of *each* blob be dropped and the second answered 500, the third passes.
Kinds: ``ping``, ``manifest-get``, ``manifest-put``, ``blob-get``, ``blob-head``,
``upload-start``, ``upload`` (PUT/PATCH of data). Faults: ``drop`` (close the connection
without a reply, the request read), ``reset`` (close before reading the request), ``500``,
``503``, ``429`` (with Retry-After: 0), ``truncate`` (the full Content-Length announced, half
the body sent), ``corrupt`` (one byte of the body flipped: a wrong digest), ``corrupt-body``
(one byte of the *request's* body flipped on its way to the registry). A schedule
``["500"] * 100`` is a fault that never heals (the client must give up with a clear error).
``proxy.only = {digest, ...}`` limits the faults to requests naming one of those digests.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    status: int
    body_bytes: int
    fault: str | None = None


def kind_of(method: str, path: str) -> str:
    path = path.split("?", 1)[0]
    if path in ("/v2/", "/v2"):
        return "ping"
    if "/manifests/" in path:
        return "manifest-get" if method in ("GET", "HEAD") else "manifest-put"
    if "/blobs/uploads" in path:
        return "upload-start" if method == "POST" else "upload"
    if "/blobs/" in path:
        return "blob-head" if method == "HEAD" else "blob-get"
    return "other"


@dataclass
class RegistryProxy:
    upstream: str
    faults: dict[str, list[str]] = field(default_factory=dict)
    only: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    _counts: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self._counts.clear()
            self.faults.clear()
            self.only.clear()

    def fault_for(self, method: str, path: str) -> str | None:
        kind = kind_of(method, path)
        schedule = self.faults.get(kind)
        if not schedule or (self.only and not any(d in path for d in self.only)):
            return None
        key = (kind, path.split("?", 1)[0] if kind != "upload" else kind)
        with self._lock:
            n = self._counts.get(key, 0)
            self._counts[key] = n + 1
        return schedule[n] if n < len(schedule) else None

    def blob_downloads(self) -> dict[str, int]:
        """Body bytes of successful blob GETs, by digest."""
        out: dict[str, int] = {}
        with self._lock:
            for s in self.seen:
                if s.method == "GET" and kind_of(s.method, s.path) == "blob-get" \
                        and s.status == 200:
                    digest = s.path.split("?", 1)[0].rsplit("/", 1)[-1]
                    out[digest] = out.get(digest, 0) + s.body_bytes
        return out

    def start(self) -> RegistryProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(parts)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _kill(self) -> None:
                self.close_connection = True
                with suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _error(self, status: int) -> None:
                body = b'{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                fault = proxy.fault_for(self.command, self.path)
                if fault == "reset":
                    self._kill()
                    self._record(0, 0, fault)
                    return
                body = self._body()
                if fault == "corrupt-body" and body:
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                if fault == "drop":
                    self._kill()
                    self._record(0, 0, fault)
                    return
                if fault in ("500", "503", "429"):
                    self._error(int(fault))
                    self._record(int(fault), 0, fault)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "connection",
                                                "content-length")}
                if body or self.command in ("PUT", "PATCH", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault == "corrupt" and data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                self.send_response(resp.status)
                length = resp.getheader("Content-Length")
                for key, value in resp.getheaders():
                    if key.lower() in ("transfer-encoding", "connection", "content-length"):
                        continue
                    self.send_header(key, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    self._record(resp.status, 0, fault)
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "truncate" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self._kill()
                    self._record(resp.status, len(data) // 2, fault)
                    return
                self.wfile.write(data)
                self._record(resp.status, len(data), fault)

            def _record(self, status: int, size: int, fault: str | None) -> None:
                with proxy._lock:
                    proxy.seen.append(Seen(self.command, self.path, status, size, fault))

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@contextmanager
def proxy_for(upstream: str) -> Iterator[RegistryProxy]:
    proxy = RegistryProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
