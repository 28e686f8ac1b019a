"""Build history (``build_history``): what the last build of a Dockerfile and target
recorded per step, so the next build can say *why* a step missed.

A step's ``"files"`` (a COPY's per-file manifest, the bulk of a record) is stored compressed
and read back as a :class:`PackedManifest`, which is only decoded when used: a no-op rebuild
reads the record without parsing thousands of entries.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dockyard.store.database import Database, now

__all__ = ["BuildHistory", "PackedManifest"]


class PackedManifest(Mapping[str, Any]):
    """A build-history file manifest kept as stored (zlib'd JSON, base64) until first read."""

    __slots__ = ("_data", "packed")

    def __init__(self, packed: str) -> None:
        self.packed = packed
        self._data: dict[str, Any] | None = None

    @classmethod
    def pack(cls, files: Mapping[str, Any]) -> PackedManifest:
        """Pack a manifest (``path -> JSON value``): the same text as ``json.dumps`` of it
        with sorted keys, encoded and compressed a batch of entries at a time (the text of
        100,000 entries is ~20 MB, issue 18)."""
        import base64

        deflate = zlib.compressobj(1)
        parts = [deflate.compress(b"{")]
        # a batch at a time through the C encoder (one call per entry and per key was
        # 0.26 s of growth-4x's change build, 20,000 entries, after the build was done)
        encode = json.JSONEncoder(separators=(",", ":")).encode
        keys = sorted(files)
        for start in range(0, len(keys), _PACK_BATCH):
            batch = {key: files[key] for key in keys[start:start + _PACK_BATCH]}
            text = encode(batch)[1:-1]  # the entries, without the braces
            parts.append(deflate.compress((b"," if start else b"") + text.encode()))
        parts.append(deflate.compress(b"}"))
        parts.append(deflate.flush())
        return cls(base64.b64encode(b"".join(parts)).decode("ascii"))

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            import base64

            data: dict[str, Any] = json.loads(zlib.decompress(base64.b64decode(self.packed)))
            self._data = data
        return self._data

    def iter_items(self) -> Iterator[tuple[str, Any]]:
        """The ``(path, value)`` pairs, decoded one at a time from the packed text, so that
        a caller that only compares them (the miss explanation) never holds the whole
        manifest: 100,000 entries decoded at once took ~80 MB (issue 18)."""
        if self._data is not None:
            yield from self._data.items()
            return
        import base64
        import codecs

        raw = base64.b64decode(self.packed)
        inflate = zlib.decompressobj()
        utf8 = codecs.getincrementaldecoder("utf-8")()

        def chunks() -> Iterator[str]:
            for start in range(0, len(raw), _STREAM_CHUNK):
                text = utf8.decode(inflate.decompress(raw[start:start + _STREAM_CHUNK]))
                if text:
                    yield text
            rest = utf8.decode(inflate.flush(), final=True)
            if rest:
                yield rest

        yield from _iter_json_object(chunks())

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


_STREAM_CHUNK = 1 << 16
_PACK_BATCH = 4096


def _iter_json_object(chunks: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """The members of one JSON object whose text comes in ``chunks``, one at a time.
    ValueError for text that is not one JSON object."""
    decoder = json.JSONDecoder()
    buf = ""
    pos = 0
    source = iter(chunks)
    eof = False

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = next(source, None)
        if chunk is None:
            eof = True
            return False
        buf = buf[pos:] + chunk
        pos = 0
        return True

    def skip_ws() -> None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf) or not more():
                return

    def token() -> str:
        skip_ws()
        if pos >= len(buf):
            raise ValueError("the manifest's JSON ends early")
        return buf[pos]

    def value() -> Any:
        nonlocal pos
        skip_ws()
        while True:
            try:
                item, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                if more():
                    continue
                raise
            if end == len(buf) and not eof and more():
                continue  # a number may go on in the next chunk: decode it again whole
            pos = end
            return item

    if token() != "{":
        raise ValueError("the manifest is not a JSON object")
    pos += 1
    if token() == "}":
        return
    while True:
        key = value()
        if not isinstance(key, str) or token() != ":":
            raise ValueError("bad member in the manifest's JSON")
        pos += 1
        yield key, value()
        sep = token()
        pos += 1
        if sep == "}":
            return
        if sep != ",":
            raise ValueError("bad separator in the manifest's JSON")


def _map_steps(info: dict[str, Any], fn: Callable[[Any], Any]) -> None:
    """Apply ``fn`` to every step of a history record (a dict or list of steps), in place."""
    steps = info.get("steps")
    if isinstance(steps, dict):
        info["steps"] = {vid: fn(step) for vid, step in steps.items()}
    elif isinstance(steps, list):
        info["steps"] = [fn(step) for step in steps]


def _pack_step(step: Any) -> Any:
    if not isinstance(step, Mapping) or "files" not in step:
        return step
    out = dict(step)
    files = out.pop("files")
    if not isinstance(files, Mapping):
        return step
    if not isinstance(files, PackedManifest):
        files = PackedManifest.pack(files)
    out["files_z"] = files.packed
    return out


def _unpack_step(step: Any) -> Any:
    if isinstance(step, dict) and isinstance(step.get("files_z"), str):
        step["files"] = PackedManifest(step.pop("files_z"))
    return step


class BuildHistory:
    """The last-build records, by (Dockerfile path, target)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, dockerfile: str, target: str) -> dict[str, Any] | None:
        """What the last build of ``dockerfile`` (a path string) and ``target`` recorded."""
        row = self._db.conn.execute(
            "SELECT info FROM build_history WHERE dockerfile=? AND target=?", (dockerfile, target)
        ).fetchone()
        if row is None:
            return None
        info: dict[str, Any] = json.loads(row[0])
        _map_steps(info, _unpack_step)
        return info

    def put(self, dockerfile: str, target: str, info: Mapping[str, Any]) -> None:
        """Replace the last-build record of ``dockerfile`` and ``target`` (file manifests
        packed, see the module docstring)."""
        packed = dict(info)
        _map_steps(packed, _pack_step)
        with self._db.write(invalidates=True) as db:
            db.execute(
                "INSERT OR REPLACE INTO build_history(dockerfile, target, info, updated)"
                " VALUES (?,?,?,?)",
                (dockerfile, target, json.dumps(packed, sort_keys=True), now()),
            )
