"""``images --filter``: docker's image filters over the listing.

* ``reference=PATTERN``: the familiar ``name:tag``, or the name alone, matches PATTERN as
  Go's ``path.Match`` does (``*`` stops at ``/``); several are OR'ed;
* ``dangling=true|false``: images with no tag (listed as ``<none>``), or with one;
* ``before=IMAGE`` / ``since=IMAGE``: created before / after IMAGE (a name, id or prefix);
* ``label=KEY`` or ``label=KEY=VALUE``: the image config has the label (with that value);
  several must all match.

Different keys must all match, as docker's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dockyard.errors import UsageError

if TYPE_CHECKING:
    from dockyard._api._images import ImageSummary

__all__ = ["KEYS", "apply_filters", "parse_filters", "path_match"]

KEYS = ("before", "dangling", "label", "reference", "since")


def parse_filters(items: Sequence[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` strings grouped by key; an unknown key or a bad value is a UsageError."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise UsageError(f"bad format of filter (expected name=value): {item!r}")
        if key not in KEYS:
            raise UsageError(f"invalid filter {key!r} (images takes: {', '.join(KEYS)})")
        if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
            raise UsageError(f"invalid filter 'dangling={value}': expected true or false")
        out.setdefault(key, []).append(value)
    if len({v.lower() in ("true", "1") for v in out.get("dangling", [])}) > 1:
        raise UsageError("dangling: give true or false, not both")
    return out


def path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` never match ``/``; ``[...]`` classes, ``\\``
    escapes. A malformed pattern matches nothing (docker ignores the error)."""
    regex = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            regex.append("[^/]*")
        elif c == "?":
            regex.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            regex.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("^", "]") else i + 1)
            if end < 0:
                return False
            body = pattern[i + 1:end]
            if body.startswith("^"):
                body = "^" + body[1:].replace("\\", "\\\\")
            else:
                body = body.replace("\\", "\\\\")
            regex.append(f"(?!/)[{body}]")
            i = end
        else:
            regex.append(re.escape(c))
        i += 1
    try:
        return re.fullmatch("".join(regex), name) is not None
    except re.error:
        return False


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    value = text.strip().replace("Z", "+00:00")
    if "." in value:  # nanoseconds: Python takes six digits
        head, _, rest = value.partition(".")
        digits = re.match(r"\d*", rest)
        frac = digits.group(0) if digits else ""
        value = f"{head}.{frac[:6].ljust(6, '0')}{rest[len(frac):]}"
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def apply_filters(
    rows: Sequence[ImageSummary],
    filters: Mapping[str, list[str]],
    created_of: Callable[[str], str | None],
    labels_of: Callable[[str], Mapping[str, str]],
) -> tuple[ImageSummary, ...]:
    """The rows every filter keeps. ``created_of(image)`` is the created time of a
    before/since image (raises NotFoundError); ``labels_of(image_id)`` an image's labels."""
    keep = list(rows)
    if "reference" in filters:
        patterns = filters["reference"]

        def matches(row: ImageSummary) -> bool:
            if row.repository == "<none>":
                return False
            full = row.repository + (f":{row.tag}" if row.tag != "<none>" else "")
            return any(path_match(p, full) or path_match(p, row.repository) for p in patterns)

        keep = [r for r in keep if matches(r)]
    if "dangling" in filters:
        want = filters["dangling"][0].lower() in ("true", "1")
        keep = [r for r in keep if (r.tag == "<none>") == want]
    for key in ("before", "since"):
        for image in filters.get(key, []):
            pivot = _time(created_of(image))
            if pivot is None:
                keep = []
                continue
            keep = [r for r in keep if (t := _time(r.created)) is not None
                    and (t < pivot if key == "before" else t > pivot)]
    for label in filters.get("label", []):
        name, has_value, value = label.partition("=")
        cache: dict[str, Mapping[str, Any]] = {}

        def has(row: ImageSummary, name: str = name, has_value: str = has_value,
                value: str = value, cache: dict[str, Mapping[str, Any]] = cache) -> bool:
            if row.id not in cache:
                cache[row.id] = labels_of(row.id)
            labels = cache[row.id]
            return name in labels and (not has_value or labels[name] == value)

        keep = [r for r in keep if has(r)]
    return tuple(keep)
