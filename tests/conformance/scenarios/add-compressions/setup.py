"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

e = [("file", "f", ("f\n", 0o644, 0, 0)), ("dir", "d", (0o755, 0, 0)), ("file", "d/g", ("g\n", 0o600, 0, 0))]
make_tar("a.tar.bz2", e, "w:bz2")
make_tar("a.tar.xz", e, "w:xz")
make_tar("a.tgz", e, "w:gz")
make_tar("a.tar.gz", e, "w:gz")
make_tar("b.tar", [("file", "b-only", ("b\n", 0o644, 0, 0))], "w")
