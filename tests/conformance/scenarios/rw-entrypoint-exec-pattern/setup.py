"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("entrypoint.sh", "#!/bin/sh\nset -e\n[ -f conf/app.conf ] || exit 1\nexec \"$@\"\n")
write("app.conf", "key=value\n")
