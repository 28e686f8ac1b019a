"""The examples in examples/, built with the Python API (``dockyard.build``) and the scripts
they ship, against bases made by scripts/make-bases.sh."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_examples_support import (
    EXAMPLES,
    cli,
    cli_env,
    copy_example,
    has_run_command,
    image_has,
    inspect,
    make_bases,
    needs_examples,
    run_image,
    shared_store,
)

import dockyard

pytestmark = needs_examples

needs_run = pytest.mark.skipif(not has_run_command(), reason="dockyard run is not in this checkout yet")

SAMPLE_LINKS = 3  # the <a href> elements in examples/multistage/src/sample.html


def test_multistage_copies_only_the_binary(tmp_path: Path) -> None:
    root = shared_store()
    ctx = copy_example("multistage", tmp_path)
    result = dockyard.build(ctx, tags=["ex-multistage:test"], root=root)

    copies = [s for s in result.steps if s.instruction == "COPY" and s.stage != "builder"]
    assert [s.line for s in copies] == [
        _line_of(ctx / "Dockerfile", "COPY --from=0"),
        _line_of(ctx / "Dockerfile", "COPY --from=builder"),
    ]
    config = inspect(root, "ex-multistage:test")
    assert config["Id"] == result.image_id
    assert config["Config"]["Cmd"] == [
        "/usr/local/bin/linkcount", "-l", "/usr/share/linkcount/sample.html"]
    assert image_has(root, "ex-multistage:test", "/usr/local/bin/linkcount", tmp_path)
    assert image_has(root, "ex-multistage:test", "/usr/share/linkcount/sample.html", tmp_path)
    # the compiler and the sources stayed in the builder stage
    assert not image_has(root, "ex-multistage:test", "/usr/bin/gcc", tmp_path)
    assert not image_has(root, "ex-multistage:test", "/src/linkcount.c", tmp_path)

    # the binary is static: it runs on the host too, and counts the sample's links
    binary = tmp_path / "linkcount"
    cli(root, "cp", "ex-multistage:test:/usr/local/bin/linkcount", str(binary))
    out = subprocess.run([str(binary), "-l", str(ctx / "src" / "sample.html")],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == f"{SAMPLE_LINKS} links"
    assert "commented-out.html" not in out


@needs_run
def test_multistage_runs(tmp_path: Path) -> None:
    root = shared_store()
    ctx = copy_example("multistage", tmp_path)
    dockyard.build(ctx, tags=["ex-multistage:run"], root=root)
    out = run_image(root, "ex-multistage:run").stdout
    assert out.splitlines()[-1] == f"{SAMPLE_LINKS} links"
    assert "https://www.debian.org/" in out.splitlines()


def test_builder_pattern_script(tmp_path: Path) -> None:
    root = shared_store()
    proc = subprocess.run(
        [str(EXAMPLES / "builder-pattern" / "build.sh"), "ex-builder-pattern:test"],
        env=cli_env(root), capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "built ex-builder-pattern:test" in proc.stdout
    build_image = inspect(root, "linkcount-build:latest")
    final = inspect(root, "ex-builder-pattern:test")
    # the runtime image is busybox plus the binary and the page: two COPY layers on busybox
    busybox = inspect(root, "busybox:latest")
    assert final["RootFS"]["Layers"][:1] == busybox["RootFS"]["Layers"]
    assert len(final["RootFS"]["Layers"]) == 3
    assert final["Size"] < build_image["Size"] / 20
    # the binary that was copied out is the one the build image made
    a, b = tmp_path / "a", tmp_path / "b"
    cli(root, "cp", "linkcount-build:latest:/out/linkcount", str(a))
    cli(root, "cp", "ex-builder-pattern:test:/usr/local/bin/linkcount", str(b))
    assert a.read_bytes() == b.read_bytes()
    assert not image_has(root, "ex-builder-pattern:test", "/usr/bin/gcc", tmp_path)


def test_distroless_has_no_shell_and_a_non_root_user(tmp_path: Path) -> None:
    root = shared_store()
    ctx = copy_example("multistage", tmp_path)
    dockerfile = str(EXAMPLES / "distroless" / "Dockerfile")
    final = dockyard.build(ctx, dockerfile=dockerfile, tags=["ex-distroless:test"], root=root)
    builder = dockyard.build(ctx, dockerfile=dockerfile, target="builder",
                             tags=["ex-distroless:builder"], root=root)
    assert final.image_id != builder.image_id

    info = inspect(root, "ex-distroless:test")
    assert info["Config"]["User"] == "65532:65532"
    assert info["Config"]["Entrypoint"] == ["/usr/local/bin/linkcount"]
    assert info["Config"]["Cmd"] == ["-l", "sample.html"]
    for path in ("/bin/sh", "/bin/busybox", "/bin", "/usr/bin/gcc"):
        assert not image_has(root, "ex-distroless:test", path, tmp_path), path
    assert image_has(root, "ex-distroless:test", "/etc/ssl/certs/ca-certificates.crt", tmp_path)

    passwd = tmp_path / "passwd"
    cli(root, "cp", "ex-distroless:test:/etc/passwd", str(passwd))
    assert passwd.read_text().splitlines() == [
        "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin"]
    # the sample the user reads is the user's own (--chown)
    listing = cli(root, "export", "ex-distroless:test", "-o", str(tmp_path / "fs.tar"))
    del listing
    import tarfile

    with tarfile.open(tmp_path / "fs.tar") as tar:
        sample = tar.getmember("home/nonroot/sample.html")
    assert (sample.uid, sample.gid) == (65532, 65532)

    sizes = inspect(root, "ex-distroless:builder")["Size"], info["Size"]
    assert sizes[1] * 50 < sizes[0], sizes


@needs_run
def test_distroless_runs_as_65532(tmp_path: Path) -> None:
    root = shared_store()
    ctx = copy_example("multistage", tmp_path)
    dockyard.build(ctx, dockerfile=str(EXAMPLES / "distroless" / "Dockerfile"),
                   tags=["ex-distroless:run"], root=root)
    out = run_image(root, "ex-distroless:run").stdout
    assert out.splitlines()[-1] == f"{SAMPLE_LINKS} links"
    # no shell in the image: a shell command cannot run
    proc = cli(root, "run", "--entrypoint", "/bin/sh", "ex-distroless:run", "-c", "id -u",
               check=False)
    assert proc.returncode != 0
    # the process runs as 65532: ask a busybox added on top (the image has no tool to ask)
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "Dockerfile").write_text(
        "FROM ex-distroless:run\nCOPY --from=busybox:latest /bin/busybox /probe/busybox\n")
    dockyard.build(probe, tags=["ex-distroless:probe"], root=root)
    ids = cli(root, "run", "--entrypoint", "/probe/busybox", "ex-distroless:probe",
              "id").stdout.strip()
    assert ids.startswith("uid=65532(nonroot) gid=65532(nonroot)"), ids


def test_cache_walkthrough(tmp_path: Path) -> None:
    root = shared_store()
    proc = subprocess.run(
        [str(EXAMPLES / "cache" / "walkthrough.sh")], env=cli_env(root),
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sections = _sections(proc.stdout)

    touched = sections["touch hello.txt (new mtime, same content): still cached"]
    assert _results(touched) == ["CACHED", "CACHED", "CACHED"]
    changed = _results(sections["change hello.txt: the COPY misses and names the file; "
                                "the RUN after it follows"])
    assert changed[0] == "CACHED"  # WORKDIR
    assert changed[1] == "CACHE MISS: COPY . .: 1 file changed: hello.txt (content)"
    assert re.fullmatch(r"CACHE MISS: RUN .*: an earlier step changed \(line \d+\)", changed[2])

    stale = _results(sections["Rule 2: a RUN that fetches stays cached, even when what it "
                              "fetched is stale"])
    assert stale[-1] == "CACHED"
    ttl = _results(sections["--cache-ttl 2s refreshes RUN results older than that"])
    assert ttl == [ttl[0]] and ttl[0].endswith(": older than --cache-ttl 2s")
    no_cache = _results(sections["--no-cache refreshes everything"])
    assert no_cache == [no_cache[0]] and no_cache[0].endswith(": --no-cache")

    late = _results(sections["add main.py: the late order re-runs the slow install ..."])
    assert late[1] == "CACHE MISS: COPY . .: 1 file changed: main.py (added)"
    assert late[2].startswith("CACHE MISS: RUN sleep 2")
    early = _results(sections["... the early order keeps it cached and only copies again"])
    assert early == ["CACHED", "CACHED", "CACHED",
                     "CACHE MISS: COPY . .: 1 file changed: main.py (added)"]


def test_reproducible_across_stores_and_checkouts(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Two clean stores, two separate copies of the sources (different paths and mtimes),
    SOURCE_DATE_EPOCH set: the same image id (config digest) and manifest digest."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    results = []
    for n in (1, 2):
        store = make_bases(tmp_path / f"store{n}")
        ctx = copy_example("multistage", tmp_path / f"checkout{n}")
        stamp = 1_600_000_000 + n * 1000  # different file times in each checkout
        for path in [ctx, *ctx.rglob("*")]:
            os.utime(path, (stamp, stamp), follow_symlinks=False)
        results.append(dockyard.build(ctx, tags=["repro:1"], root=store))
        assert not any(s.cached for s in results[-1].steps)  # really built, twice
    first, second = results
    assert first.image_id == second.image_id
    assert first.manifest_digest == second.manifest_digest
    assert [s.key for s in first.steps] == [s.key for s in second.steps]
    for n in (1, 2):  # two stores with a Debian base each: do not keep them around
        shutil.rmtree(tmp_path / f"store{n}")


# ---------------------------------------------------------------------------------- helpers
def _line_of(path: Path, prefix: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith(prefix):
            return number
    raise AssertionError(f"{prefix!r} not in {path}")


def _sections(out: str) -> dict[str, list[str]]:
    """walkthrough.sh output: '== title' -> the lines below it."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("== "):
            current = sections.setdefault(line[3:], [])
        else:
            current.append(line.strip())
    return sections


def _results(lines: list[str]) -> list[str]:
    """The cache result of each step: 'CACHED' or 'CACHE MISS: why' (the '#N ' cut off)."""
    out = []
    for line in lines:
        m = re.match(r"#\d+ (CACHED|CACHE MISS: .*)$", line)
        if m:
            out.append(m.group(1))
    return out


