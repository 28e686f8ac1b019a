"""The build-level up-to-date check: a rebuild whose inputs did not change, answered before
the frontend, the solver or the store are imported.

A no-op rebuild is mostly start-up: Python, imports, the context walk, the cache lookups.
The step cache already guarantees that unchanged inputs give every step a cache hit and the
same image. This module keys that whole outcome on the whole set of inputs, so a rebuild with
none of them changed costs one ``lstat`` walk of the context and a few file reads.

The inputs of ``dockyard build`` and how each is covered:

* the command line (after the global options), the working directory, the store root, the
  dockyard version, and the environment the build reads (``SOURCE_DATE_EPOCH``,
  ``DOCKYARD_*``, and the variables that ``--build-arg NAME`` without a value takes): they
  make the record's name, so any difference finds no record;
* every file of the context, the Dockerfile and its ``.dockerignore`` files: a walk that
  ``lstat``\\ s each entry (inode, size, mode, owner, mtime, ctime, links) into one digest.
  ctime cannot be set back, so a content change hidden by ``touch -r`` still shows (the
  stat cache's rule). A file changed within :data:`RACY_MARGIN` of the walk, or within the
  tick of a file system with coarse timestamps (whole seconds on ext4 with 128-byte inodes,
  2 s for FAT's mtime), could share its timestamps with its next content, so such a build
  records nothing;
* the store: tags, cache records, build history and every deletion move the store
  *generation* on (``Store.bump_generation``); a record holds the generation its build left
  and is only trusted while it has not moved. A build that saw another process move the
  generation during its run records nothing.

Only plain invocations qualify (:func:`scan`): options that read other inputs or write other
outputs (``--no-cache``, ``--cache-ttl``, ``--output``, ``--secret``, ``--build-context``,
``--metadata-file``, a tar or stdin context, ``--pull always``...) always take the full
path, as does the ``tty`` display. ``DOCKYARD_NO_QUICK=1`` turns the check off.

What a hit prints is what the full path prints for a fully cached build: the record holds
that transcript, rendered by the real plain renderer when the build was recorded.

Record files live in ``<root>/quick/<name>``; their format is :data:`_MAGIC` then lines of
``field value``. This module imports nothing heavy: it runs before everything else.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from typing import TYPE_CHECKING

try:  # the builtin module: hashlib would import OpenSSL's bindings (~4 ms)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - other Pythons
    from hashlib import blake2b

from dockyard._timestamps import granularity_ns

if TYPE_CHECKING:
    from collections.abc import Callable

    from dockyard.progress.events import BuildWarning, Event, VertexStarted
    from dockyard.rootless.idmap import IdRange
    from dockyard.store.db import Store

_MAGIC = "dockyard-quick 1"
# (record name, root) -> (walk start, signature) of a check that missed in this process
_walked: dict[tuple[str, str], tuple[float, tuple[str, int]]] = {}
RACY_MARGIN = 0.1  # seconds: a file changed this close to the walk is not trusted
#: characters that make an ignore line more than a plain path (dockerignore._compile_pattern)
_PATTERN_CHARS = "*?[]\\"
_COARSEST = 2_000_000_000  # ns: the coarsest timestamp granularity (FAT's mtime)
_PROGRESS = ("auto", "plain", "quiet")
# option -> how its value is checked (None: any value not starting with "-")
_VALUE_OPTIONS: dict[str, tuple[str, ...] | None] = {
    "-t": None, "--tag": None, "-f": None, "--file": None, "--build-arg": None,
    "--target": None, "--label": None, "--platform": None, "--iidfile": None,
    "--runtime": None, "--jobs": None,
    "--network": ("default", "host", "none"),
    "--progress": _PROGRESS,
    "--snapshotter": ("auto", "overlay", "native"),
    "--pull": ("missing", "never", "false"),
}


class Invocation:
    """A ``dockyard build`` command line the check can answer (see :func:`scan`)."""

    __slots__ = ("context", "dockerfile", "iidfile", "mode", "name", "root")

    def __init__(self, root: str, context: str, dockerfile: str | None, mode: str,
                 iidfile: str | None, name: str) -> None:
        self.root = root
        self.context = context
        self.dockerfile = dockerfile
        self.mode = mode  # "plain" or "quiet"
        self.iidfile = iidfile
        self.name = name  # the record's file name

    @property
    def record_path(self) -> str:
        return os.path.join(self.root, "quick", self.name)

    def watched(self) -> list[str]:
        """Paths whose state is an input wherever they are: every file the build may read as
        its Dockerfile and the ``.dockerignore`` files that may apply (``context.py``'s
        rules: ``-f`` relative to the working directory, else to the context)."""
        paths = [os.path.join(self.context, ".dockerignore")]
        if self.dockerfile is None:
            names = [os.path.join(self.context, "Dockerfile"),
                     os.path.join(self.context, "dockerfile"),
                     os.path.join(self.context, "Containerfile")]
        elif os.path.isabs(self.dockerfile):
            names = [self.dockerfile]
        else:
            names = [os.path.abspath(self.dockerfile),
                     os.path.join(self.context, self.dockerfile)]
        for name in names:
            paths += [name, name + ".dockerignore"]
        return paths

    def pruned(self) -> frozenset[str]:
        """Context paths the walk may skip: what the applicable ``.dockerignore`` certainly
        excludes. Only plain patterns count (``node_modules``, ``/build/``: a path and all
        below it; a line with any of ``*?[]\\`` is a pattern); none at all if any pattern
        has an exception (``!``) or the files are not
        where ``context.py`` would look, and never a path that leads to a Dockerfile or an
        ignore file. Skipping less only costs time."""
        ctx = self.context
        if self.dockerfile is None:
            dockerfile = os.path.join(ctx, "Dockerfile")
            if not os.path.isfile(dockerfile):
                dockerfile = os.path.join(ctx, "dockerfile")
            if not os.path.isfile(dockerfile):
                dockerfile = os.path.join(ctx, "Containerfile")
        elif os.path.isabs(self.dockerfile):
            dockerfile = self.dockerfile
        else:
            dockerfile = os.path.abspath(self.dockerfile)
            if not os.path.isfile(dockerfile):
                dockerfile = os.path.join(ctx, self.dockerfile)
        text = None
        for path in (dockerfile + ".dockerignore", os.path.join(ctx, ".dockerignore")):
            if os.path.islink(path) or os.path.islink(dockerfile):
                return frozenset()
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "surrogateescape")
                break
            except (FileNotFoundError, NotADirectoryError):
                continue
        if not text:
            return frozenset()
        protected = [os.path.relpath(p, ctx) for p in self.watched()]
        out = set()
        for number, line in enumerate(text.splitlines()):
            if number == 0:
                line = line.removeprefix("\ufeff")
            if line.startswith("#"):
                continue
            line = line.strip()
            if "!" in line:
                return frozenset()
            parts = [p for p in line.split("/") if p not in ("", ".")]
            # Plain only if the matcher takes every character literally: "[" and "]" make
            # a pattern a regular expression ("v]^" matches nothing at all)
            if not parts or ".." in parts or any(c in line for c in _PATTERN_CHARS):
                continue
            # The matcher trims each cleaned pattern once more ("a /" excludes "a", not
            # "a "): a part with surrounding white space is not taken literally.
            if any(p != p.strip() for p in parts):
                continue
            rel = "/".join(parts)
            if not any(p == rel or p.startswith(rel + "/") for p in protected):
                out.add(rel)
        return frozenset(out)


def scan(argv: list[str], root: str) -> Invocation | None:
    """The invocation ``argv`` (the build command's arguments) makes, or None if it uses
    anything the check does not cover. Only exact option spellings are taken: argparse would
    also accept abbreviations, and an unusual spelling simply takes the full path."""
    if os.environ.get("DOCKYARD_NO_QUICK"):
        return None
    positional: list[str] = []
    dockerfile: str | None = None
    iidfile: str | None = None
    progress = os.environ.get("BUILDKIT_PROGRESS") or "auto"
    quiet = False
    env_args: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        if arg in ("-q", "--quiet"):
            quiet = True
            continue
        if arg in ("--rm", "--force-rm"):  # docker's no-ops
            continue
        if arg.startswith("--") and "=" in arg:
            option, _, value = arg.partition("=")
        elif arg in _VALUE_OPTIONS:
            if i >= len(argv):
                return None
            option, value = arg, argv[i]
            i += 1
        elif arg[:2] in ("-t", "-f") and "=" not in arg:
            option, value = arg[:2], arg[2:]
        else:
            return None
        if option not in _VALUE_OPTIONS or value.startswith("-"):
            return None
        allowed = _VALUE_OPTIONS[option]
        if allowed is not None and value.lower() not in allowed:
            return None
        if option in ("-f", "--file"):
            dockerfile = value
        elif option == "--iidfile":
            iidfile = value
        elif option == "--progress":
            progress = value.lower()
        elif option == "--jobs" and not value.isdigit():
            return None
        elif option == "--build-arg" and "=" not in value:
            env_args.append(value)
    if len(positional) != 1 or not os.path.isdir(positional[0]):
        return None
    if progress.lower() not in _PROGRESS:
        return None
    mode = "quiet" if quiet or progress == "quiet" else progress.lower()
    if mode == "auto":
        if sys.stderr.isatty():
            return None  # the live display is not replayed
        mode = "plain"
    env = [f"{k}={v}" for k, v in sorted(os.environ.items())
           if k.startswith("DOCKYARD_") or k in ("SOURCE_DATE_EPOCH", "BUILDKIT_PROGRESS")]
    env += [f"arg:{k}={os.environ.get(k, '')}:{k in os.environ}" for k in env_args]
    from dockyard._version import __version__

    material = "\0".join([_MAGIC, __version__, os.path.abspath(root), os.getcwd(), *argv,
                          "\0env", *env])
    name = blake2b(material.encode("utf-8", "surrogateescape"), digest_size=20).hexdigest()
    return Invocation(root, positional[0], dockerfile, mode, iidfile, name)


def _outside_ids() -> tuple[Callable[[int], int], Callable[[int], int]] | None:
    """In dockyard's user namespace (an ordinary user's build, after ``enter``): functions
    turning the uid and gid ``lstat`` shows here into the ones the same file has outside,
    where :func:`try_build` walks, so that the recorder's signature can match it. None
    outside the namespace."""
    ns = sys.modules.get("dockyard.rootless.namespace")
    mapping = ns.entered() if ns is not None else None
    if mapping is None:
        return None

    def via(ranges: tuple[IdRange, ...]) -> Callable[[int], int]:
        def outside(i: int) -> int:
            for r in ranges:
                if r.inside <= i < r.inside + r.count:
                    return r.outside + i - r.inside
            return i  # unmapped (the overflow id): no outside walk gives it, so a miss
        return outside

    return via(mapping.uids), via(mapping.gids)


def signature(inv: Invocation) -> tuple[str, int]:
    """The digest of the ``lstat`` of every context entry and watched path, and the latest
    moment (ns) any of their mtimes or ctimes may stand for: the time itself on a
    fine-grained file system, the end of its tick on a coarse one (a 1-second file system
    gives the same stamp to every write in that second, see ``_timestamps.py``). Symlinks
    are never followed below the context root."""
    # Each entry's repr goes into the hash as it comes (a repr of a tuple of ints and
    # strings starts with "(" and ends with ")", its strings quoted: the concatenation is
    # unambiguous); no list of every entry is kept (100,000 tuples: ~25 MB, and its repr).
    h = blake2b()
    ids = _outside_ids()
    uid, gid = ids if ids is not None else (int, int)  # int(i) is i

    def add(entry: tuple[object, ...]) -> None:
        h.update(repr(entry).encode("utf-8", "surrogateescape"))

    newest = 0
    st = os.stat(inv.context)
    add(("", st.st_mode, uid(st.st_uid), gid(st.st_gid), st.st_ino, st.st_dev,
                    st.st_mtime_ns, st.st_ctime_ns))
    skip = inv.pruned()
    add(("ignored", sorted(skip)))
    stack = [(inv.context, "")]
    lstat = os.lstat
    while stack:
        path, rel = stack.pop()
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
                     if rel else os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in sorted(os.listdir(fd)):
                if skip and rel + name in skip:
                    continue  # .dockerignore excludes it and everything below it
                st = lstat(name, dir_fd=fd)
                add((rel + name, st.st_mode, uid(st.st_uid), gid(st.st_gid), st.st_size,
                     st.st_ino, st.st_dev, st.st_nlink, st.st_mtime_ns, st.st_ctime_ns))
                for stamp in (st.st_mtime_ns, st.st_ctime_ns):
                    if stamp + _COARSEST > newest:
                        newest = max(newest, stamp + granularity_ns(stamp))
                if stat.S_ISDIR(st.st_mode):
                    stack.append((path + "/" + name, rel + name + "/"))
        finally:
            os.close(fd)
    for path in inv.watched():
        try:
            st = os.stat(path)
        except FileNotFoundError:
            add((path, "-"))
            continue
        add((path, st.st_mode, uid(st.st_uid), gid(st.st_gid), st.st_size, st.st_ino,
             st.st_dev, st.st_mtime_ns, st.st_ctime_ns))
        for stamp in (st.st_mtime_ns, st.st_ctime_ns):
            newest = max(newest, stamp + granularity_ns(stamp))
    return h.hexdigest(), newest


def read_generation(root: str) -> str:
    """``<root>/generation`` as ``Store.generation`` reads it (``"0"`` if absent)."""
    try:
        with open(os.path.join(root, "generation"), "rb") as f:
            return f.read(64).decode("ascii", "replace").strip() or "0"
    except FileNotFoundError:
        return "0"


def read_record(path: str) -> dict[str, str] | None:
    """A record's fields (values as stored), or None if it is missing or not ours."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    lines = text.split("\n")
    if not lines or lines[0] != _MAGIC or lines[-1] != "":
        return None  # unknown format or a torn file
    fields: dict[str, str] = {}
    for line in lines[1:-1]:
        key, _, value = line.partition(" ")
        fields[key] = value
    return fields


