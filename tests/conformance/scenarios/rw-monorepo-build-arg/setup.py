"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"shared/header": "#!/bin/sh\n", "services/api/main": "echo api\n", "services/worker/main": "echo worker\n"})
