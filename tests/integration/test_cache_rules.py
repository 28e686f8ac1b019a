"""The seed's three cache rules, each proved by real builds against one store.

1. Changed files miss, touched files hit (content digests, stat cache guarded by ctime).
2. Stale RUN steps can be refreshed: ``--no-cache`` and ``--cache-ttl``.
3. A miss invalidates what follows; static steps before the COPY stay cached.
Plus build args: a changed ARG invalidates every RUN in its scope (BuildKit's rule).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from test_build_support import build, flatten, fresh_store, needs_runtime, write_tree

pytestmark = needs_runtime

DOCKERFILE = """\
FROM busybox
RUN echo static > /static
COPY app.txt /app/app.txt
RUN cat /app/app.txt > /copied
RUN echo after > /after
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fresh_store(tmp_path / "store")


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "app.txt": "hello\n"})


def test_changed_file_misses_from_its_copy_on(root: Path, ctx: Path, tmp_path: Path) -> None:
    first = build(ctx, root, tags=["app"])
    assert [s.cached for s in first.steps] == [False, False, False, False]
    (ctx / "app.txt").write_text("HELLO\n")  # same size, other content
    second = build(ctx, root, tags=["app"])
    assert second.cached_by_line() == {2: True, 3: False, 4: False, 5: False}
    copy = second.step(3)
    assert copy.reason is not None
    assert "app.txt (content)" in copy.reason
    assert "1 file changed" in copy.reason
    assert second.step(4).reason is not None
    assert "an earlier step changed (line 3)" in (second.step(4).reason or "")
    assert "an earlier step changed (line 3)" in (second.step(5).reason or "")
    assert second.step(3).key != first.step(3).key
    fs = flatten(root, "app", tmp_path / "fs")
    assert (fs / "copied").read_text() == "HELLO\n"
    assert (fs / "static").read_text() == "static\n"


def test_touched_file_hits(root: Path, ctx: Path) -> None:
    first = build(ctx, root)
    later = time.time() + 100
    os.utime(ctx / "app.txt", (later, later))
    second = build(ctx, root)
    assert second.result.cached_all
    assert [s.key for s in second.steps] == [s.key for s in first.steps]
    assert all(s.reason is None for s in second.steps)


def test_content_change_with_mtime_put_back_still_misses(root: Path, ctx: Path,
                                                         tmp_path: Path) -> None:
    build(ctx, root)
    ref = tmp_path / "ref"
    ref.write_text("")
    subprocess.run(["touch", "-r", str(ctx / "app.txt"), str(ref)], check=True)
    before = os.stat(ctx / "app.txt")
    (ctx / "app.txt").write_text("jello\n")  # same size as "hello\n"
    subprocess.run(["touch", "-r", str(ref), str(ctx / "app.txt")], check=True)
    after = os.stat(ctx / "app.txt")
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = build(ctx, root)
    assert second.cached_by_line() == {2: True, 3: False, 4: False, 5: False}
    assert "app.txt (content)" in (second.step(3).reason or "")


def test_no_cache_rebuilds_every_step_and_records_results(root: Path, ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(DOCKERFILE + "RUN cat /proc/sys/kernel/random/uuid > /stamp\n")
    first = build(ctx, root)
    forced = build(ctx, root, no_cache=True)
    assert not any(s.cached for s in forced.steps)
    assert all("--no-cache" in (s.reason or "") for s in forced.steps)
    assert forced.steps[0].key == first.steps[0].key
    again = build(ctx, root)
    assert again.result.cached_all
    assert [s.key for s in again.steps] == [s.key for s in forced.steps]
    # the results recorded are the rebuilt ones, not the first build's
    assert again.result.config["rootfs"] == forced.result.config["rootfs"]
    assert forced.result.config["rootfs"] != first.result.config["rootfs"]


def test_run_older_than_cache_ttl_is_rebuilt(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ttl", {
        "Dockerfile": "FROM busybox\n"
                      "RUN cat /proc/sys/kernel/random/uuid > /stamp\n"
                      "COPY f /f\n"
                      "RUN cat /stamp > /stamp2\n",
        "f": "x\n",
    })
    first = build(ctx, root, tags=["ttl"])
    fresh = build(ctx, root, tags=["ttl"], cache_ttl="1h")
    assert fresh.result.cached_all
    time.sleep(1.2)
    stale = build(ctx, root, tags=["ttl"], cache_ttl="1s")
    run = stale.step(2)
    assert not run.cached
    assert "older than --cache-ttl 1s" in (run.reason or "")
    # the refreshed RUN gave a new layer, so what was built on the old one is rebuilt too
    assert not stale.step(3).cached
    assert not stale.step(4).cached
    assert "an earlier step changed (line 2)" in (stale.step(4).reason or "")
    fs = flatten(root, "ttl", tmp_path / "fs")
    assert (fs / "stamp").read_text() == (fs / "stamp2").read_text()
    # without the TTL the refreshed results are what the cache holds now
    again = build(ctx, root, tags=["ttl"])
    assert again.result.cached_all
    assert again.result.config["rootfs"] == stale.result.config["rootfs"]
    assert first.step(2).key == again.step(2).key


