"""bench/ratios.py's step times: the longest Dockerfile step of a `--progress plain` log
(BuildKit's and dockyard's), and the change builds' time outside it (issue 18)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

RATIOS = Path(__file__).resolve().parents[2] / "bench" / "ratios.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ratios", RATIOS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ratios = _load()

# BuildKit's plain printer (dockerd 20.10): internal vertices, digests, a vertex printed twice,
# output lines with their offsets, and an exporter that is no Dockerfile step.
BUILDKIT_LOG = """\
#1 [internal] load build definition from Dockerfile
#1 sha256:6b24b0bf4e945f74388c07fbc34a4074197a060b150443d9acd5102b9d6b3786
#1 transferring dockerfile: 32B done
#1 DONE 0.0s

#3 [internal] load metadata for docker.io/library/busybox:latest
#3 DONE 0.0s

#3 [internal] load metadata for docker.io/library/busybox:latest
#3 DONE 0.0s

#4 [d 1/3] FROM docker.io/library/busybox:latest
#4 sha256:08a03f3ffe5fba421a6403c31e153425ced631d108868f30e04985f99d69326e
#4 CACHED

#9 [b 2/3] COPY b.txt /in.txt
#9 DONE 0.0s

#10 [b 3/3] RUN sleep 2 && cp /in.txt /out.txt
#10 0.412 some output
#10 DONE 2.1s

#16 [d 3/3] RUN sleep 2 && cp /in.txt /out.txt
#16 CACHED

#18 [stage-4 6/6] RUN cat /a.txt /b.txt > /all.txt
#18 DONE 0.1s

#19 exporting to image
#19 exporting layers 3.0s done
#19 DONE 3.1s
"""

# dockyard's plain renderer: interrupted blocks (`#N ...`), CACHE MISS lines, the final line.
DOCKYARD_LOG = """\
#1 [a 1/3] FROM docker.io/library/busybox:latest
#1 ...

#4 [b 1/3] FROM docker.io/library/busybox:latest
#4 ...

#1 [a 1/3] FROM docker.io/library/busybox:latest
#1 DONE 0.0s

#2 [a 2/3] COPY a.txt /in.txt
#2 CACHED

#5 [b 2/3] COPY b.txt /in.txt
#5 CACHE MISS: COPY b.txt /in.txt: 1 file changed: b.txt (content)
#5 ...

#4 [b 1/3] FROM docker.io/library/busybox:latest
#4 DONE 0.0s

#5 [b 2/3] COPY b.txt /in.txt
#5 DONE 0.0s

#6 [b 3/3] RUN sleep 2 && cp /in.txt /out.txt
#6 CACHE MISS: RUN sleep 2 && cp /in.txt /out.txt: an earlier step changed (line 10)
#6 1.002 halfway
#6 DONE 2.1s

