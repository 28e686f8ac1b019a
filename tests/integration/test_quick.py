"""The build-level up-to-date check (``dockyard.quick``): a rebuild with no input changed is
answered from its record, with exactly the output of a fully cached build, and any changed
input - a file, the Dockerfile, a tag, the cache, an argument, the environment - takes the
full path again."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_build_support import BASE, dockyard_cli, fresh_store, write_tree

from dockyard import quick
from dockyard.cli.main import main
from dockyard.store.db import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (mounts)")

DOCKERFILE = f"""\
FROM {BASE} AS base
WORKDIR /app
COPY src/ /app/src/
ENV MODE=prod
ARG VERSION=1
COPY conf.txt /app/conf-$VERSION.txt

FROM scratch
COPY --from=base /app /app
LABEL org.example.v=1
CMD ["/app/run"]
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": DOCKERFILE,
        "src/a.txt": "alpha\n",
        "src/sub/b.txt": "beta\n",
        "conf.txt": "conf\n",
    })
    settle()
    return root, ctx


def settle() -> None:
    """Wait out the racy window, so a build right after a write may record."""
    time.sleep(quick.RACY_MARGIN + 0.05)


def build(root: Path, *argv: str) -> int:
    return main(["--root", str(root), "build", *argv])


def hit(root: Path, *argv: str) -> bool:
    return quick.try_build(list(argv), str(root)) == 0


def normalise(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if " DONE " not in line)


def test_noop_answered_with_the_full_paths_output(setup: tuple[Path, Path]) -> None:
    root, ctx = setup
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cold = subprocess.run([*dockyard_cli(), "--root", str(root), "build", *argv], env=env,
                          capture_output=True, text=True, check=True)
    assert "CACHE MISS" in cold.stderr
    record = Path(quick.scan(argv, str(root)).record_path)  # type: ignore[union-attr]
    assert record.exists()
    before = record.stat()
    fast = subprocess.run([*dockyard_cli(), "--root", str(root), "build", *argv], env=env,
                          capture_output=True, text=True, check=True)
    after = record.stat()
    # a hit keeps the record (same inode) and marks it used
    assert (after.st_ino, after.st_mtime_ns > before.st_mtime_ns) == (before.st_ino, True)
    slow = subprocess.run([*dockyard_cli(), "--root", str(root), "build", *argv],
                          env={**env, "DOCKYARD_NO_QUICK": "1"},
                          capture_output=True, text=True, check=True)
    assert normalise(fast.stderr) == normalise(slow.stderr)
    assert fast.stderr.count("CACHED") == slow.stderr.count("CACHED") == 4
    assert fast.stdout == slow.stdout == ""


