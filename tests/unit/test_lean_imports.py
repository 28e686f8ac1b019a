"""The import path of a build before its first cache lookup stays lean (issue 18): the
modules every build loads early (the store, the --output spec, the selection digest) must
not pull in the snapshot's mount code, the tar writer, the exporters, the compressors,
``concurrent.futures`` (and so ``logging``) or ``email``. Each check runs in a fresh
interpreter, so what other tests imported does not count."""

from __future__ import annotations

import subprocess
import sys

import pytest

EARLY = ("dockyard.store.db", "dockyard.exporter.spec", "dockyard.context.hashing",
         "dockyard.context.fetch", "dockyard.snapshot")
LATE = ("dockyard.snapshot.overlay", "dockyard.snapshot.base", "dockyard.layers.tarwriter",
        "dockyard.exporter.layout", "dockyard.exporter.flatten", "dockyard.exporter.load",
        "tarfile", "concurrent.futures", "logging", "email.utils", "ctypes")


@pytest.mark.parametrize("module", EARLY)
def test_an_early_module_loads_no_late_one(module: str) -> None:
    code = (f"import sys, {module}\n"
            f"print(' '.join(m for m in {LATE!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "", f"importing {module} loads {out}"


def test_the_lazy_names_still_resolve() -> None:
    from dockyard import exporter, snapshot

    assert exporter.read_image.__module__ == "dockyard.exporter._stored"
    assert exporter.ArchiveImage.__module__ == "dockyard.exporter.layout"
    assert snapshot.OverlaySnapshotter.__module__ == "dockyard.snapshot.overlay"
    assert snapshot.Mount.__module__ == "dockyard.snapshot.base"
    with pytest.raises(AttributeError):
        _ = exporter.no_such_name  # type: ignore[attr-defined]
