"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("docker-entrypoint.sh", "#!/bin/sh\nset -e\nexec \"$@\"\n", 0o755)
write("10-listen-on-ipv6-by-default.sh", "#!/bin/sh\n:\n", 0o775)
write("20-envsubst-on-templates.sh", "#!/bin/sh\n:\n", 0o755)
write("nginx.conf", "user nginx;\nworker_processes auto;\n")
write("default.conf", "server { listen 80; }\n")
