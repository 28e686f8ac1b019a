"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("docker-entrypoint.sh", "#!/bin/sh\nexec \"$@\"\n", 0o775)
write("docker-ensure-initdb.sh", "#!/bin/sh\n:\n", 0o775)
