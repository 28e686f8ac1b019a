"""Compiled dataclass methods, kept between runs: half of ``dockyard build``'s import time.

Measured (docs/performance.md): importing what a build needs took ~125 ms, of which 63 ms
went to creating 76 dataclasses. CPython 3.11 writes each generated method (``__init__``,
``__repr__``, ``__eq__``, ``__hash__``, frozen ``__setattr__``/``__delattr__``) as source
text and compiles it with ``exec``: ~450 small compiles per start. The text of each method is
the same from run to run, so this module keeps the code objects compiled from it, keyed by
that exact text, in one ``marshal`` file beside the byte-code cache, and ``exec``\\ s the cached
code object instead. Semantics are unchanged by construction: the same text compiled the same
way, executed with the same globals and locals.

Only CPython 3.11 is patched (3.13 already builds the methods in one ``exec``); anything
unexpected (another version, a missing or corrupt file, a read-only location) falls back to
the standard path. ``install()`` must run before the first dataclass is defined.
"""

from __future__ import annotations

import atexit
import contextlib
import marshal
import os
import sys
from typing import Any

_FORMAT = "\0format"  # a key no method text can be
_installed = False
_cache: dict[str, bytes] = {}  # method text -> marshalled code, unmarshalled on use
_dirty = False


def _cache_path() -> str | None:
    explicit = os.environ.get("DOCKYARD_DCCACHE")
    if explicit:
        return explicit
    tag = sys.implementation.cache_tag
    if tag is None:
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    name = f"dataclass-methods.{tag}.marshal"
    if sys.pycache_prefix:
        return os.path.join(sys.pycache_prefix, here.lstrip(os.sep), name)
    return os.path.join(here, "__pycache__", name)


def install() -> None:
    """Patch ``dataclasses._create_fn`` to reuse compiled methods (CPython 3.11 only)."""
    global _installed
    if _installed or sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return
    import dataclasses

    original = getattr(dataclasses, "_create_fn", None)
    missing = getattr(dataclasses, "MISSING", None)
    if original is None or missing is None:
        return
    _installed = True
    path = _cache_path()
    if path is not None:
        try:
            with open(path, "rb") as f:
                loaded = marshal.load(f)
            if isinstance(loaded, dict) and loaded.pop(_FORMAT, None) == _format_tag():
                _cache.update(loaded)
        except (OSError, EOFError, ValueError, TypeError):
            pass
        # written like byte code: not under PYTHONDONTWRITEBYTECODE (unless asked for)
        if not sys.dont_write_bytecode or os.environ.get("DOCKYARD_DCCACHE"):
            atexit.register(_save, path)

    def create_fn(name: str, args: list[str], body: list[str], *,
                  globals: dict[str, Any] | None = None, locals: dict[str, Any] | None = None,
                  return_type: Any = missing) -> Any:
        # The same text as dataclasses._create_fn builds (CPython 3.11), compiled once.
        global _dirty
        if locals is None:
            locals = {}
        return_annotation = ""
        if return_type is not missing:
            locals["_return_type"] = return_type
            return_annotation = "->_return_type"
        joined_args = ",".join(args)
        joined_body = "\n".join(f"  {b}" for b in body)
        txt = f" def {name}({joined_args}){return_annotation}:\n{joined_body}"
        local_vars = ", ".join(locals.keys())
        txt = f"def __create_fn__({local_vars}):\n{txt}\n return {name}"
        blob = _cache.get(txt)
        if blob is None:
            code = compile(txt, "<string>", "exec")
            _cache[txt] = marshal.dumps(code)
            _dirty = True
        else:
            code = marshal.loads(blob)
        ns: dict[str, Any] = {}
        exec(code, globals, ns)
        return ns["__create_fn__"](**locals)

    dataclasses._create_fn = create_fn  # type: ignore[attr-defined]


def _format_tag() -> bytes:
    """This file format and the byte-code magic number: code objects are only ever loaded by
    the interpreter build that wrote them (a patch release may change the byte code)."""
    from importlib._bootstrap_external import MAGIC_NUMBER  # loaded at start-up already

    return b"1:" + MAGIC_NUMBER


_MAX_ENTRIES = 4000  # dockyard has ~80 dataclasses (~500 methods); more means churn


def _save(path: str) -> None:
    if not _dirty:
        return
    if len(_cache) > _MAX_ENTRIES:
        _cache.clear()  # start over rather than grow without bound
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            marshal.dump({**_cache, _FORMAT: _format_tag()}, f)
        os.replace(tmp, path)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
