"""Issue 12: ``ADD <url>`` follows the server, as BuildKit's http source does. Every build
asks the server again, conditionally (If-None-Match with the ETag it gave, If-Modified-Since
with its Last-Modified); the step's key holds what the URL gave (file name, sha256,
Last-Modified), and the step copies the very bytes its key was made of. A server started by
the test changes its content between builds; each image is compared with a --no-cache build
in a fresh store."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_build_support import BASE, build, flatten, fresh_store, needs_runtime, write_tree

from dockyard.cli.main import main

pytestmark = needs_runtime


class _Server:
    """Serves ``/file`` from ``content``; ETag and Last-Modified as configured; records the
    conditional headers it was sent and how it answered."""

    def __init__(self) -> None:
        self.content = b"one\n"
        self.mtime = 1_700_000_000
        self.use_etag = True
        self.honour_conditions = True
        self.log: list[tuple[str, str, int]] = []  # (If-None-Match, If-Modified-Since, status)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                etag = '"' + hashlib.sha256(server.content).hexdigest()[:16] + '"'
                modified = formatdate(server.mtime, usegmt=True)
                inm = self.headers.get("If-None-Match", "")
                ims = self.headers.get("If-Modified-Since", "")
                fresh = server.honour_conditions and (
                    (server.use_etag and inm == etag)
                    or (not server.use_etag and ims == modified)
                )
                status = 304 if fresh else 200
                server.log.append((inm, ims, status))
                self.send_response(status)
                if server.use_etag:
                    self.send_header("ETag", etag)
                self.send_header("Last-Modified", modified)
                if status == 200:
                    self.send_header("Content-Length", str(len(server.content)))
                self.end_headers()
                if status == 200:
                    self.wfile.write(server.content)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()


def _built(ctx: Path, root: Path, tmp: Path, tag: str, **kwargs: object) -> tuple[bool, str]:
    done = build(ctx, root, tags=[tag], **kwargs)  # type: ignore[arg-type]
    fs = flatten(root, tag, tmp / f"fs-{tag}")
    return done.step(2).cached, (fs / "file").read_text()


def _reference(ctx: Path, tmp: Path, tag: str) -> tuple[str, int, str | None]:
    """The file as a --no-cache build in a fresh store gives it: content, mode, step key."""
    root = fresh_store(tmp / f"fresh-{tag}")
    done = build(ctx, root, tags=[tag], no_cache=True)
    st = os.stat(flatten(root, tag, tmp / f"ref-{tag}") / "file")
    return (tmp / f"ref-{tag}" / "file").read_text(), int(st.st_mtime), done.step(2).key


def test_add_of_a_url_follows_the_server(server: _Server, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {BASE}\nADD {server.url} /file\n"})
    root = fresh_store(tmp_path / "store")
    assert _built(ctx, root, tmp_path, "a") == (False, "one\n")
    # unchanged: asked with its ETag, answered 304, cached
    assert _built(ctx, root, tmp_path, "b") == (True, "one\n")
    assert server.log[-1][2] == 304 and server.log[-1][0]
    # the server's content changes: a miss, the new bytes, as a fresh build gives them
    server.content = b"two\n"
    server.mtime += 60
    first = build(ctx, root, tags=["c"])
    assert not first.step(2).cached
    assert "http" in (first.step(2).reason or "")
    fs = flatten(root, "c", tmp_path / "fs-c")
    assert (fs / "file").read_text() == "two\n"
    content, mtime, key = _reference(ctx, tmp_path, "c")
    assert (content, mtime, key) == ("two\n", int(os.stat(fs / "file").st_mtime),
                                     first.step(2).key)
    # back to the first content: its earlier result is reused, and it is the right one
    server.content = b"one\n"
    server.mtime -= 60
    assert _built(ctx, root, tmp_path, "d") == (True, "one\n")


def test_a_server_without_etag_or_conditions(server: _Server, tmp_path: Path) -> None:
    server.use_etag = False  # Last-Modified only: If-Modified-Since
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {BASE}\nADD {server.url} /file\n"})
    root = fresh_store(tmp_path / "store")
    assert _built(ctx, root, tmp_path, "a") == (False, "one\n")
    assert _built(ctx, root, tmp_path, "b") == (True, "one\n")
    assert server.log[-1][1] and server.log[-1][2] == 304
    # a server that ignores conditions: the bytes are fetched and hashed; same bytes hit
    server.honour_conditions = False
    assert _built(ctx, root, tmp_path, "c") == (True, "one\n")
    server.content = b"six\n"  # same size, same Last-Modified: only the digest tells
    assert _built(ctx, root, tmp_path, "d") == (False, "six\n")
    assert _reference(ctx, tmp_path, "d")[0] == "six\n"


def test_the_up_to_date_check_never_answers_an_add_of_a_url(
    server: _Server, tmp_path: Path
) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {BASE}\nADD {server.url} /file\n"})
    root = fresh_store(tmp_path / "store")
    argv = ["--root", str(root), "build", "--progress", "plain", "-t", "img", str(ctx)]
    for content in (b"one\n", b"two\n"):
        server.content = content
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            assert main(argv) == 0
        fs = flatten(root, "img", tmp_path / f"fs-{content[:3].decode()}")
        assert (fs / "file").read_bytes() == content
    assert len(server.log) == 2  # each build asked the server
