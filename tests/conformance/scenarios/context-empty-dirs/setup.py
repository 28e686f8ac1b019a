"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

mkdir("empty")
mkdir("nested/a/b/c")
mkdir("nested/d", 0o750)
write("file", "f")