def try_build(argv: list[str], root: str) -> int | None:
    """Answer ``dockyard build ARGV`` from its record if no input changed: print what a
    fully cached build prints, write ``--iidfile``, return 0. None: take the full path."""
    _walked.clear()  # only ever handed to the build that follows this very check
    try:
        inv = scan(argv, root)
        if inv is None:
            return None
        record = read_record(inv.record_path)
        if record is None or record.get("generation") != read_generation(root):
            if os.geteuid() != 0:
                # An ordinary user's build goes on in its user namespace, where files of
                # owners the namespace does not map (a context owned by root, say) show
                # the overflow id: a walk there could never match this one. Walk here,
                # before the build reads anything, and hand it to the recorder.
                _walked[(inv.name, inv.root)] = (time.time(), signature(inv))
            return None
        started = time.time()
        walked = signature(inv)
        if walked[0] != record.get("signature"):
            # the full path runs next in this process: its recorder takes this walk, made
            # before the build reads anything, instead of walking the context again
            _walked[(inv.name, inv.root)] = (started, walked)
            return None
        image_id = record["image"]
        transcript = bytes.fromhex(record.get("out", "")).decode("utf-8", "surrogateescape")
        if inv.iidfile:
            with open(inv.iidfile, "w", encoding="utf-8") as f:
                f.write(image_id)
        # the hit counts as a use of the record's cache entries (cache prune --older-than)
        os.utime(inv.record_path)
    except (OSError, KeyError, ValueError):
        return None
    if inv.mode == "quiet":
        sys.stdout.write(image_id + "\n")
        sys.stdout.flush()
    else:
        sys.stderr.write(transcript)
        sys.stderr.flush()
    return 0


