"""Every example of docs/api.md, run in order as the page says: in an empty directory, with
``$DOCKYARD_ROOT`` naming an empty store, ``busybox.tar`` (the locally made busybox base of
tests/bases.py) and a real registry (Debian's docker-registry with Basic auth) in place of
``localhost:5000``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from test_registry_support import (
    PASSWORD,
    USER,
    Registry,
    basic_registry,
    docker_config,
    needs_registry,
)

from bases import busybox_rootfs_tar, need_runtime

pytestmark = [
    needs_registry,
    pytest.mark.skipif(need_runtime() is not None, reason=str(need_runtime())),
]

__all__ = ["basic_registry", "docker_config"]  # fixtures

DOCS = Path(__file__).parents[2] / "docs" / "api.md"


def examples() -> list[tuple[str, int, str]]:
    """``(section heading, line, code)`` of every ```python block, in page order."""
    out: list[tuple[str, int, str]] = []
    heading = "(top)"
    lines = DOCS.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.strip() == "```python":
            start = i + 1
            end = lines.index("```", start)
            out.append((heading, start + 1, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return out


def test_the_page_has_an_example_per_call() -> None:
    import dockyard

    code = "".join(c for _, _, c in examples())
    called = set(re.findall(r"dockyard\.([a-z_]+)\(", code))
    functions = {n for n in dockyard.__all__ if n[0].islower() and callable(getattr(dockyard, n))}
    assert functions <= called, f"no example calls {sorted(functions - called)}"


def test_api_md_examples_run(basic_registry: Registry, docker_config: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert (USER, PASSWORD) == ("alice", "s3cret-pw")  # the credentials the page uses
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(busybox_rootfs_tar(), work / "busybox.tar")
    monkeypatch.chdir(work)
    monkeypatch.setenv("DOCKYARD_ROOT", str(tmp_path / "store"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    namespace: dict[str, object] = {"__name__": "api_md"}
    ran = 0
    for heading, line, code in examples():
        code = code.replace("localhost:5000", basic_registry.host)
        try:
            exec(compile(code, f"docs/api.md:{line}", "exec"), namespace)
        except Exception as err:  # the page's own words, so the failure says which example
            pytest.fail(f"the example at docs/api.md:{line} ({heading}) failed: {err!r}")
        ran += 1
    out = capsys.readouterr().out
    assert ran >= 25
    # a few things the page's comments promise
    assert "miss: COPY hello.txt /srv/hello.txt" in out
    assert "['cat', '/srv/hello.txt']" in out
    assert "RemoveResult(untagged=('hello:latest',), deleted=None)" in out
    assert "\nalice\n" in out
    assert "no such image: no-such-image" in out
    assert "0 ('cat', '/srv/hello.txt') hello again" in out
