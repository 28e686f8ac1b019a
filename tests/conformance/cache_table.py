"""The cache hit/miss table against BuildKit (issue 12): kinds of change, each built with
dockerd's BuildKit and with dockyard.

For every change and every builder: build, apply the change, build again (the steps that hit
are read off ``--progress plain``: ``#N CACHED``), export, and build the changed inputs once
more with ``--no-cache`` from a copy of the context (a new path: BuildKit syncs it afresh, a
stat cache knows none of its inodes). A builder is *stale* when its cached result differs
from that fresh result (compare.py, times aside). The rules (:func:`verdict`):

* dockyard is never stale;
* where BuildKit hit a step and is not stale, dockyard hits that step too;
* where BuildKit is stale, dockyard misses a step BuildKit hit (the one that went stale).

Each builder works on its own copy of the context. Everything in a context has the mtime
``T0`` and changes put it back, unless the change is about times.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for soundness.tree

import compare
import harness

from soundness import tree

TAG_PREFIX = "cachetable"
# name -> Dockerfile of the images the cases re-tag (built once per builder)
BASES = {
    "base-1": "FROM busybox:latest\nRUN echo one > /etc/variant\n",
    "base-2": "FROM busybox:latest\nRUN echo two > /etc/variant\n",
    "base-1b": f"FROM {TAG_PREFIX}/base-1\nLABEL flavour=b\n",
}
INITIAL_TAGS = {f"{TAG_PREFIX}/base:latest": "base-1", f"{TAG_PREFIX}/img:latest": "base-1"}


class Served(http.server.BaseHTTPRequestHandler):
    """What ``ADD http://...`` cases fetch: ETag and Last-Modified follow the content."""

    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def _answer(self, body: bool) -> None:
        data = self.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        digest = hashlib.sha256(data).hexdigest()
        etag = f'"{digest[:16]}"'
        modified = f"Mon, 0{1 + int(digest[0], 16) % 9} Jan 2024 00:00:00 GMT"
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", modified)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


_server: http.server.ThreadingHTTPServer | None = None


