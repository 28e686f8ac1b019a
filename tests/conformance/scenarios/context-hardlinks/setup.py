"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("pair/one", "same inode\n")
hardlink("pair/one", "pair/two")
write("solo", "solo\n")
hardlink("solo", "other/solo-link")
