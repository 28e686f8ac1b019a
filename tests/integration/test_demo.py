"""The README's main command, scripts/demo.sh: its build path step by step through the CLI,
and the script itself end to end (with its store in a temporary directory)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_examples_support import (
    REPO,
    cli,
    cli_env,
    copy_example,
    has_run_command,
    inspect,
    needs_examples,
    shared_store,
)

pytestmark = needs_examples


def _steps(meta: Path) -> list[dict[str, object]]:
    steps: list[dict[str, object]] = json.loads(meta.read_text())["steps"]
    return steps


def test_demo_build_path(tmp_path: Path) -> None:
    """Bases, build, rebuild all cached, change one file, rebuild: the miss names the file."""
    root = shared_store()
    ctx = copy_example("multistage", tmp_path)
    meta = tmp_path / "meta.json"

    cli(root, "build", "--progress", "plain", "-t", "demo:test", "--metadata-file", str(meta),
        str(ctx))
    first = _steps(meta)
    # the metadata lists the steps (RUN, COPY, ADD, WORKDIR), in Dockerfile order across
    # stages: the same list as the API's BuildResult.steps
    assert [(s["stage"], s["instruction"]) for s in first] == [
        ("builder", "WORKDIR"), ("builder", "COPY"), ("builder", "RUN"), ("stage-1", "COPY"),
        ("stage-1", "COPY")]

    # no change: every step CACHED, and the same image
    image = inspect(root, "demo:test")
    cli(root, "build", "--progress", "plain", "-t", "demo:test", "--metadata-file", str(meta),
        str(ctx))
    again = _steps(meta)
    assert again and all(s["cached"] for s in again), again
    assert [s["key"] for s in again] == [s["key"] for s in first]
    assert inspect(root, "demo:test")["RootFS"] == image["RootFS"]

    # change one source file: its COPY misses with the file named, the rest of the chain follows
    sample = ctx / "src" / "sample.html"
    sample.write_text(sample.read_text().replace(
        "</ul>", '  <li><a href="https://example.org/new">new</a></li>\n</ul>'))
    proc = cli(root, "build", "--progress", "plain", "-t", "demo:test", "--metadata-file",
               str(meta), str(ctx))
    changed = _steps(meta)
    misses = [s for s in changed if not s["cached"]]
    assert misses, changed
    copy_src = next(s for s in changed if s["instruction"] == "COPY" and s["stage"] == "builder")
    assert copy_src["cached"] is False
    assert copy_src["reason"] == "COPY src/ ./: 1 file changed: src/sample.html (content)"
    assert "CACHE MISS: COPY src/ ./: 1 file changed: src/sample.html (content)" in proc.stderr
    run = next(s for s in changed if s["instruction"] == "RUN")
    assert re.search(r": an earlier step changed \(line \d+\)$", str(run["reason"])), run
    # the binary came out byte-identical, so the final stage's COPY --from=0 still hits
    copy_bin = next(s for s in changed if s["instruction"] == "COPY" and s["stage"] != "builder")
    assert copy_bin["cached"] is True
    copy_page = [s for s in changed if s["instruction"] == "COPY" and s["stage"] != "builder"][1]
    assert copy_page["cached"] is False

    # and the image sizes the demo compares: builder stage against final
    cli(root, "build", "--progress", "quiet", "--target", "builder", "-t", "demo:builder",
        str(ctx))
    assert inspect(root, "demo:test")["Size"] * 50 < inspect(root, "demo:builder")["Size"]


@pytest.mark.skipif(not has_run_command(), reason="dockyard run is not in this checkout yet")
def test_demo_script(tmp_path: Path) -> None:
    """scripts/demo.sh itself, with the store in tmp_path and no apt-get."""
    root = tmp_path / "store"
    env = cli_env(root, {"NO_APT": "1"})
    before = _tree(REPO / "examples" / "multistage")
    proc = subprocess.run([str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True,
                          text=True, timeout=900, check=False, cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = out.splitlines()
    # step 4: the image ran and printed its count (3 links in the sample page, then 4)
    assert "3 links" in lines
    assert "4 links" in lines
    assert "rebuild, nothing changed: 5/5 steps CACHED" in lines  # WORKDIR is a step
    assert any(re.fullmatch(
        r"#\d+ CACHE MISS: COPY src/ \./: 1 file changed: src/sample\.html \(content\)", line)
        for line in lines), out
    final = lines[-1]
    m = re.fullmatch(r"image sizes: builder stage \(linkcount:demo-builder\) ([\d.]+) MB, "
                     r"final image \(linkcount:demo\) ([\d.]+) MB: (\d+)x smaller", final)
    assert m, final
    assert float(m.group(1)) > float(m.group(2))
    # the checkout was not touched
    assert _tree(REPO / "examples" / "multistage") == before
    shutil.rmtree(root)


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}
