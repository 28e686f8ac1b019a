"""glibc's heap, tuned for the commands that move bulk data through Python.

Unpacking, compressing, hashing and uploading layers goes through buffers of ~1 MiB that
Python allocates and frees by the thousand (a ``read`` returns a new ``bytes``; ``tarfile``
joins its pieces into one). With glibc's defaults each free of such a buffer can give the
top of the heap back to the kernel (the trim threshold follows the largest freed mmapped
chunk, ~2 MiB), and the next allocation faults the same pages in again, zeroed: unpacking
a 315 MB layer took 225,000 minor page faults and 0.6 s of system time for 0.64-0.84 s in
all. Fixed thresholds stop that: buffers under 4 MiB come from the heap
(``M_MMAP_THRESHOLD``) and up to 16 MiB of free memory stays at the top of each heap
(``M_TRIM_THRESHOLD``): 3,600 faults and 0.32 s (docs/performance.md, section 26).
``M_TOP_PAD`` alone was tried and dropped: it also freezes glibc's adaptive mmap threshold
wherever it happens to be, and files100k's build then took three times the faults.

Only the ``dockyard`` command calls :func:`tune`: the library leaves the heap of the program
that embeds it alone (such a program may set ``MALLOC_MMAP_THRESHOLD_=4194304
MALLOC_TRIM_THRESHOLD_=16777216`` in its environment for the same effect). Any ``MALLOC_``
setting in the environment wins; so does a C library without ``mallopt`` (musl), where
nothing is done.
"""

from __future__ import annotations

import os
import sys
from typing import Final

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune"]

MMAP_THRESHOLD: Final = 4 << 20
TRIM_THRESHOLD: Final = 16 << 20
_M_TRIM_THRESHOLD: Final = -1  # <malloc.h>
_M_MMAP_THRESHOLD: Final = -3


def tune() -> bool:
    """Set glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`,
    :data:`TRIM_THRESHOLD`) unless the environment sets any of glibc's ``MALLOC_``
    parameters; whether they were set now."""
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
