"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("requirements.txt", "numpy==1.26.0\nattrs==23.1.0\n")