class Recorder:
    """Records a full build's outcome for :func:`try_build`.

    ``start`` walks the context on a thread while the build runs (before anything of the
    context is read, or the racy rule catches it); the build passes its events through
    :meth:`handle` and its store through :meth:`begin` / :meth:`end`; :meth:`write` stores
    the record once the build has succeeded and printed its last line.
    """

    def __init__(self, inv: Invocation) -> None:
        self.inv = inv
        self._walk_start = time.time()
        self._signature: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        earlier = _walked.pop((inv.name, inv.root), None)
        if earlier is not None:
            self._walk_start, self._signature = earlier
        else:
            self._thread = threading.Thread(target=self._walk, name="quick-walk", daemon=True)
            self._thread.start()
        self._vertices: dict[int, tuple[VertexStarted, str | None]] = {}
        self._warnings: list[BuildWarning] = []
        self._generation: tuple[str, int] | None = None
        self._valid = True
        self._final: tuple[str, int] | None = None

    @classmethod
    def start(cls, argv: list[str], root: str) -> Recorder | None:
        """A recorder for this command line, or None if the check does not cover it."""
        try:
            inv = scan(argv, root)
        except OSError:
            return None
        return cls(inv) if inv is not None else None

    def _walk(self) -> None:
        try:
            self._signature = signature(self.inv)
        except OSError:
            self._signature = None

    def refuse(self) -> None:
        """The build reads what no walk of the context sees (an ``ADD`` of a URL, which
        is asked for on every build): it records nothing, so every rebuild takes the full
        path."""
        self._valid = False

    def handle(self, event: Event) -> None:
        """Keep what a fully cached build would show: vertices, keys, warnings."""
        from dockyard.progress.events import (
            BuildWarning,
            VertexCached,
            VertexDone,
            VertexError,
            VertexStarted,
        )

        if isinstance(event, VertexStarted):
            self._vertices[event.vertex] = (event, None)
        elif isinstance(event, VertexCached | VertexDone):
            known = self._vertices.get(event.vertex)
            if known is not None:
                self._vertices[event.vertex] = (known[0], event.key)
        elif isinstance(event, VertexError):
            self._valid = False
        elif isinstance(event, BuildWarning):
            self._warnings.append(event)

    def begin(self, store: Store) -> None:
        """The build opened ``store``: note its generation and this object's own bumps."""
        self._generation = (store.generation(), store.generation_bumps)

    def end(self, store: Store) -> None:
        """The build is done with ``store``: it recorded a trustworthy generation only if
        every move of the generation since :meth:`begin` was this build's own."""
        if self._generation is None:
            self._valid = False
            return
        start, bumps = self._generation
        now = store.generation()
        own = store.generation_bumps - bumps
        try:
            self._valid = self._valid and int(now) - int(start) == own
        except ValueError:
            self._valid = False
        self._final = (now, own)

    def write(self, image_id: str, last_line: str | None) -> bool:
        """Store the record (atomically); False if this build cannot be trusted as one."""
        if self._thread is not None:
            self._thread.join()
        if not self._valid or self._final is None or self._signature is None:
            return False
        digest, newest = self._signature
        if newest >= (self._walk_start - RACY_MARGIN) * 1e9:
            return False  # a file changed around the walk: its timestamps prove nothing
        transcript = self._transcript(image_id)
        if last_line is not None:
            transcript += last_line + "\n"
        keys = " ".join(k for _, k in self._vertices.values() if k)
        text = "\n".join([
            _MAGIC,
            f"generation {self._final[0]}",
            f"signature {digest}",
            f"image {image_id}",
            f"keys {keys}",
            f"out {transcript.encode('utf-8', 'surrogateescape').hex()}",
            "",
        ])
        directory = os.path.dirname(self.inv.record_path)
        os.makedirs(directory, exist_ok=True)
        tmp = f"{self.inv.record_path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.inv.record_path)
        return True

    def _transcript(self, image_id: str) -> str:
        """What ``--progress plain`` prints for this build when every step is a hit."""
        import io

        from dockyard.progress.events import BuildFinished, VertexCached, VertexDone
        from dockyard.progress.render import PlainRenderer

        if self.inv.mode != "plain":
            return ""
        out = io.StringIO()
        renderer = PlainRenderer(out)
        now = time.time()
        for vertex in sorted(self._vertices):
            started, key = self._vertices[vertex]
            renderer.handle(started)
            if key:  # a step: a hit
                renderer.handle(VertexCached(vertex, now, key))
            else:  # FROM and the like: no cache key, done at once
                renderer.handle(VertexDone(vertex, now, 0.0))
        for warning in self._warnings:
            renderer.handle(warning)
        renderer.handle(BuildFinished(now, image_id, 0.0))
        renderer.close()
        return out.getvalue()


def record_uses(root: str) -> dict[str, float]:
    """Cache key -> the last time a quick hit used it (for cache GC's last-used times)."""
    uses: dict[str, float] = {}
    directory = os.path.join(root, "quick")
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return uses
    for name in names:
        path = os.path.join(directory, name)
        fields = read_record(path)
        if fields is None:
            continue
        try:
            when = os.stat(path).st_mtime
        except FileNotFoundError:
            continue
        for key in fields.get("keys", "").split():
            uses[key] = max(uses.get(key, 0.0), when)
    return uses
