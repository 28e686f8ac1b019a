"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("src/app.sh", "#!/bin/sh\necho app\n")
write("tests/run.sh", "echo ok\n")
