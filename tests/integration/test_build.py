"""End-to-end builds through the CLI: --metadata-file, progress output that explains misses,
the image config and history."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_build_support import (
    build,
    dockyard_cli,
    fresh_store,
    image_config,
    needs_runtime,
    write_tree,
)

pytestmark = needs_runtime

MULTI = """\
FROM busybox AS builder
WORKDIR /src
COPY main.c .
RUN cp main.c main.o
FROM busybox AS other
ADD extra.txt /extra.txt
FROM busybox
ENV APP=1
COPY --from=builder /src/main.o /app/main.o
COPY --from=other /extra.txt /app/
RUN ls /app > /app/listing
CMD ["/app/main.o"]
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fresh_store(tmp_path / "store")


def _cli_build(root: Path, ctx: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*dockyard_cli(), "--root", str(root), "build", *args, str(ctx)],
        capture_output=True, text=True, timeout=120,
    )


def _objects_with_key(obj: Any, key: str) -> list[Any]:
    found: list[Any] = []
    if isinstance(obj, dict):
        if key in obj:
            found.append(obj)
        for value in obj.values():
            found.extend(_objects_with_key(value, key))
    elif isinstance(obj, list):
        for value in obj:
            found.extend(_objects_with_key(value, key))
    return found


def test_metadata_file(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": MULTI, "main.c": "int main;\n",
                                        "extra.txt": "extra\n"})
    meta_path = tmp_path / "meta.json"
    proc = _cli_build(root, ctx, "--progress", "plain", "-t", "meta:1", "--jobs", "2",
                      "--metadata-file", str(meta_path))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(meta_path.read_text())
    inspect = json.loads(subprocess.run(
        [*dockyard_cli(), "--root", str(root), "inspect", "meta:1"],
        capture_output=True, text=True, check=True).stdout)[0]
    assert meta["containerimage.config.digest"] == inspect["Id"]
    assert meta["containerimage.digest"].startswith("sha256:")
    manifest_blob = root / "blobs" / "sha256" / meta["containerimage.digest"].split(":")[1]
    manifest = json.loads(manifest_blob.read_text())
    assert manifest["config"]["digest"] == meta["containerimage.config.digest"]
    assert "meta:1" in meta["image.name"]
    steps = meta["steps"]
    # every step, WORKDIR included (the API's BuildResult.steps), FROM not
    assert [(s["stage"], s["instruction"], s["location"]["line"]) for s in steps] == [
        ("builder", "WORKDIR", 2), ("builder", "COPY", 3), ("builder", "RUN", 4),
        ("other", "ADD", 6),
        ("stage-2", "COPY", 9), ("stage-2", "COPY", 10), ("stage-2", "RUN", 11),
    ]
    for s in steps:
        assert set(s) == {"stage", "instruction", "location", "cached", "key", "reason"}
        assert s["cached"] is False
        assert s["location"]["file"] == "Dockerfile"
        assert s["key"].startswith("sha256:")
        assert "no earlier build" in s["reason"]
    assert _objects_with_key(meta, "cached") == steps

    (ctx / "main.c").write_text("int main = 2;\n")
    proc = _cli_build(root, ctx, "--progress", "plain", "-t", "meta:2",
                      "--metadata-file", str(meta_path))
    assert proc.returncode == 0, proc.stderr
    steps = json.loads(meta_path.read_text())["steps"]
    assert steps[0]["instruction"] == "WORKDIR" and steps[0]["cached"] is True
    steps = steps[1:]
    assert [s["cached"] for s in steps] == [False, False, True, False, False, False]
    assert steps[2]["reason"] is None
    assert "main.c (content)" in steps[0]["reason"]
    assert "main.o (content)" in steps[3]["reason"]
    assert "an earlier step changed (line 9)" in steps[4]["reason"]
    assert "an earlier step changed (line 9)" in steps[5]["reason"]
    # the plain progress shows the same
    assert "CACHE MISS: COPY main.c .: 1 file changed: main.c (content)" in proc.stderr
    assert proc.stderr.count(" CACHED") >= 2


def test_rawjson_progress_carries_reasons(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY f /f\nRUN cat /f\n",
                                        "f": "1\n"})
    assert _cli_build(root, ctx, "--progress", "plain").returncode == 0
    (ctx / "f").write_text("2\n")
    proc = _cli_build(root, ctx, "--progress", "rawjson")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    misses = [e for e in events if e["kind"] == "cache_miss"]
    assert [m["reason"] for m in misses] == [
        "COPY f /f: 1 file changed: f (content)",
        "RUN cat /f: an earlier step changed (line 2)",
    ]
    assert events[-1]["kind"] == "build_finished" and events[-1]["image_id"]


def test_config_and_history(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": MULTI, "main.c": "x\n",
                                        "extra.txt": "extra\n"})
    built = build(ctx, root, tags=["cfg"], labels={"org.test": "yes"})
    config = image_config(root, "cfg")
    assert config == built.result.config
    inner = config["config"]
    assert "APP=1" in inner["Env"]
    assert inner["Cmd"] == ["/app/main.o"]
    assert inner["Labels"] == {"org.test": "yes"}
    history = config["history"]
    layers = [h for h in history if not h.get("empty_layer")]
    assert len(layers) == len(config["rootfs"]["diff_ids"])
    created_by = [h.get("created_by", "") for h in history]
    assert "ENV APP=1" in created_by
    # BuildKit's form: the argv as run (runCommandString), build args first when declared
    assert any(c.startswith("RUN /bin/sh -c ls /app > /app/listing") for c in created_by)
    assert created_by[-1] == 'CMD ["/app/main.o"]'
    # nothing of the builder stage is in the final image's history
    assert not any("main.c" in c for c in created_by)
