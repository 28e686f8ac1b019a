"""``dockyard images``: list images like ``docker images``.

Also home of the small formatting helpers the store commands share (Docker's table layout,
sizes and "N units ago" durations).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

__all__ = [
    "add_arguments",
    "format_table",
    "human_duration",
    "human_size",
    "parse_time",
    "render_rows",
    "rfc3339",
    "run",
]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as Docker's tabwriter lays them out (min width 10, padding 3)."""
    all_rows = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    lines = []
    for row in all_rows:
        cells = [
            cell if i == len(row) - 1 else cell.ljust(max(10, widths[i] + 3))
            for i, cell in enumerate(row)
        ]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def human_size(size: float) -> str:
    """Docker's ``units.HumanSizeWithPrecision(size, 3)``: decimal units, 3 digits."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.3g}{units[i]}"


def human_duration(seconds: float) -> str:
    """Docker's ``units.HumanDuration``: "2 hours", "About a minute", "3 weeks"."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600 / 24 / 365)} years"


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time from a config (nanosecond fractions allowed); None if unusable."""
    if not text:
        return None
    value = text.strip().replace("z", "Z")
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    if "." in value:
        head, _, rest = value.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        value = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def since(text: str | None, now: float | None = None) -> str:
    """ "3 weeks ago" for a config time, "N/A" when there is none."""
    created = parse_time(text)
    if created is None or created.year <= 1:
        return "N/A"
    age = (now if now is not None else time.time()) - created.timestamp()
    return human_duration(max(age, 0.0)) + " ago"


def rfc3339(ts: float) -> str:
    """A unix time as RFC 3339 UTC with microseconds and a ``Z``, as Docker prints times."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def created_at(text: str | None) -> str:
    """Docker's CreatedAt form: ``2024-01-02 03:04:05 +0000 UTC``."""
    created = parse_time(text)
    if created is None:
        return ""
    return created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


# a template field -> its column header in "table ..." formats (docker's names)
HEADERS = {
    "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
    "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
    "Containers": "CONTAINERS", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE",
    "VirtualSize": "VIRTUAL SIZE", "Platform": "PLATFORM",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repository", nargs="?", help="only images of REPOSITORY[:TAG]")
    parser.add_argument("-a", "--all", action="store_true",
                        help="accepted for docker compatibility (there are no intermediate "
                             "images to hide)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only show image ids")
    parser.add_argument("--no-trunc", action="store_true", help="show full image ids")
    parser.add_argument("--digests", action="store_true", help="show a DIGEST column")
    parser.add_argument("-f", "--filter", dest="filters", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="reference=PATTERN, dangling=true|false, before=IMAGE, "
                             "since=IMAGE, label=KEY[=VALUE] (repeatable)")
    parser.add_argument(
        "--format",
        default="table",
        metavar="table|json|TEMPLATE",
        help="table (default), json (one object per line, as docker), a Go template "
             "({{.Repository}}:{{.Tag}}), or 'table TEMPLATE' for a table of those columns",
    )


def render_rows(fmt: str, rows: Sequence[dict[str, str]], headers: dict[str, str]) -> str:
    r"""Rows through a docker ``--format``: a Go template (one line per row), or ``table``
    followed by one (a header row, then columns aligned as docker's tabwriter aligns them).
    ``\t`` and ``\n`` typed as two characters mean a tab and a newline, as in docker."""
    from dockyard.cli.gotemplate import Template

    table = fmt.startswith("table")
    text = fmt[len("table"):] if table else fmt
    text = text.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    template = Template(text)
    lines = [template.render(row) for row in rows]
    if not table:
        return "".join(line + "\n" for line in lines)
    head = template.render({k: headers.get(k, k.upper()) for k in headers})
    cells = [line.split("\t") for line in [head, *lines]]
    width = max(len(c) for c in cells)
    cells = [c + [""] * (width - len(c)) for c in cells]
    return format_table(cells[0], cells[1:]) + "\n"


def run(args: argparse.Namespace) -> int:
    from dockyard import images

    rows: list[dict[str, str]] = []
    listed = images(args.repository or None, filters=args.filters, root=args.root)
    # a store with multi-platform names says which image is which (PLATFORM, "Platform")
    multi = any(image.platform for image in listed)
    for image in listed:
        rows.append(
            {
                **({"Platform": image.platform} if multi else {}),
                "Containers": "N/A",
                "CreatedAt": created_at(image.created),
                "CreatedSince": since(image.created),
                "Digest": image.digest,
                "ID": image.id if args.no_trunc else image.short_id,
                "Repository": image.repository,
                "SharedSize": "N/A",
                "Size": human_size(image.size),
                "Tag": image.tag,
                "UniqueSize": "N/A",
                "VirtualSize": human_size(image.size),
            }
        )
    if args.quiet:
        for row in rows:
            print(row["ID"])
    elif args.format == "json":
        for row in rows:
            print(json.dumps(row, sort_keys=True))
    elif args.format != "table":
        sys.stdout.write(render_rows(args.format, rows, HEADERS))
    else:
        headers = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
        table = [[r["Repository"], r["Tag"], r["ID"], r["CreatedSince"], r["Size"]] for r in rows]
        if args.digests:
            headers.insert(2, "DIGEST")
            for line, r in zip(table, rows, strict=True):
                line.insert(2, r["Digest"])
        if multi:
            headers.append("PLATFORM")
            for line, r in zip(table, rows, strict=True):
                line.append(r["Platform"])
        print(format_table(headers, table))
    return 0
