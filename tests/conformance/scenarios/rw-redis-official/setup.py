"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("docker-entrypoint.sh", "#!/bin/sh\nset -e\nif [ \"${1#-}\" != \"$1\" ]; then set -- redis-server \"$@\"; fi\nexec \"$@\"\n", 0o755)
