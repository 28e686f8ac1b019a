"""Context for this scenario (see tests/conformance/ctxlib.py)."""

import os

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"a.txt": "a\n", "sub/b.txt": "b\n"})
os.chmod("sub", 0o700)
os.chmod(".", 0o750)  # the context root's own mode is not sent to BuildKit
