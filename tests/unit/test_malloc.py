"""dockyard._malloc: the CLI's heap tuning keeps glibc from faulting the pages of freed 1 MiB
buffers in again while a layer is unpacked (docs/performance.md, section 26)."""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dockyard import _malloc

_UNPACK = """
import resource, sys
sys.path.insert(0, {src!r})
from dockyard._malloc import tune
tuned = tune() if sys.argv[1] == "tune" else False
from dockyard.layers.apply import apply_layer
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with open(sys.argv[2], "rb") as f:
    apply_layer(f, sys.argv[3])
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _unpack(mode: str, layer: Path, dest: Path) -> tuple[bool, int]:
    src = os.path.dirname(os.path.dirname(_malloc.__file__))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _UNPACK.format(src=src), mode, str(layer), str(dest)],
        capture_output=True, text=True, check=True, env=env).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_an_unpack_does_not_fault_its_freed_buffers_in_again(tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tf:
        for i in range(48):
            info = tarfile.TarInfo(f"d/f{i}")
            info.size = 1 << 20
            tf.addfile(info, io.BytesIO(os.urandom(info.size)))
    tuned, tuned_faults = _unpack("tune", layer, tmp_path / "a")
    _, plain_faults = _unpack("plain", layer, tmp_path / "b")
    assert tuned
    # 48 MiB of file data, each MiB passing through a few fresh buffers: ~30,000 faults
    # when glibc hands the freed memory back each time
    assert plain_faults > 10_000, plain_faults
    assert tuned_faults < plain_faults // 5, (tuned_faults, plain_faults)


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert _malloc.tune() is False
