"""Issue 12, items 1 and 2: ``RUN --mount=type=bind`` of the build context.

1. A read-write bind mount never writes into the user's context: BuildKit mounts its own
   copy and discards the writes; so does dockyard (a private copy per run).
2. The mount shows exactly what the key covers: files ``.dockerignore`` excludes are not
   there at all (as in BuildKit), so editing them neither shows nor misses; editing a file
   that is shown misses. Each build is compared with a --no-cache build in a fresh store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from test_build_support import BASE, build, flatten, fresh_store, needs_runtime, write_tree

pytestmark = needs_runtime

RW = f"""\
FROM {BASE}
RUN --mount=type=bind,target=/src,rw \\
    echo scribble > /src/new && echo CHANGED > /src/a.txt && rm /src/b.txt && \\
    mkdir /src/dir && cat /src/a.txt > /seen
RUN --mount=type=bind,source=sub,target=/sub,rw echo x > /sub/c.txt && ls /sub > /sub-seen
COPY a.txt /a.txt
"""

IGNORED = f"""\
FROM {BASE}
RUN --mount=type=bind,target=/src \\
    (cat /src/.git/VERSION 2>/dev/null || echo absent) > /version && \\
    find /src | sort > /listing && cat /src/app.txt > /app
"""


def _files(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_writes_to_a_rw_bind_mount_never_reach_the_context(tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": RW, "a.txt": "original\n",
                                        "b.txt": "keep me\n", "sub/c.txt": "c\n"})
    before = _files(ctx)
    root = fresh_store(tmp_path / "store")
    build(ctx, root, tags=["img"])
    assert _files(ctx) == before  # nothing written, changed or removed
    fs = flatten(root, "img", tmp_path / "fs")
    assert (fs / "seen").read_text() == "CHANGED\n"  # the step did write, to its own copy
    assert (fs / "a.txt").read_text() == "original\n"  # and a later COPY sees the context
    assert (fs / "sub-seen").read_text() == "c.txt\n"
    # a second run starts from the context again, not from the first run's writes
    again = build(ctx, root, tags=["img"], no_cache=True)
    assert not any(s.cached for s in again.steps)
    assert _files(ctx) == before


def test_a_bind_mount_shows_exactly_what_the_key_covers(tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": IGNORED, ".dockerignore": ".git\n*.key\n", ".git/VERSION": "1\n",
        "secret.key": "s\n", "app.txt": "app-1\n",
    })
    root = fresh_store(tmp_path / "store")

    def check(tag: str, cached: bool) -> None:
        done = build(ctx, root, tags=[tag])
        assert done.step(2).cached is cached
        fs = flatten(root, tag, tmp_path / f"fs-{tag}")
        fresh = fresh_store(tmp_path / f"fresh-{tag}")
        ref = build(ctx, fresh, tags=[tag], no_cache=True)
        ref_fs = flatten(fresh, tag, tmp_path / f"ref-{tag}")
        for name in ("version", "listing", "app"):
            assert (fs / name).read_text() == (ref_fs / name).read_text(), name
        assert ref.step(2).key == done.step(2).key
        assert (fs / "version").read_text() == "absent\n"
        assert ".git" not in (fs / "listing").read_text()
        assert "secret.key" not in (fs / "listing").read_text()

    check("one", cached=False)
    time.sleep(0.05)
    (ctx / ".git" / "VERSION").write_text("2\n")  # ignored: not shown, not in the key
    (ctx / "secret.key").write_text("t\n")
    check("two", cached=True)
    (ctx / "app.txt").write_text("app-2\n")  # shown: a miss
    check("three", cached=False)
    assert (flatten(root, "three", tmp_path / "final") / "app").read_text() == "app-2\n"