def url_base() -> str:
    global _server
    if _server is None:
        _server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Served)
        threading.Thread(target=_server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{_server.server_address[1]}"


# ----------------------------------------------------------------------------- changes


@dataclass
class Ctx:
    """What a change may do: edit the context, the build args, re-tag an image."""

    path: Path
    args: dict[str, str]
    retag: Callable[[str, str], None]
    extra_flags: list[str] = field(default_factory=list)

    def write(self, rel: str, content: str | bytes, mode: int = 0o644) -> None:
        """An ordinary edit: the file gets the time of now."""
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink():
            p.unlink()
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        os.chmod(p, mode)

    def edit_same_size(self, rel: str, content: str) -> None:
        tree.overwrite_in_place(self.path, rel, content)

    def chmod(self, rel: str, mode: int) -> None:
        os.chmod(self.path / rel if rel else self.path, mode)

    def chown(self, rel: str, uid: int, gid: int) -> None:
        os.lchown(self.path / rel, uid, gid)

    def symlink(self, rel: str, target: str) -> None:
        tree.symlink(self.path, rel, target)

    def remove(self, rel: str) -> None:
        p = self.path / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
        tree.retime(self.path, str(Path(rel).parent))

    def touch(self, rel: str) -> None:
        os.utime(self.path / rel, ns=(tree.T0_NS + 10**12, tree.T0_NS + 10**12),
                 follow_symlinks=False)


@dataclass(frozen=True)
class Change:
    """One kind of change: the project before, and what changes."""

    name: str
    what: str
    dockerfile: str
    files: Mapping[str, str | bytes]
    change: Callable[[Ctx], None]
    setup: Callable[[Ctx], None] | None = None
    args: Mapping[str, str] = field(default_factory=dict)
    url_files: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # before, after
    # where dockyard's output differs from BuildKit's by design (docs/compat.md): a miss is
    # judged against dockyard's own output (needed when its image changed), not BuildKit's
    deviation: str = ""


def _df(*lines: str) -> str:
    return "".join(f"{line}\n" for line in ("FROM busybox:latest", *lines))


def _copy_df(*lines: str) -> str:
    return _df("COPY . /app/", *lines)


BASIC = {"a.txt": "alpha\n", "b.txt": "bravo\n", "sub/c.txt": "charlie\n"}


def _edit(rel: str, content: str) -> Callable[[Ctx], None]:
    return lambda c: c.write(rel, content)


def _hardlinked(c: Ctx) -> None:
    os.unlink(c.path / "b.txt")
    os.link(c.path / "a.txt", c.path / "b.txt")


def _split_hardlink(c: Ctx) -> None:
    data = (c.path / "b.txt").read_bytes()
    os.unlink(c.path / "b.txt")
    c.write("b.txt", data)


def _set_xattr(c: Ctx) -> None:
    os.setxattr(c.path / "a.txt", "user.table", b"1")


def _set_capability(c: Ctx) -> None:
    os.setxattr(c.path / "a.txt", "security.capability",  # cap_net_raw+ep, as setcap writes
                bytes.fromhex("0100000200200000000000000000000000000000"))


def _set_overlay_xattr(c: Ctx) -> None:
    os.setxattr(c.path / "a.txt", "trusted.overlay.table", b"1")


KEPT_XATTRS = ("dockyard keeps the context's user.*, trusted.* and security.capability "
               "xattrs; BuildKit 20.10 drops them (moby/buildkit#2250), docs/compat.md")


def _retag(tag: str, to: str) -> Callable[[Ctx], None]:
    return lambda c: c.retag(to, f"{TAG_PREFIX}/{tag}")


def _arg(name: str, value: str) -> Callable[[Ctx], None]:
    return lambda c: c.args.__setitem__(name, value)


def _flag(*flags: str) -> Callable[[Ctx], None]:
    return lambda c: c.extra_flags.extend(flags)


CHANGES: tuple[Change, ...] = (
    # --- context content
    Change("content", "a copied file's content (other size)", _copy_df(), BASIC,
           _edit("a.txt", "alpha, longer\n")),
    Change("content-same-size-mtime", "same-size edit, mtime set back", _copy_df(), BASIC,
           lambda c: c.edit_same_size("a.txt", "ALPHA\n")),
    Change("touch", "mtime only", _copy_df(), BASIC, lambda c: c.touch("a.txt")),
    Change("edit-revert", "edited and set back before the build", _copy_df(), BASIC,
           lambda c: (c.write("a.txt", "other\n"), c.write("a.txt", "alpha\n"))),
    Change("content-not-copied", "a file no COPY names", _df("COPY a.txt /a.txt"), BASIC,
           _edit("b.txt", "bravo, longer\n")),
    Change("content-under-run", "a copied file, with a RUN after the COPY",
           _copy_df("RUN cat /app/a.txt > /seen"), BASIC, _edit("a.txt", "alpha 2\n")),
    Change("content-then-unrelated-run", "a file copied late, RUN before the COPY",
           _df("RUN echo early > /early", "COPY a.txt /a.txt"), BASIC,
           _edit("a.txt", "alpha 2\n")),
    # --- metadata
    Change("mode-file", "chmod +x of a copied file", _copy_df(), BASIC,
           lambda c: c.chmod("a.txt", 0o755)),
    Change("mode-dir", "chmod of a copied directory", _copy_df(), BASIC,
           lambda c: c.chmod("sub", 0o700)),
    Change("mode-root", "chmod of the context root (COPY . /app/)", _copy_df(), BASIC,
           lambda c: c.chmod("", 0o700)),
    Change("owner", "chown of a copied file (the copy is 0:0 either way)", _copy_df(), BASIC,
           lambda c: c.chown("a.txt", 1000, 1000)),
    Change("xattr", "a user xattr set on a copied file", _copy_df(), BASIC, _set_xattr,
           deviation=KEPT_XATTRS),
    Change("xattr-capability", "file capabilities set on a copied file (setcap)", _copy_df(),
           BASIC, _set_capability, deviation=KEPT_XATTRS),
    Change("xattr-overlay", "an xattr no layer keeps (trusted.overlay.*) on a copied file",
           _copy_df(), BASIC, _set_overlay_xattr),
    # --- tree shape
    Change("add-file", "a file added to a copied directory", _copy_df(), BASIC,
           _edit("sub/new.txt", "new\n")),
    Change("remove-file", "a copied file removed", _copy_df(), BASIC,
           lambda c: c.remove("sub/c.txt")),
    Change("rename", "a copied file renamed (same content)", _copy_df(), BASIC,
           lambda c: (c.remove("b.txt"), c.write("b2.txt", "bravo\n"))),
    Change("empty-dir", "an empty directory added", _copy_df(), BASIC,
           lambda c: tree.mkdir(c.path, "emptydir")),
    Change("wildcard-match", "a file added that COPY *.txt matches", _df("COPY *.txt /d/"),
           BASIC, _edit("new.txt", "new\n")),
    Change("wildcard-nomatch", "a file added that COPY *.txt does not match",
           _df("COPY *.txt /d/"), BASIC, _edit("new.md", "new\n")),
    # --- links
    Change("file-to-symlink", "a copied file replaced by a symlink", _copy_df(), BASIC,
           lambda c: (c.remove("b.txt"), c.symlink("b.txt", "a.txt"))),
    Change("symlink-repoint", "a copied symlink re-pointed", _copy_df(), BASIC,
           lambda c: c.symlink("link", "b.txt"), setup=lambda c: c.symlink("link", "a.txt")),
    Change("symlink-followed-target", "the target of a COPY source symlink edited",
           _df("COPY link /followed"), BASIC, _edit("a.txt", "alpha 2\n"),
           setup=lambda c: c.symlink("link", "a.txt")),
    # (contents of their own: one row's states are not the other's, which one store would
    # then answer from the cache, rightly)
    Change("hardlink-join", "two same-content files made one hardlinked pair", _copy_df(),
           {"a.txt": "join\n", "b.txt": "join\n"}, _hardlinked),
    Change("hardlink-split", "a hardlinked pair split (same content)", _copy_df(),
           {"a.txt": "split\n", "b.txt": "split\n"}, _split_hardlink, setup=_hardlinked),
    # --- .dockerignore
    Change("ignore-copied-file", ".dockerignore now excludes a copied file", _copy_df(),
           {**BASIC, ".dockerignore": ".dockerignore\n"},
           _edit(".dockerignore", ".dockerignore\nb.txt\n")),
    Change("ignore-uncopied-file", ".dockerignore excludes a file COPY does not name",
           _df("COPY a.txt /a.txt"), {**BASIC, ".dockerignore": ".dockerignore\n"},
           _edit(".dockerignore", ".dockerignore\nb.txt\n")),
    Change("ignore-comment", "a comment added to .dockerignore (which excludes itself)",
           _copy_df(), {**BASIC, ".dockerignore": ".dockerignore\n"},
           _edit(".dockerignore", ".dockerignore\n# a comment\n")),
    Change("ignore-exception", "a ! exception re-includes a file", _copy_df(),
           {**BASIC, ".dockerignore": ".dockerignore\n*.txt\n"},
           _edit(".dockerignore", ".dockerignore\n*.txt\n!b.txt\n")),
    Change("ignored-file-edit", "an ignored file edited", _copy_df(),
           {**BASIC, "x.log": "log\n", ".dockerignore": ".dockerignore\n*.log\n"},
           _edit("x.log", "log, longer\n")),
    # --- the Dockerfile
    Change("dockerfile-later-line", "a later RUN changed",
           _copy_df("RUN echo one > /x"), BASIC,
           _edit("Dockerfile", _copy_df("RUN echo two > /x"))),
    Change("dockerfile-comment", "a comment added to the Dockerfile", _df("COPY a.txt /a"),
           BASIC, _edit("Dockerfile", "# hello\n" + _df("COPY a.txt /a"))),
    Change("dockerfile-insert-first", "a step inserted before the COPY", _copy_df(), BASIC,
           _edit("Dockerfile", _df("RUN echo inserted > /i", "COPY . /app/"))),
    Change("env-before-run", "an ENV value before a RUN", _df("ENV V=1", "RUN echo hi > /x"),
           BASIC, _edit("Dockerfile", _df("ENV V=2", "RUN echo hi > /x"))),
    Change("env-before-copy", "an ENV value before a COPY", _df("ENV V=1", "COPY a.txt /a"),
           BASIC, _edit("Dockerfile", _df("ENV V=2", "COPY a.txt /a"))),
    Change("label", "a LABEL value", _df("COPY a.txt /a", "LABEL v=1"), BASIC,
           _edit("Dockerfile", _df("COPY a.txt /a", "LABEL v=2"))),
    Change("cmd", "the CMD", _df("COPY a.txt /a", "CMD [\"one\"]"), BASIC,
           _edit("Dockerfile", _df("COPY a.txt /a", "CMD [\"two\"]"))),
    Change("user-before-run", "the USER of a RUN",
           _df("USER nobody", "RUN id -u > /tmp/x; echo ok"), BASIC,
           _edit("Dockerfile", _df("USER root", "RUN id -u > /tmp/x; echo ok"))),
    Change("workdir-before-run", "the WORKDIR of a RUN", _df("WORKDIR /w1", "RUN pwd > /p"),
           BASIC, _edit("Dockerfile", _df("WORKDIR /w2", "RUN pwd > /p"))),
    Change("copy-chmod-flag", "COPY --chmod value", _df("COPY --chmod=644 a.txt /a"), BASIC,
           _edit("Dockerfile", _df("COPY --chmod=755 a.txt /a"))),
    Change("copy-chown-flag", "COPY --chown value", _df("COPY --chown=1:1 a.txt /a"), BASIC,
           _edit("Dockerfile", _df("COPY --chown=2:2 a.txt /a"))),
    Change("shell-before-run", "the SHELL of a RUN",
           _df("SHELL [\"/bin/sh\", \"-c\"]", "RUN echo $0 > /shell"), BASIC,
           _edit("Dockerfile", _df("SHELL [\"/bin/ash\", \"-c\"]", "RUN echo $0 > /shell"))),
    Change("run-mount-added", "a tmpfs mount added to a RUN", _df("RUN echo hi > /x"), BASIC,
           _edit("Dockerfile", _df("RUN --mount=type=tmpfs,target=/t echo hi > /x"))),
    # --- build args and options
    Change("arg-used", "a build arg the RUN spells as $V", _df("ARG V=1", "RUN echo $V > /v"),
           BASIC, _arg("V", "2")),
    Change("arg-unused", "a declared build arg the RUN does not read",
           _df("ARG V=1", "RUN echo hi > /v"), BASIC, _arg("V", "2")),
    Change("arg-script", "a build arg only a script reads",
           _df("ARG V=1", "COPY s.sh /s.sh", "RUN sh /s.sh > /v"),
           {"s.sh": "echo \"v=$V\"\n"}, _arg("V", "2")),
    Change("arg-undeclared", "a --build-arg no ARG declares", _df("RUN echo hi > /v"), BASIC,
           _arg("NOT_DECLARED", "2")),
    Change("arg-proxy", "the predefined HTTP_PROXY arg, which the RUN writes out",
           _df("RUN echo \"$HTTP_PROXY\" > /proxy"), BASIC,
           _arg("HTTP_PROXY", "http://proxy.invalid:2"),
           args={"HTTP_PROXY": "http://proxy.invalid:1"}),
    Change("network-flag", "the build's --network (none), RUN lists interfaces",
           _df("RUN ls /sys/class/net > /ifaces"), BASIC, _flag("--network", "none")),
    # --- images and stages
    Change("base-retag", "FROM's tag moved to another image",
           f"FROM {TAG_PREFIX}/base:latest\nRUN cat /etc/variant > /v\n", BASIC,
           _retag("base:latest", "base-2")),
    Change("base-retag-same-layers", "FROM's tag moved to an image with the same layers",
           f"FROM {TAG_PREFIX}/base:latest\nRUN cat /etc/variant > /v\n", BASIC,
           _retag("base:latest", "base-1b")),
    Change("copy-from-image-retag", "COPY --from=IMAGE, the tag moved",
           _df(f"COPY --from={TAG_PREFIX}/img:latest /etc/variant /v"), BASIC,
           _retag("img:latest", "base-2")),
    Change("copy-from-stage-same-output", "a stage rebuilt with the same output",
           "FROM busybox:latest AS s\nCOPY a.txt /a\nRUN echo fixed > /out\n"
           "FROM busybox:latest\nCOPY --from=s /out /out\n", BASIC,
           _edit("a.txt", "alpha, longer\n")),
    Change("copy-from-stage-changed", "a stage's output changed",
           "FROM busybox:latest AS s\nCOPY a.txt /a\nRUN cat /a > /out\n"
           "FROM busybox:latest\nCOPY --from=s /out /out\n", BASIC,
           _edit("a.txt", "alpha, longer\n")),
    Change("bind-mount-edit", "a file a RUN bind-mounts from the context",
           _df("RUN --mount=type=bind,target=/src cat /src/a.txt > /seen"), BASIC,
           _edit("a.txt", "alpha, longer\n")),
    Change("bind-mount-other", "a context file the bind mount's source does not cover",
           _df("RUN --mount=type=bind,source=sub,target=/src cat /src/c.txt > /seen"), BASIC,
           _edit("a.txt", "alpha, longer\n")),
    Change("bind-mount-ignored", "an ignored file in a bind-mounted context",
           _df("RUN --mount=type=bind,target=/src sh -c 'cat /src/x.log || echo none' > /seen"),
           {**BASIC, "x.log": "log\n", ".dockerignore": "*.log\n"},
           _edit("x.log", "log, longer\n")),
    Change("bind-from-image-retag", "RUN --mount=type=bind,from=IMAGE, the tag moved",
           _df(f"RUN --mount=type=bind,from={TAG_PREFIX}/img:latest,target=/i "
               "cat /i/etc/variant > /v"), BASIC, _retag("img:latest", "base-2")),
    Change("cache-mount-rebuild", "nothing (a RUN with a cache mount that changes)",
           _df("RUN --mount=type=cache,target=/c sh -c 'date >> /c/log; echo ok > /ok'"),
           BASIC, lambda c: None),
    # --- archives and URLs
    Change("add-archive-content", "a member of an ADD'ed tar archive",
           _df("ADD t.tar /t/"), {"t.tar": tree.tar_bytes([("m.txt", "one\n", 0o644)])},
           lambda c: c.edit_same_size("t.tar", tree.tar_bytes([("m.txt", "two\n", 0o644)]))),
    Change("add-archive-touch", "an ADD'ed tar archive touched", _df("ADD t.tar /t/"),
           {"t.tar": tree.tar_bytes([("m.txt", "one\n", 0o644)])}, lambda c: c.touch("t.tar")),
    Change("add-url-content", "what an ADD'ed URL serves",
           "FROM busybox:latest\nARG URL\nADD ${URL}/f.txt /f.txt\n", BASIC, lambda c: None,
           url_files={"f.txt": ("one\n", "two\n")}),
)

# The umask of the caller: BuildKit does not see it (the daemon makes the directories).
UMASK_CHANGE = Change("umask", "the caller's umask (077), with a WORKDIR to create",
                      _df("WORKDIR /made/here", "RUN echo hi > x"), BASIC, lambda c: None)
CHANGES = (*CHANGES, UMASK_CHANGE)
BY_NAME = {c.name: c for c in CHANGES}


# ----------------------------------------------------------------------------- running

_STEP = re.compile(r"^#(\d+) \[([^\]]+)\] (.*)$")
_CACHED = re.compile(r"^#(\d+) CACHED\s*$")
_SPACES = re.compile(r"\s+")


def steps_of(log: str) -> dict[str, bool]:
    """``{"[stage] TEXT": cached}`` for every RUN/COPY/ADD/WORKDIR step in a plain log
    (BuildKit's or dockyard's: the same format). Unnamed stages are written alike."""
    names: dict[str, str] = {}
    seen: dict[str, int] = {}
    cached: set[str] = set()
    for line in log.splitlines():
        m = _STEP.match(line)
        if m and m.group(1) in names:
            continue  # a vertex's header is repeated when its output resumes
        if m:
            label, text = m.group(2), _SPACES.sub(" ", m.group(3)).strip()
            if label.startswith("internal") or text.startswith(("FROM", "[internal]")):
                continue
            if text.split(" ", 1)[0] not in ("RUN", "COPY", "ADD", "WORKDIR"):
                continue
            # keyed by stage name and text (the i/n counts differ between the builders)
            parts = label.split()
            stage = parts[0] if len(parts) > 1 and not parts[0].startswith("stage-") else ""
            key = f"[{stage}] {text[:60]}" if stage else text[:60]
            seen[key] = seen.get(key, 0) + 1
            names[m.group(1)] = key if seen[key] == 1 else f"{key} #{seen[key]}"
            continue
        m = _CACHED.match(line)
        if m:
            cached.add(m.group(1))
    return {name: vid in cached for vid, name in names.items()}


@dataclass
class Side:
    """One builder's run of a change."""

    steps: dict[str, bool] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)  # differences from its --no-cache build
    error: str | None = None
    # a deviation row's: how the image after the change differs from the one before
    changed: list[str] = field(default_factory=list)

    def hits(self) -> str:
        return " ".join("H" if c else "m" for c in self.steps.values()) or "-"


