"""docker-compatible build flags against real builds (issue 14): output names, ``-q -o -``,
``--add-host``, and a bad request that costs no step."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_build_support import dockyard_cli, fresh_store, needs_runtime, write_tree

import dockyard
from dockyard.errors import UsageError

pytestmark = needs_runtime


def test_output_image_names_tag_the_image(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nLABEL a=b\n"})
    result = dockyard.build(ctx, root=root, tags=["t:1"],
                            outputs=['type=image,"name=one:1,two:2"', "type=image,name=three"])
    assert result.tags == ("t:1", "one:1", "two:2", "three")
    listed = {(i.repository, i.tag) for i in dockyard.images(root=root)
              if i.id == result.image_id}
    assert listed == {("t", "1"), ("one", "1"), ("two", "2"), ("three", "latest")}


def test_quiet_with_output_to_stdout_writes_only_the_tar(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY f /f\n", "f": "x\n"})
    cli = [*dockyard_cli(), "--root", str(root), "build"]
    out = subprocess.run([*cli, "-q", "-o", "-", str(ctx)], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        assert "f" in tar.getnames()
    reference = subprocess.run([*cli, "-q", "-o", "type=tar,dest=" + str(tmp_path / "out.tar"),
                                str(ctx)],
                               capture_output=True, check=False)
    assert reference.returncode == 0, reference.stderr
    assert out.stdout == (tmp_path / "out.tar").read_bytes()  # no id appended
    quiet = subprocess.run([*cli, "-q", str(ctx)], capture_output=True, text=True, check=True)
    assert quiet.stdout.startswith("sha256:") and quiet.stdout.count("\n") == 1


def test_add_host_reaches_run_and_the_key(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nRUN cat /etc/hosts > /hosts\n"})
    plain = dockyard.build(ctx, root=root)
    hosted = dockyard.build(ctx, root=root, add_hosts=["db.internal:10.1.2.3"])
    assert not hosted.steps[0].cached  # another /etc/hosts: another result
    out = tmp_path / "out"
    dockyard.cp(hosted.image_id, "/hosts", str(out), root=root)
    assert "10.1.2.3\tdb.internal\n" in out.read_text()
    again = dockyard.build(ctx, root=root)
    assert again.steps[0].cached and again.image_id == plain.image_id  # old keys kept


def test_a_bad_tag_costs_no_step(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nRUN echo ran > /ran\nCOPY f /f\n", "f": "x"})
    events: list[object] = []
    for bad in ({"tags": ["ok:1", "Not/Valid"]}, {"outputs": ["type=docker,tar=false"]},
                {"secrets": ["id=s,src=" + str(tmp_path / "missing")]}):
        with pytest.raises(UsageError):
            dockyard.build(ctx, root=root, on_event=events.append, **bad)  # type: ignore[arg-type]
    assert events == []
    assert dockyard.cache_ls(root=root) == ()  # no step ran, nothing was recorded
    cli = subprocess.run([*dockyard_cli(), "--root", str(root), "build", "-t", "UPPER",
                          str(ctx)], capture_output=True, text=True, check=False)
    assert cli.returncode == 2
    assert "invalid tag 'UPPER'" in cli.stderr and "#1" not in cli.stderr