#18 [stage-4 6/6] RUN cat /a.txt /b.txt > /all.txt
#18 DONE 0.1s
writing image sha256:dc4049b7 as bench/wide:dockyard
"""


def test_buildkit_log_longest_dockerfile_step_not_the_exporter() -> None:
    steps = ratios.parse_steps(BUILDKIT_LOG)
    assert steps[19].title == "exporting to image" and steps[19].seconds == 3.1
    assert 4 not in steps and 16 not in steps  # CACHED: no time
    [longest] = ratios.longest_steps(BUILDKIT_LOG)
    assert (longest.vertex, longest.seconds) == (10, 2.1)
    assert longest.title == "[b 3/3] RUN sleep 2 && cp /in.txt /out.txt"


def test_dockyard_log_longest_step_and_titles_of_interrupted_blocks() -> None:
    steps = ratios.parse_steps(DOCKYARD_LOG)
    assert steps[4].title == "[b 1/3] FROM docker.io/library/busybox:latest"
    assert steps[5].title == "[b 2/3] COPY b.txt /in.txt"  # not its CACHE MISS line
    [longest] = ratios.longest_steps(DOCKYARD_LOG)
    assert (longest.vertex, longest.seconds) == (6, 2.1)
    assert longest.title == "[b 3/3] RUN sleep 2 && cp /in.txt /out.txt"


def test_unnamed_stage_titles_and_ties() -> None:
    text = ("#2 [ 2/101] RUN true\n#2 DONE 0.1s\n\n#3 [ 3/101] RUN true\n#3 DONE 0.1s\n\n"
            "#4 [stage-0 4/101] RUN true\n#4 DONE 0.0s\n\n#9 [internal] load .dockerignore\n"
            "#9 DONE 0.5s\n")
    assert [s.vertex for s in ratios.longest_steps(text)] == [2, 3]


def test_a_vertex_printed_twice_keeps_its_longest_time() -> None:
    text = "#3 [a 1/2] RUN x\n#3 DONE 0.2s\n\n#3 [a 1/2] RUN x\n#3 DONE 1.5s\n"
    assert ratios.longest_steps(text)[0].seconds == 1.5


@pytest.mark.parametrize("text", ["", "garbage\n", "#1 [a 1/1] RUN x\n#1 ERROR: failed\n",
                                  "#1 [a 1/1] RUN x\n#1 DONE soon\n", "#2 CACHED\n"])
def test_no_step_time(text: str) -> None:
    assert ratios.longest_steps(text) == []


def test_cache_hits_count_as_bench_sh_does() -> None:
    assert ratios.cache_hits(BUILDKIT_LOG) == 2
    assert ratios.cache_hits(DOCKYARD_LOG) == 1
    assert ratios.cache_hits("STEP 2/3: RUN x\n--> Using cache 1234\n") == 1


def test_default_log_dir(tmp_path: Path) -> None:
    raw = tmp_path / "results" / "raw.csv"
    raw.parent.mkdir()
    assert ratios.default_log_dir(raw, {"PEERS_WORK": "/w"}) == Path("/w/logs/bench")
    assert ratios.default_log_dir(raw, {}) == Path("/var/tmp/peers-bench/logs/bench")
    (tmp_path / "logs" / "bench").mkdir(parents=True)
    assert ratios.default_log_dir(raw, {"PEERS_WORK": "/w"}) == tmp_path / "logs" / "bench"


def _log(folder: Path, name: str, step_s: float | None, hits: int = 0) -> None:
    lines = [f"#{i + 1} [a {i + 1}/9] COPY x /x\n#{i + 1} CACHED\n" for i in range(hits)]
    if step_s is not None:
        lines.append(f"#20 [b 2/2] RUN sleep 2\n#20 DONE {step_s:.1f}s\n")
    (folder / name).write_text("\n".join(lines))


def _table(runs: list[object], folder: Path, not_after: float | None = None) -> dict[str, list[str]]:
    lines = ratios.outside_longest_step(runs, "dockyard", "docker_buildkit", folder, not_after)
    assert lines[1].startswith("|---")
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]
    return {f"{r[0]} {r[1]}": r for r in rows}


def test_outside_the_longest_step_medians_and_ratio(tmp_path: Path) -> None:
    run = ratios.Run
    runs = [run("dockyard", "wide", "change", "1", 2.25, "0"),
            run("dockyard", "wide", "change", "2", 2.23, "0"),
            run("dockyard", "wide", "change", "3", 2.24, "0"),
            run("dockyard", "wide", "cold", "1", 9.0, "0"),  # not a change build
            run("docker_buildkit", "wide", "change", "1", 2.57, "0"),
            run("docker_buildkit", "wide", "change", "2", 2.60, "0"),
            run("buildah", "wide", "change", "1", 9.0, "0")]  # neither peer
    for r in runs:
        _log(tmp_path, f"{r.peer}.{r.case}.{r.mode}.{r.run}.log", 2.1)
    rows = _table(runs, tmp_path)
    assert set(rows) == {"wide dockyard", "wide docker_buildkit"}
    assert rows["wide dockyard"][2:7] == ["3/3", "2.24", "2.10", "0.14", "0.29x"]
    assert rows["wide docker_buildkit"][2:7] == ["2/2", "2.58", "2.10", "0.48", ""]
    assert rows["wide dockyard"][7] == "[b 2/2] RUN sleep 2"


def test_missing_unparsable_and_foreign_logs_are_said_not_raised(tmp_path: Path) -> None:
    run = ratios.Run
    runs = [run("dockyard", "multistage", "change", "1", 0.30, "2"),
            run("dockyard", "multistage", "change", "2", 0.31, "2"),
            run("dockyard", "multistage", "change", "3", 0.32, "2"),
            run("dockyard", "multistage", "change", "4", 0.33, "2"),
            run("docker_buildkit", "multistage", "change", "1", 0.40, "2")]
    _log(tmp_path, "dockyard.multistage.change.1.log", 0.2, hits=2)
    # 2: no log; 3: no DONE line; 4: another run's (its hits differ)
    _log(tmp_path, "dockyard.multistage.change.3.log", None, hits=2)
    _log(tmp_path, "dockyard.multistage.change.4.log", 0.2, hits=5)
    (tmp_path / "docker_buildkit.multistage.change.1.log").mkdir()  # unreadable
    rows = _table(runs, tmp_path)
    mine = rows["multistage dockyard"]
    assert mine[2:6] == ["1/4", "0.30", "0.20", "0.10"]
    assert mine[6] == "-"  # no reference to compare with
    assert "#2: no log" in mine[7] and "#3: no step time in log" in mine[7]
    assert "#4: log has 5 hits, raw.csv 2" in mine[7]
    theirs = rows["multistage docker_buildkit"]
    assert theirs[2:7] == ["0/1", "-", "-", "-", "-"]
    assert theirs[7].startswith("#1: log unreadable")


def test_a_log_newer_than_raw_csv_is_left_out(tmp_path: Path) -> None:
    runs = [ratios.Run("dockyard", "wide", "change", "1", 2.2, "0")]
    _log(tmp_path, "dockyard.wide.change.1.log", 2.1)
    os.utime(tmp_path / "dockyard.wide.change.1.log", (2000.0, 2000.0))
    assert _table(runs, tmp_path, not_after=1000.0)["wide dockyard"][7] == (
        "#1: log newer than raw.csv")
    assert _table(runs, tmp_path, not_after=1999.5)["wide dockyard"][2] == "1/1"


RAW = """\
peer,case,mode,run,wall_s,user_s,sys_s,rc,cache_hits,size_bytes,layers,maxrss_kb
dockyard,wide,cold,1,2.36,0.25,0.18,0,0,2140160,6,33556
dockyard,wide,change,1,2.25,0.15,0.08,0,0,2140160,6,30568
docker_buildkit,wide,cold,1,2.72,0.02,0.01,0,0,1985707,6,40096
docker_buildkit,wide,change,1,2.57,0.02,0.02,0,0,1985721,6,40012
docker_buildkit,wide,change,2,,,,124,0,,,
"""


def test_main_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "results" / "raw.csv"
    raw.parent.mkdir()
    raw.write_text(RAW)
    ratios.main([str(raw), "--logs", str(tmp_path / "none")])
    out = capsys.readouterr().out
    assert "| wide | change | 2.25 | 2.57 | 0.88x |" in out
    assert "failed builds: docker_buildkit wide change #2 (rc 124)" in out
    assert f"no log folder {tmp_path / 'none'}" in out
    logs = tmp_path / "logs" / "bench"
    logs.mkdir(parents=True)
    _log(logs, "dockyard.wide.change.1.log", 2.1)
    _log(logs, "docker_buildkit.wide.change.1.log", 2.1)
    ratios.main([str(raw), "--no-age-check"])  # the folder beside results/
    out = capsys.readouterr().out
    assert f"`#N DONE` of {logs}" in out
    assert "| wide | dockyard | 1/1 | 2.25 | 2.10 | 0.15 | 0.32x |" in out