def test_miss_invalidates_later_steps_static_before_stay(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\n"
                      "RUN echo one > /one\n"
                      "ENV A=1\n"
                      "WORKDIR /work\n"
                      "RUN echo two > two\n"
                      "COPY src/ /src/\n"
                      "RUN ls /src > /listing\n"
                      "ENV B=2\n"
                      "RUN echo three > three\n",
        "src/a.c": "int a;\n",
        "src/b.h": "#define B\n",
    })
    build(ctx, root)
    (ctx / "src" / "c.c").write_text("int c;\n")
    (ctx / "src" / "a.c").write_text("int a = 1;\n")
    second = build(ctx, root)
    assert second.cached_by_line() == {2: True, 4: True, 5: True, 6: False, 7: False, 9: False}
    reason = second.step(6).reason or ""
    assert "2 files changed" in reason
    assert "a.c (content)" in reason and "c.c (added)" in reason
    assert "an earlier step changed (line 6)" in (second.step(7).reason or "")
    assert "an earlier step changed (line 6)" in (second.step(9).reason or "")


def test_changed_build_arg_invalidates_from_its_declaration(root: Path, tmp_path: Path) -> None:
    """As BuildKit: every ARG in scope is in a RUN's environment, so in its key, whether the
    command names it or not; steps before the ARG's declaration keep their cache."""
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\n"
                      "RUN echo before > /b\n"
                      "ARG V=0\n"
                      "ARG UNUSED=a\n"
                      "RUN echo static > /s\n"
                      "RUN echo $V > /v\n"
                      "RUN cat /v > /w\n",
    })
    build(ctx, root, build_args={"V": "1", "UNUSED": "a"})
    second = build(ctx, root, build_args={"V": "2", "UNUSED": "a"}, tags=["args"])
    assert second.cached_by_line() == {2: True, 5: False, 6: False, 7: False}
    for line in (5, 6, 7):
        assert (second.step(line).reason or "").endswith("ARG V changed 1 -> 2")
    fs = flatten(root, "args", tmp_path / "fs")
    assert (fs / "w").read_text() == "2\n"
    # an ARG the commands do not name is in their environment too
    third = build(ctx, root, build_args={"V": "2", "UNUSED": "b"})
    assert third.cached_by_line() == {2: True, 5: False, 6: False, 7: False}
    assert (third.step(5).reason or "").endswith("ARG UNUSED changed a -> b")
    again = build(ctx, root, build_args={"V": "2", "UNUSED": "b"})
    assert again.result.cached_all
    # the default applies when the arg is not given
    fourth = build(ctx, root, build_args={"UNUSED": "b"})
    assert fourth.cached_by_line() == {2: True, 5: False, 6: False, 7: False}
    assert "ARG V changed 2 -> 0" in (fourth.step(6).reason or "")


def test_metadata_change_only_invalidates_steps_that_see_it(root: Path, tmp_path: Path) -> None:
    text = ("FROM busybox\n"
            "RUN echo one > /one\n"
            "LABEL a={label}\n"
            "RUN echo two > /two\n"
            "ENV E={env}\n"
            "RUN echo three > /three\n")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": text.format(label="1", env="x")})
    build(ctx, root)
    (ctx / "Dockerfile").write_text(text.format(label="2", env="x"))
    label = build(ctx, root)
    assert label.result.cached_all
    (ctx / "Dockerfile").write_text(text.format(label="2", env="y"))
    env = build(ctx, root)
    assert env.cached_by_line() == {2: True, 4: True, 6: False}
    assert "ENV E changed x -> y" in (env.step(6).reason or "")


def test_copy_link_stays_cached_and_later_steps_follow_the_chain(root: Path,
                                                                 tmp_path: Path) -> None:
    text = ("FROM busybox\n"
            "RUN echo {v} > /v\n"
            "COPY --link f /f\n"
            "RUN cat /v /f > /both\n")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": text.format(v="1"), "f": "F\n"})
    build(ctx, root)
    (ctx / "Dockerfile").write_text(text.format(v="2"))
    second = build(ctx, root, tags=["link"])
    assert second.cached_by_line() == {2: False, 3: True, 4: False}
    fs = flatten(root, "link", tmp_path / "fs")
    assert (fs / "both").read_text() == "2\nF\n"
