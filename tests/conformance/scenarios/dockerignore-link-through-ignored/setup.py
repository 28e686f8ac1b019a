"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"data/file": "data\n", ".dockerignore": "ign\n"})
mkdir("ign")
symlink("../data", "ign/l")
symlink("ign/l/file", "x")
