"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

mkdir("tree/private", 0o700)
mkdir("tree/shared", 0o2775)
mkdir("tree/sticky", 0o1777)
write("tree/private/secret", "s", 0o600)
write("tree/shared/script.sh", "#!/bin/sh\n", 0o755)
write("tree/suid", "s", 0o4755)
write("tree/ro", "r", 0o444)
write("tree/sticky/f", "f", 0o666)