@dataclass
class Row:
    change: Change
    buildkit: Side
    dockyard: Side
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.change.name, "what": self.change.what,
                "buildkit": self.buildkit.hits(), "buildkit_stale": bool(self.buildkit.stale),
                "dockyard": self.dockyard.hits(), "dockyard_stale": bool(self.dockyard.stale),
                "problems": self.problems}

    def line(self) -> str:
        bk = "STALE" if self.buildkit.stale else "fresh"
        dy = "STALE" if self.dockyard.stale else "fresh"
        return (f"{self.change.name}: BuildKit {self.buildkit.hits()} ({bk}), dockyard "
                f"{self.dockyard.hits()} ({dy})" + (" -- " + "; ".join(self.problems)
                                                   if self.problems else ""))


class Runner:
    """Runs changes in one conformance environment (its dockerd and dockyard store)."""

    def __init__(self, env: harness.Environment) -> None:
        self.env = env
        self.out = env.session_dir / "cache-table"
        self.out.mkdir(exist_ok=True)
        self.dockyard = env.candidate
        if not isinstance(self.dockyard, harness.DockyardBuilder):
            raise harness.HarnessError("the cache table needs CONFORMANCE_CANDIDATE=dockyard")
        self._bases_made = False

    # -- the two builders, with the same verbs
    def _docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.env.daemon.docker(*args, check=check)

    def _dockyard(self, *args: str, check: bool = True, umask: int | None = None
                  ) -> subprocess.CompletedProcess[str]:
        cmd = [*self.dockyard.cli, "--root", str(self.dockyard.root), *args]
        old = os.umask(umask) if umask is not None else None
        try:
            return harness.run(cmd, check=check)
        finally:
            if old is not None:
                os.umask(old)

    def _bases(self) -> None:
        if self._bases_made:
            return
        # BuildKit's cache outlives the session (a kept data-root); dockyard's store is new.
        # Both start from nothing, so an earlier run's --no-cache builds cannot answer.
        self._docker("builder", "prune", "-af")
        ctx = self.out / "bases-ctx"
        ctx.mkdir(exist_ok=True)
        for name, text in BASES.items():
            (ctx / "Dockerfile").write_text(text)
            tag = f"{TAG_PREFIX}/{name}"
            self._docker("build", "--network", "host", "-q", "-t", tag, str(ctx))
            self._dockyard("build", "-q", "-t", tag, str(ctx))
        self._bases_made = True

    def _retag(self, builder: str) -> Callable[[str, str], None]:
        def retag(variant: str, tag: str) -> None:
            src = f"{TAG_PREFIX}/{variant}"
            if builder == "buildkit":
                self._docker("tag", src, tag)
            else:
                self._dockyard("tag", src, tag)
        return retag

    def _build(self, builder: str, ctx: Ctx, tag: str, no_cache: bool, umask: int | None
               ) -> tuple[int, str]:
        flags = ["--no-cache"] if no_cache else []
        for k, v in sorted(ctx.args.items()):
            flags += ["--build-arg", f"{k}={v}"]
        flags += ctx.extra_flags
        if builder == "buildkit":
            if "--network" not in flags:
                flags += ["--network", "host"]
            proc = self._docker("build", "--progress", "plain", *flags, "-t", tag,
                                str(ctx.path), check=False)
        else:
            proc = self._dockyard("build", "--progress", "plain", *flags, "-t", tag,
                                  str(ctx.path), check=False, umask=umask)
        return proc.returncode, proc.stdout

    def _export(self, builder: str, tag: str, out: Path) -> compare.ImageSnapshot:
        if builder == "buildkit":
            self._docker("save", "-o", str(out), tag)
        else:
            self._dockyard("save", "-o", str(out), tag)
        return compare.load_image_archive(out, ref=tag)

    def run(self, change: Change) -> Row:
        """Both builders through the change; the verdict."""
        self._bases()
        sides = {b: self._side(b, change) for b in ("buildkit", "dockyard")}
        row = Row(change, sides["buildkit"], sides["dockyard"], [])
        row.problems = verdict(row.buildkit, row.dockyard, deviation=bool(change.deviation))
        (self.out / f"{change.name}.json").write_text(json.dumps(row.to_dict(), indent=1))
        return row

    def _side(self, builder: str, change: Change) -> Side:
        work = self.out / change.name / builder
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        path = work / "ctx"
        path.mkdir()
        ctx = Ctx(path, dict(change.args), self._retag(builder))
        for tag, variant in INITIAL_TAGS.items():
            ctx.retag(variant, tag)
        tree.write(path, "Dockerfile", change.dockerfile)
        for rel, content in change.files.items():
            tree.write(path, rel, content)
        if change.setup:
            change.setup(ctx)
        tree.retime(path, *[str(p.relative_to(path)) for p in path.rglob("*")])
        if change.url_files:
            ctx.args["URL"] = url_base() + f"/{builder}-{change.name}"
            Served.files.update({f"{builder}-{change.name}/{n}": before.encode()
                                 for n, (before, _after) in change.url_files.items()})
        tag = f"{TAG_PREFIX}/{change.name}:latest"
        side = Side()
        code, log = self._build(builder, ctx, tag, False, None)
        if code != 0:
            side.error = "first build failed: " + harness._tail(log, 8)
            return side
        if change.deviation:
            before = self._export(builder, tag, work / "before.tar")
        change.change(ctx)
        for n, (_before, after) in change.url_files.items():
            Served.files[f"{builder}-{change.name}/{n}"] = after.encode()
        umask = 0o077 if change is UMASK_CHANGE else None
        code, log = self._build(builder, ctx, tag, False, umask)
        (work / "after.log").write_text(log)
        if code != 0:
            side.error = "build after the change failed: " + harness._tail(log, 8)
            return side
        side.steps = steps_of(log)
        got = self._export(builder, tag, work / "after.tar")
        # the reference: --no-cache on a copy of the context (new path, new inodes), so no
        # state kept about the context (BuildKit's synced copy, a stat cache) is reused
        fresh_path = work / "fresh-ctx"
        subprocess.run(["cp", "-a", str(path), str(fresh_path)], check=True)
        fresh_ctx = Ctx(fresh_path, ctx.args, ctx.retag, ctx.extra_flags)
        fresh_tag = f"{TAG_PREFIX}/{change.name}-fresh:latest"
        code, log = self._build(builder, fresh_ctx, fresh_tag, True, umask)
        if code != 0:
            side.error = "--no-cache build failed: " + harness._tail(log, 8)
            return side
        fresh = self._export(builder, fresh_tag, work / "fresh.tar")
        side.stale = [str(d) for d in compare.compare_snapshots(fresh, got)]
        side.stale += xattr_differences(work / "fresh.tar", work / "after.tar")
        if change.deviation:
            side.changed = [str(d) for d in compare.compare_snapshots(before, got)]
            side.changed += xattr_differences(work / "before.tar", work / "after.tar")
        return side


