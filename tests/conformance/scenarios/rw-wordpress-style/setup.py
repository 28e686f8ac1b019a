"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("wp-config-docker.php", "<?php // version define_version_here\n")
write("docker-entrypoint.sh", "#!/bin/sh\nexec \"$@\"\n")
