"""How far a file's timestamp can be trusted to tell one version of the file from the next.

A file system stores times at its own granularity: nanoseconds on ext4 with large inodes,
XFS and btrfs; whole seconds on ext4 with 128-byte inodes, ext2/3, HFS+ and some NFS
servers; 10 ms (ctime) and 2 s (mtime) on FAT. The kernel truncates every time it stores to
that granularity, so two writes in the same tick leave the same stamp, and a change made
within one tick of a recorded observation is invisible to it ("racily clean", as git calls
it).

There is no portable call that returns a file system's granularity, but the truncation makes
every stored time a whole multiple of it. :func:`granularity_ns` reads the granularity off a
time: a time that is a whole multiple of 10 ms, 1 s or 2 s is treated as coming from a file
system that coarse. On a fine-grained file system a ctime (the kernel's clock at the change,
never set by users) is such a multiple about once in ten million, which only costs one
rehash or one unrecorded up-to-date check; a coarse file system is never mistaken for a fine
one. No imports: the up-to-date check (``quick.py``) uses this before anything else loads.
"""

from __future__ import annotations

__all__ = ["granularity_ns", "settled_after"]

_TEN_MS = 10_000_000
_HUNDRED_MS = 100_000_000
_SECOND = 1_000_000_000
_TWO_SECONDS = 2_000_000_000


def granularity_ns(stamp_ns: int) -> int:
    """The coarsest timestamp granularity ``stamp_ns`` is consistent with, if it is 10 ms or
    coarser (10 ms, 100 ms, 1 s or 2 s); 0 for a finer time."""
    if stamp_ns % _TEN_MS:
        return 0
    if stamp_ns % _SECOND:
        return _TEN_MS if stamp_ns % _HUNDRED_MS else _HUNDRED_MS
    return _SECOND if stamp_ns % _TWO_SECONDS else _TWO_SECONDS


def settled_after(stamp_ns: int, margin_ns: int) -> int:
    """The first moment (ns) at which a file whose timestamp reads ``stamp_ns`` can no longer
    change without its timestamp changing too: the end of the stamp's tick (see
    :func:`granularity_ns`) plus ``margin_ns``, for the kernel's file clock that lags the
    wall clock by up to a scheduler tick. An observation made before this moment is racy."""
    return stamp_ns + granularity_ns(stamp_ns) + margin_ns