def xattrs_of(archive: Path) -> dict[str, dict[str, str]]:
    """Path -> xattrs (PAX ``SCHILY.xattr.*``) of the image's final filesystem; compare.py
    does not look at xattrs."""
    out: dict[str, dict[str, str]] = {}
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(name), mode="r|*") as layer:
                for m in layer:
                    path = "/" + m.name.lstrip("./").rstrip("/")
                    base = path.rsplit("/", 1)[-1]
                    if base == ".wh..wh..opq":
                        parent = path.rsplit("/", 1)[0]
                        out = {p: x for p, x in out.items() if not p.startswith(parent + "/")}
                    elif base.startswith(".wh."):
                        gone = path.rsplit("/", 1)[0] + "/" + base[4:]
                        out = {p: x for p, x in out.items()
                               if p != gone and not p.startswith(gone + "/")}
                    else:
                        out[path] = {k[len("SCHILY.xattr."):]: v
                                     for k, v in m.pax_headers.items()
                                     if k.startswith("SCHILY.xattr.")}
    return {p: x for p, x in out.items() if x}


def xattr_differences(fresh: Path, got: Path) -> list[str]:
    a, b = xattrs_of(fresh), xattrs_of(got)
    return [f"xattrs {p}: fresh={a.get(p)} cached={b.get(p)}"
            for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)]


