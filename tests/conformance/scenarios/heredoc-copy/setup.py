"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("greeting", "hello world\n")
write("literal", "no $NAME expansion\n")
write("hi", "#!/bin/sh\necho hi\n")
