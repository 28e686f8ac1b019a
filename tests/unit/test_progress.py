"""Progress renderers: exact plain output, valid JSON lines, quiet, tty smoke, thread safety."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading

import pytest

from dockyard.errors import UsageError
from dockyard.progress.events import (
    BuildFinished,
    BuildWarning,
    CacheMissExplained,
    Event,
    VertexCached,
    VertexDone,
    VertexError,
    VertexLog,
    VertexStarted,
)
from dockyard.progress.render import (
    PlainRenderer,
    QuietRenderer,
    RawJSONRenderer,
    format_log_time,
    make_renderer,
)


def _plain(events: list[Event]) -> str:
    out = io.StringIO()
    r = PlainRenderer(out)
    for e in events:
        r.handle(e)
    r.close()
    return out.getvalue()


def test_plain_sequential_build() -> None:
    events: list[Event] = [
        VertexStarted(1, "[internal] load build definition from Dockerfile", 100.0),
        VertexDone(1, 100.05, 0.05),
        VertexStarted(2, "[1/3] FROM docker.io/library/busybox:latest", 100.1),
        VertexCached(2, 100.1),
        VertexStarted(3, "[2/3] RUN echo hi", 100.2, stage=None, instruction="RUN", line=2),
        CacheMissExplained(3, 100.2, "RUN echo hi: no previous build"),
        VertexLog(3, b"hi\n", 100.4),
        VertexLog(3, b"two\nthree\n", 100.5),
        VertexDone(3, 100.6, 0.4),
        VertexStarted(4, "[3/3] COPY a /a", 101.0),
        VertexError(4, 101.1, "failed to compute cache key: \"/a\": not found"),
        BuildFinished(101.2, None, 1.2, error="boom"),
    ]
    assert _plain(events) == (
        "#1 [internal] load build definition from Dockerfile\n"
        "#1 DONE 0.1s\n"
        "\n"
        "#2 [1/3] FROM docker.io/library/busybox:latest\n"
        "#2 CACHED\n"
        "\n"
        "#3 [2/3] RUN echo hi\n"
        "#3 CACHE MISS: RUN echo hi: no previous build\n"
        "#3 0.200 hi\n"
        "#3 0.300 two\n"
        "#3 0.300 three\n"
        "#3 DONE 0.4s\n"
        "\n"
        "#4 [3/3] COPY a /a\n"
        "#4 ERROR: failed to compute cache key: \"/a\": not found\n"
    )


def test_plain_interleaved_vertices_reprint_headers() -> None:
    events: list[Event] = [
        VertexStarted(5, "[a 1/2] RUN make", 0.0, stage="a"),
        VertexStarted(6, "[b 1/2] RUN make", 0.0, stage="b"),
        VertexLog(5, b"from a\n", 1.5),
        VertexLog(6, b"from b\n", 12.25),
        VertexDone(5, 2.0, 2.0, reason="an earlier step changed (line 3)"),
        VertexDone(6, 150.0, 150.04),
    ]
    assert _plain(events) == (
        "#5 [a 1/2] RUN make\n"
        "#5 ...\n"
        "\n"
        "#6 [b 1/2] RUN make\n"
        "#6 ...\n"
        "\n"
        "#5 [a 1/2] RUN make\n"
        "#5 1.500 from a\n"
        "#5 ...\n"
        "\n"
        "#6 [b 1/2] RUN make\n"
        "#6 12.25 from b\n"
        "#6 ...\n"
        "\n"
        "#5 [a 1/2] RUN make\n"
        "#5 CACHE MISS: an earlier step changed (line 3)\n"
        "#5 DONE 2.0s\n"
        "\n"
        "#6 [b 1/2] RUN make\n"
        "#6 DONE 150.0s\n"
    )


def test_plain_partial_lines_joined_and_flushed() -> None:
    events: list[Event] = [
        VertexStarted(1, "[1/1] RUN printf", 0.0),
        VertexLog(1, b"hel", 0.5),
        VertexLog(1, b"lo\nno newline", 0.75),
        VertexDone(1, 1.0, 1.0),
    ]
    assert _plain(events) == (
        "#1 [1/1] RUN printf\n"
        "#1 0.500 hello\n"
        "#1 0.750 no newline\n"
        "#1 DONE 1.0s\n"
    )


def test_plain_miss_before_start_and_warnings_at_end() -> None:
    events: list[Event] = [
        CacheMissExplained(2, 0.0, "COPY src/ /app/src: 1 file changed: src/main.c (content)"),
        BuildWarning("empty continuation line", 0.0, location="Dockerfile:4"),
        VertexStarted(2, "[2/2] COPY src/ /app/src", 0.0),
        VertexDone(2, 0.3, 0.3, reason="ignored, already explained"),
        BuildFinished(0.4, "sha256:" + "a" * 64, 0.4),
    ]
    assert _plain(events) == (
        "#2 [2/2] COPY src/ /app/src\n"
        "#2 CACHE MISS: COPY src/ /app/src: 1 file changed: src/main.c (content)\n"
        "#2 DONE 0.3s\n"
        "\n"
        " 1 warning found:\n"
        " - empty continuation line (Dockerfile:4)\n"
    )


def test_format_log_time_precision() -> None:
    assert format_log_time(0.1234) == "0.123"
    assert format_log_time(9.9994) == "9.999"
    assert format_log_time(42.1) == "42.10"
    assert format_log_time(123.45) == "123.5"
    assert format_log_time(-1.0) == "0.000"


def test_rawjson_one_valid_object_per_line() -> None:
    out = io.StringIO()
    r = RawJSONRenderer(out)
    events: list[Event] = [
        VertexStarted(1, "[1/2] RUN x", 1.0, stage="s", instruction="RUN", line=3),
        VertexLog(1, "héllo\n".encode() + b"\xff", 1.1),
        CacheMissExplained(1, 1.0, "ARG VERSION changed 1.0 -> 1.1"),
        VertexDone(1, 2.0, 1.0, key="sha256:k", reason="r"),
        BuildFinished(2.0, "sha256:abc", 1.0),
    ]
    for e in events:
        r.handle(e)
    r.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == len(events)
    decoded = [json.loads(line) for line in lines]
    assert [d["kind"] for d in decoded] == [e.kind for e in events]
    assert decoded[0] == {"vertex": 1, "name": "[1/2] RUN x", "time": 1.0, "stage": "s",
                          "instruction": "RUN", "line": 3, "kind": "vertex_started"}
    assert decoded[1]["data"] == "héllo\n\ufffd"
    assert decoded[2]["reason"] == "ARG VERSION changed 1.0 -> 1.1"
    assert decoded[4]["image_id"] == "sha256:abc"


def test_quiet_prints_only_image_id() -> None:
    out = io.StringIO()
    r = QuietRenderer(out)
    r.handle(VertexStarted(1, "x", 0.0))
    r.handle(VertexLog(1, b"noise\n", 0.0))
    r.handle(BuildFinished(1.0, "sha256:" + "b" * 64, 1.0))
    r.close()
    assert out.getvalue() == "sha256:" + "b" * 64 + "\n"
    failed = io.StringIO()
    q = QuietRenderer(failed)
    q.handle(BuildFinished(1.0, None, 1.0, error="x"))
    q.close()
    assert failed.getvalue() == ""


def test_make_renderer_modes() -> None:
    assert isinstance(make_renderer("plain", io.StringIO()), PlainRenderer)
    assert isinstance(make_renderer("auto", io.StringIO()), PlainRenderer)  # not a tty
    assert isinstance(make_renderer("rawjson", io.StringIO()), RawJSONRenderer)
    assert isinstance(make_renderer("quiet", io.StringIO(), stdout=io.StringIO()), QuietRenderer)
    with pytest.raises(UsageError):
        make_renderer("fancy", io.StringIO())


def test_plain_does_not_import_rich() -> None:
    code = (
        "import io, sys\n"
        "from dockyard.progress.render import make_renderer\n"
        "make_renderer('auto', io.StringIO())\n"
        "print('rich' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_tty_renderer_summary() -> None:
    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = FakeTTY()
    r = make_renderer("tty", out)
    r.handle(VertexStarted(1, "[a 1/2] RUN make", 0.0, stage="a"))
    r.handle(VertexLog(1, b"line1\nline2\n", 0.1))
    r.handle(VertexDone(1, 0.5, 0.5, reason="ARG V changed 1 -> 2"))
    r.handle(VertexStarted(2, "[a 2/2] COPY x /x", 0.6, stage="a"))
    r.handle(VertexCached(2, 0.6))
    r.handle(BuildWarning("unused build arg FOO", 0.7))
    r.handle(BuildFinished(0.8, "sha256:" + "c" * 64, 0.8))
    r.close()
    text = " ".join(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).split())
    assert "#1 [a 1/2] RUN make" in text
    assert "#2 [a 2/2] COPY x /x CACHED" in text
    assert "#1 CACHE MISS: ARG V changed 1 -> 2" in text
    assert "unused build arg FOO" in text
    assert "(2 steps, 1 cached)" in text  # no FROM among them: both count


def test_plain_thread_safe_lines_never_torn() -> None:
    out = io.StringIO()
    r = PlainRenderer(out)
    n_threads, n_lines = 4, 200

    def worker(v: int) -> None:
        r.handle(VertexStarted(v, f"[s{v} 1/1] RUN loop", 0.0))
        for i in range(n_lines):
            r.handle(VertexLog(v, f"v{v} line {i}\n".encode(), 1.0))
        r.handle(VertexDone(v, 2.0, 2.0))

    threads = [threading.Thread(target=worker, args=(v,)) for v in range(1, n_threads + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r.close()
    lines = out.getvalue().splitlines()
    for v in range(1, n_threads + 1):
        logs = [ln for ln in lines if ln.startswith(f"#{v} 1.000 ")]
        assert logs == [f"#{v} 1.000 v{v} line {i}" for i in range(n_lines)]
        assert lines.count(f"#{v} DONE 2.0s") == 1


@pytest.mark.parametrize("width", [40, 80, 200])
def test_tty_layout_at_a_fixed_width(width: int) -> None:
    """Rendered to a console of 40, 80 and 200 columns: no line is wider, every step row
    keeps its => mark and its time (a long name is cut with an ellipsis, not the time),
    CACHED stays visible, the summary is one line, and FROM is not counted as a step."""
    from dockyard.progress.tty import TTYRenderer

    out = io.StringIO()
    r = TTYRenderer(out, width=width)
    r.handle(VertexStarted(1, "[s 1/3] FROM docker.io/library/busybox:latest", 0.0, stage="s",
                           instruction="FROM"))
    r.handle(VertexDone(1, 0.1, 0.1))
    r.handle(VertexStarted(2, "[s 2/3] RUN " + "make all " * 40, 0.2, stage="s",
                           instruction="RUN"))
    r.handle(VertexDone(2, 1.5, 1.3, reason="RUN make: no earlier build"))
    r.handle(VertexStarted(3, "[s 3/3] COPY a /a", 1.6, stage="s", instruction="COPY"))
    r.handle(VertexCached(3, 1.6))
    r.handle(BuildFinished(1.7, "sha256:" + "c" * 64, 1.7))
    r.close()
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).splitlines()
    assert all(len(line) <= width for line in lines), [len(x) for x in lines]
    assert lines[0].startswith("[+] Building 1.7s (2/2)")
    rows = [line for line in lines if line.startswith("=> ")]
    assert len(rows) == 3
    assert all(re.search(r" \d+\.\ds$", row) for row in rows), rows
    assert rows[1].endswith("1.3s") and "…" in rows[1]
    assert "CACHED" in rows[2]
    assert lines[-1] == "Built in 1.7s (2 steps, 1 cached)"
