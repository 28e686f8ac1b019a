"""The ustar header encoder, made faster for the layer diff (docs/performance.md section 20),
writes exactly what the field-by-field encoder before it wrote (kept here as the reference),
for any fields: PAX headers for what does not fit, long and non-ASCII names and link
targets, devices, xattrs."""

from __future__ import annotations

import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.layers import _tarfmt
from dockyard.layers._tarfmt import BLOCK, encode_header

_LIMITS = {8: 8**7, 12: 8**11}


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _fits(value: int, width: int) -> bool:
    return 0 <= value < _LIMITS[width]


def _reference_ustar(
    *, name: bytes, typeflag: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
    linkname: bytes, devmajor: int, devminor: int,
) -> bytes:
    header = bytearray(BLOCK)
    header[0 : len(name)] = name
    header[100:108] = _octal(mode, 8)
    header[108:116] = _octal(uid, 8)
    header[116:124] = _octal(gid, 8)
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(mtime, 12)
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[157 : 157 + len(linkname)] = linkname
    header[257:265] = b"ustar\x0000"
    header[329:337] = _octal(devmajor if _fits(devmajor, 8) else 0, 8)
    header[337:345] = _octal(devminor if _fits(devminor, 8) else 0, 8)
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


NAMES = st.text(st.sampled_from("ab/é.-x"), min_size=1, max_size=140)
INTS = st.one_of(st.integers(0, 4000), st.integers(0, 2**40))


@settings(max_examples=300)
@given(name=NAMES, link=st.one_of(st.just(""), NAMES),
       typeflag=st.sampled_from([b"0", b"1", b"2", b"3", b"4", b"5", b"6"]),
       mode=st.integers(0, 0o7777), uid=INTS, gid=INTS, size=INTS, mtime=INTS,
       dev=st.tuples(INTS, INTS),
       xattrs=st.dictionaries(st.sampled_from(["user.a", "trusted.b"]),
                              st.binary(max_size=20), max_size=2))
def test_the_header_is_the_reference_encoders(
    name: str, link: str, typeflag: bytes, mode: int, uid: int, gid: int, size: int,
    mtime: int, dev: tuple[int, int], xattrs: dict[str, bytes],
) -> None:
    fields = dict(name=name, typeflag=typeflag, mode=mode, uid=uid, gid=gid, size=size,
                  mtime=mtime, linkname=link, devmajor=dev[0], devminor=dev[1],
                  xattrs=xattrs)
    fast = encode_header(**fields)  # type: ignore[arg-type]
    original = _tarfmt._ustar
    _tarfmt._ustar = _reference_ustar  # type: ignore[assignment]
    try:
        reference = encode_header(**fields)  # type: ignore[arg-type]
    finally:
        _tarfmt._ustar = original
    assert fast == reference
    assert len(fast) % BLOCK == 0


def test_tarfile_reads_the_header() -> None:
    raw = encode_header(name="dir/file", typeflag=b"0", mode=0o4755, uid=5, gid=6, size=0,
                        mtime=1_700_000_000)
    with tarfile.open(fileobj=io.BytesIO(raw + bytes(1024))) as tf:
        member = tf.getmembers()[0]
    assert (member.name, member.mode, member.uid, member.gid, member.mtime) == (
        "dir/file", 0o4755, 5, 6, 1_700_000_000)