def test_quiet_and_iidfile(setup: tuple[Path, Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    root, ctx = setup
    iid = tmp_path / "iid"
    argv = ["-q", "--iidfile", str(iid), "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    image_id = capsys.readouterr().out.strip()
    iid.unlink()
    assert hit(root, *argv)
    assert capsys.readouterr().out.strip() == image_id
    assert iid.read_text() == image_id
    assert Store.open(root).get_image("app:1").id == image_id


def test_context_changes_take_the_full_path(setup: tuple[Path, Path]) -> None:
    root, ctx = setup
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    assert hit(root, *argv)

    # same size, mtime put back: ctime still shows the change
    target = ctx / "src" / "a.txt"
    st = target.stat()
    target.write_text("ALPHA\n")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not hit(root, *argv)
    settle()
    assert build(root, *argv) == 0
    assert hit(root, *argv)

    for change in (
        lambda: (ctx / "src" / "new.txt").write_text("new\n"),
        lambda: (ctx / "src" / "new.txt").unlink(),
        lambda: (ctx / "conf.txt").chmod(0o600),
        lambda: os.symlink("a.txt", ctx / "src" / "link"),
        lambda: (ctx / "unused.txt").write_text("not even copied\n"),
        lambda: (ctx / ".dockerignore").write_text("unused.txt\n"),
        lambda: (ctx / "Dockerfile").write_text(DOCKERFILE + "ENV X=1\n"),
    ):
        change()
        assert not hit(root, *argv)
        settle()
        assert build(root, *argv) == 0
        assert hit(root, *argv)


def test_dockerfile_outside_the_context(setup: tuple[Path, Path], tmp_path: Path) -> None:
    root, ctx = setup
    dockerfile = tmp_path / "elsewhere.Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    settle()
    argv = ["--progress", "plain", "-f", str(dockerfile), "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    assert hit(root, *argv)
    Path(str(dockerfile) + ".dockerignore").write_text("conf.txt\n")
    assert not hit(root, *argv)
    dockerfile.write_text(DOCKERFILE.replace("MODE=prod", "MODE=dev"))
    assert not hit(root, *argv)


def test_arguments_and_environment_are_inputs(setup: tuple[Path, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root, ctx = setup
    argv = ["--progress", "plain", "--build-arg", "VERSION", "-t", "app:1", str(ctx)]
    monkeypatch.setenv("VERSION", "1")
    assert build(root, *argv) == 0
    assert hit(root, *argv)
    monkeypatch.setenv("VERSION", "2")
    assert not hit(root, *argv)
    monkeypatch.setenv("VERSION", "1")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert not hit(root, *argv)
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert hit(root, *argv)
    # another spelling, another argument: another record, none yet
    assert not hit(root, "--progress", "plain", "--build-arg", "VERSION=1", "-t", "app:1",
                   str(ctx))
    assert not hit(root, "--progress", "plain", "-t", "app:2", str(ctx))


def test_store_changes_take_the_full_path(setup: tuple[Path, Path], tmp_path: Path) -> None:
    root, ctx = setup
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    assert hit(root, *argv)
    store = Store.open(root)
    image = store.get_image("app:1")

    # the tag moved away and back: the generation moved, so the record is not trusted
    base = store.get_image(BASE)
    store.tag(base.id, "app:1")
    assert not hit(root, *argv)
    assert build(root, *argv) == 0
    assert store.get_image("app:1").id == image.id
    assert hit(root, *argv)

    # the base tag moved (a new busybox): FROM resolves differently
    store.tag(image.id, BASE)
    assert not hit(root, *argv)
    store.tag(base.id, BASE)
    assert build(root, *argv) == 0
    assert hit(root, *argv)

    assert main(["--root", str(root), "cache", "prune", "--all"]) == 0
    assert not hit(root, *argv)
    assert build(root, *argv) == 0
    assert hit(root, *argv)
    assert main(["--root", str(root), "rmi", "app:1"]) == 0
    assert not hit(root, *argv)


def test_a_foreign_store_write_during_the_build_records_nothing(
        setup: tuple[Path, Path]) -> None:
    root, ctx = setup
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    recorder = quick.Recorder.start(argv, str(root))
    assert recorder is not None
    mine, other = Store.open(root), Store.open(root)
    recorder.begin(mine)
    mine.bump_generation()
    other.bump_generation()  # another build, in another process, say
    recorder.end(mine)
    assert not recorder.write("sha256:" + "0" * 64, None)
    assert not Path(recorder.inv.record_path).exists()

    again = quick.Recorder.start(argv, str(root))
    assert again is not None
    again.begin(mine)
    mine.bump_generation()
    again.end(mine)
    assert again.write("sha256:" + "0" * 64, None)


def test_a_file_changed_around_the_walk_records_nothing(setup: tuple[Path, Path]) -> None:
    root, ctx = setup
    (ctx / "conf.txt").write_text("just now\n")  # no settle(): within the racy window
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    assert not Path(quick.scan(argv, str(root)).record_path).exists()  # type: ignore[union-attr]
    assert not hit(root, *argv)


@pytest.mark.parametrize("extra", [
    ["--no-cache"], ["--cache-ttl", "1h"], ["--metadata-file", "/tmp/m.json"],
    ["-o", "type=local,dest=/tmp/x"], ["--pull", "always"], ["--progress", "rawjson"],
    ["--secret", "id=a,src=/etc/hostname"], ["--build-context", "x=/tmp"], ["--push"],
    ["--no-cache-filter", "base"], ["--tar", "base"], ["-tq"], ["--", "x"],
])
def test_invocations_the_check_does_not_cover(tmp_path: Path, extra: list[str]) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    assert quick.scan(["-t", "a", *extra, str(ctx)], str(tmp_path / "store")) is None or (
        extra == ["-tq"])  # -tq is "-t q": a tag, covered
    assert quick.scan(["-t", "a", str(ctx)], str(tmp_path / "store")) is not None
    assert quick.scan(["-t", "a", "-", str(ctx)], str(tmp_path / "store")) is None
    assert quick.scan(["-t", "a", str(ctx / "Dockerfile")], str(tmp_path / "store")) is None


def test_cache_gc_counts_quick_hits_as_uses(setup: tuple[Path, Path]) -> None:
    from dockyard.store.cache_gc import cache_entries

    root, ctx = setup
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    store = Store.open(root)
    recorded = {e.record.key: e.record.last_used for e in cache_entries(store)}
    time.sleep(0.05)
    assert hit(root, *argv)
    used = {e.record.key: e.record.last_used for e in cache_entries(store)}
    keys = quick.read_record(quick.scan(argv, str(root)).record_path)["keys"].split()  # type: ignore[union-attr,index]
    assert keys and all(used[k] > recorded[k] for k in keys)


def test_parallel_no_ops_agree(setup: tuple[Path, Path]) -> None:
    root, ctx = setup
    argv = ["--progress", "quiet", "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(hit(root, *argv)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4


def test_what_dockerignore_excludes_is_not_walked(setup: tuple[Path, Path]) -> None:
    root, ctx = setup
    (ctx / ".dockerignore").write_text("# build output\nnode_modules\n/dist/\n*.log\n")
    (ctx / "node_modules" / "pkg").mkdir(parents=True)
    (ctx / "dist").mkdir()
    settle()
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    assert hit(root, *argv)
    # excluded by plain patterns: not even looked at
    (ctx / "node_modules" / "pkg" / "index.js").write_text("module.exports = 1\n")
    (ctx / "dist" / "app.bin").write_text("binary\n")
    assert hit(root, *argv)
    # a wildcard pattern is not interpreted by the check: a change there takes the full path
    (ctx / "debug.log").write_text("log\n")
    assert not hit(root, *argv)
    settle()
    assert build(root, *argv) == 0
    assert hit(root, *argv)


def test_an_exception_pattern_turns_the_pruning_off(setup: tuple[Path, Path]) -> None:
    root, ctx = setup
    (ctx / ".dockerignore").write_text("node_modules\n!node_modules/keep.txt\n")
    (ctx / "node_modules").mkdir()
    settle()
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    assert hit(root, *argv)
    (ctx / "node_modules" / "other.txt").write_text("x\n")
    assert not hit(root, *argv)


def test_an_ignored_directory_holding_the_dockerfile_is_still_watched(
        setup: tuple[Path, Path]) -> None:
    root, ctx = setup
    (ctx / "docker").mkdir()
    (ctx / "docker" / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "docker" / "Dockerfile.dockerignore").write_text("docker\nunused\n")
    settle()
    argv = ["--progress", "plain", "-f", "docker/Dockerfile", "-t", "app:1", str(ctx)]
    cwd = os.getcwd()
    os.chdir(ctx.parent)  # -f is taken relative to the working directory first
    try:
        argv[3] = str(ctx / "docker" / "Dockerfile")
        assert build(root, *argv) == 0
        assert hit(root, *argv)
        (ctx / "docker" / "Dockerfile").write_text(DOCKERFILE + "LABEL x=1\n")
        assert not hit(root, *argv)
    finally:
        os.chdir(cwd)


def test_a_missed_check_hands_its_walk_to_the_build(setup: tuple[Path, Path]) -> None:
    root, ctx = setup
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    (ctx / "conf.txt").write_text("changed\n")
    settle()
    assert not hit(root, *argv)  # walks, and keeps the walk for the build that follows
    recorder = quick.Recorder.start(argv, str(root))
    assert recorder is not None and recorder._thread is None  # no second walk
    assert not hit(root, "--progress", "quiet", str(ctx))  # another invocation: nothing kept
    assert quick._walked == {}
    assert build(root, *argv) == 0
    assert hit(root, *argv)


def _image_file(root: Path, image: str, path: str, tmp: Path) -> str:
    from test_build_support import flatten

    return (flatten(root, image, tmp) / path.lstrip("/")).read_text()


def test_an_ignore_line_that_is_a_pattern_is_walked(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    """Issue 12, item 10: ``v]^`` looks like a path but is a pattern that excludes nothing,
    so the build reads ``v]^/f``; the check must see it change."""
    root, ctx = setup
    (ctx / "Dockerfile").write_text(f'FROM {BASE}\nCOPY ["v]^/f", "/f"]\n')
    (ctx / ".dockerignore").write_text("v]^\n")
    write_tree(ctx, {"v]^/f": "one\n"})
    settle()
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    assert build(root, *argv) == 0
    assert hit(root, *argv)
    (ctx / "v]^" / "f").write_text("two\n")
    assert not hit(root, *argv)
    settle()
    assert build(root, *argv) == 0
    assert _image_file(root, "app:1", "/f", tmp_path / "fs") == "two\n"


def test_a_link_through_an_ignored_directory_is_not_followed(
        setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12, item 10: ``x -> ign/l/file`` with ``ign/l -> ../data`` and ``ign`` ignored.
    The build used to follow the link through the ignored directory (which the check does
    not walk), so re-pointing ``ign/l`` kept the stale file. BuildKit never receives
    ``ign``, so ``x`` dangles there and the COPY fails: so it does here, before and after."""
    root, ctx = setup
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nCOPY x /x\n")
    (ctx / ".dockerignore").write_text("ign\n")
    write_tree(ctx, {"data/file": "data\n", "other/file": "other\n"})
    (ctx / "ign").mkdir()
    (ctx / "ign" / "l").symlink_to("../data")
    (ctx / "x").symlink_to("ign/l/file")
    settle()
    argv = ["--progress", "plain", "-t", "app:1", str(ctx)]
    for target in ("../data", "../other"):
        (ctx / "ign" / "l").unlink()
        (ctx / "ign" / "l").symlink_to(target)
        assert build(root, *argv) != 0
        err = capsys.readouterr().err
        assert '"/x": not found' in err
        assert ".dockerignore excludes" in err
        assert not hit(root, *argv)
