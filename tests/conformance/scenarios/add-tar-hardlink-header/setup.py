"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

make_tar("links.tar", [("file", "f", ("data\n", 0o640, 1234, 5678)),
                       ("hardlink", "g", ("f", 0o600, 42, 43))], "w")