def verdict(buildkit: Side, dockyard: Side, *, deviation: bool = False) -> list[str]:
    """What breaks the rules (module docstring); empty when the row is right. For a
    ``deviation`` row (dockyard's output differs from BuildKit's by design) a dockyard miss
    is needless only when dockyard's own image did not change."""
    problems: list[str] = []
    for side, name in ((buildkit, "BuildKit"), (dockyard, "dockyard")):
        if side.error:
            problems.append(f"{name}: {side.error}")
    if problems:
        return problems
    if dockyard.stale:
        problems.append("dockyard is stale: " + "; ".join(dockyard.stale[:4]))
    common = [s for s in buildkit.steps if s in dockyard.steps]
    if deviation:
        if not dockyard.changed and not all(dockyard.steps.values()):
            problems.append("dockyard misses although its own image did not change")
    elif not buildkit.stale:
        needless = [s for s in common if buildkit.steps[s] and not dockyard.steps[s]]
        if needless:
            problems.append("dockyard misses where BuildKit hits (same output): "
                            + ", ".join(needless))
    else:
        bk_hits = [s for s in common if buildkit.steps[s]]
        if bk_hits and all(dockyard.steps[s] for s in bk_hits):
            problems.append("BuildKit is stale and dockyard hits every step BuildKit hit")
    return problems


def markdown(rows: list[dict[str, Any]], known: Mapping[str, str]) -> str:
    """The table as docs/cache.md shows it (H: the step hit, m: it missed)."""
    out = ["| change | BuildKit | dockyard | |", "|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["name"]):
        bk = r["buildkit"] + (" **stale**" if r["buildkit_stale"] else "")
        dy = r["dockyard"] + (" **stale**" if r["dockyard_stale"] else "")
        note = known.get(r["name"], "") if r["problems"] else ""
        out.append(f"| `{r['name']}`: {r['what']} | {bk} | {dy} | {note} |")
    return "\n".join(out)


if __name__ == "__main__":
    from test_cache_table import TABLE_KNOWN

    rows = [json.loads(p.read_text()) for d in sys.argv[1:] for p in Path(d).glob("*.json")]
    print(markdown(rows, TABLE_KNOWN))
