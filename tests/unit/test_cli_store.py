"""The store commands through dockyard.cli.main.main, on a store filled through the API."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from dockyard.cli.cmd_images import format_table, human_duration, human_size, parse_time
from dockyard.cli.main import main
from dockyard.image.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    Manifest,
    Platform,
)
from dockyard.store import ImageRecord, Store


def make_image(
    root: Path, files: dict[str, bytes], names: tuple[str, ...], created_by: str = "COPY app /app"
) -> ImageRecord:
    store = Store.open(root)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    layer = buf.getvalue()
    with store.build_lock():
        diff_id = store.blobs.put_bytes(layer)
        store.put_layer(diff_id, len(layer))
        config = ImageConfig.empty(Platform("linux", "amd64"))
        config = config.add_layer(
            diff_id, HistoryEntry(created="2024-01-01T00:00:00Z", created_by=created_by)
        )
        config = config.with_config(cmd=("/app",), env=("PATH=/bin",))
        config = config.add_history(
            HistoryEntry(
                created="2024-01-01T00:00:01Z", created_by='CMD ["/app"]', empty_layer=True
            )
        )
        config = ImageConfig.from_dict({**config.to_dict(), "created": "2024-01-01T00:00:01Z"})
        config_bytes = config.to_json()
        manifest = Manifest(
            Descriptor.of(MEDIA_TYPE_OCI_CONFIG, config_bytes),
            (Descriptor(MEDIA_TYPE_OCI_LAYER, diff_id, len(layer)),),
        )
        image = store.put_image(manifest.to_json(), config_bytes, names)
    store.close()
    return image


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _run(root: Path, *argv: str) -> int:
    return main(["--root", str(root), *argv])


def test_images_table_json_quiet(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_image(root, {"app": b"x" * 5000}, ("app:1.0", "localhost:5000/team/app"))
    assert _run(root, "images") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    rows = [line.split() for line in lines[1:]]
    assert [r[:3] for r in rows] == [
        ["app", "1.0", app.short_id],
        ["localhost:5000/team/app", "latest", app.short_id],
    ]
    assert rows[0][-1] == human_size(app.size)
    assert "ago" in lines[1]
    # columns line up: every row starts its TAG column where the header does
    col = lines[0].index("TAG")
    assert all(line[col - 1] == " " and line[col] != " " for line in lines[1:])

    assert _run(root, "images", "--format", "json") == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert objs[0]["Repository"] == "app" and objs[0]["Tag"] == "1.0"
    assert objs[0]["ID"] == app.short_id
    assert objs[0]["CreatedAt"] == "2024-01-01 00:00:01 +0000 UTC"

    assert _run(root, "images", "-q", "--no-trunc") == 0
    assert capsys.readouterr().out.split() == [app.id, app.id]

    assert _run(root, "images", "app") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].split()[:2] == ["app", "1.0"]


def test_images_shows_untagged_as_none(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(root, {"a": b"1"}, ())
    assert _run(root, "images") == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:3] == ["<none>", "<none>", image.short_id]


def test_inspect(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_image(root, {"app": b"x"}, ("app",))
    assert _run(root, "inspect", "app", app.short_id) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 2 and data[0] == data[1]
    obj = data[0]
    assert obj["Id"] == app.id
    assert obj["RepoTags"] == ["app:latest"]
    assert obj["Config"]["Cmd"] == ["/app"]
    assert obj["Config"]["Env"] == ["PATH=/bin"]
    assert obj["RootFS"]["Type"] == "layers" and len(obj["RootFS"]["Layers"]) == 1
    assert obj["Size"] == app.size
    assert obj["Manifest"]["layers"][0]["digest"] == obj["RootFS"]["Layers"][0]

    assert _run(root, "inspect", "app", "missing") == 1
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 1
    assert "no such image: missing" in captured.err


def test_history(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_cmd = "RUN " + "apt-get install -y something " * 4
    app = make_image(root, {"app": b"x" * 2000}, ("app",), created_by=long_cmd)
    assert _run(root, "history", "app") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["IMAGE", "CREATED", "CREATED", "BY"]
    assert lines[1].startswith(app.short_id)
    assert 'CMD ["/app"]' in lines[1] and "0B" in lines[1]
    assert lines[2].startswith("<missing>")
    assert "…" in lines[2] and long_cmd not in lines[2]

    assert _run(root, "history", "--no-trunc", "--format", "json", "app") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["ID"] == app.id
    assert rows[1]["CreatedBy"] == long_cmd
    assert rows[1]["Size"] == human_size(app.size)


def test_tag_and_rmi(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_image(root, {"app": b"x"}, ("app",))
    assert _run(root, "tag", "app", "reg.example/app:2") == 0
    assert _run(root, "tag", app.short_id, "other") == 0
    store = Store.open(root)
    assert store.get_image("reg.example/app:2").id == app.id
    assert store.get_image("other").id == app.id

    # an id with several names needs -f
    assert _run(root, "rmi", app.short_id) == 1
    assert "must be forced" in capsys.readouterr().err

    assert _run(root, "rmi", "other") == 0
    assert capsys.readouterr().out.splitlines() == ["Untagged: other:latest"]
    assert store.find_image("other") is None and store.find_image(app.id) is not None

    assert _run(root, "rmi", "-f", app.id) == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(out[:-1]) == ["Untagged: app:latest", "Untagged: reg.example/app:2"]
    assert out[-1] == f"Deleted: {app.id}"
    assert store.find_image(app.id) is None

    assert _run(root, "rmi", "gone") == 1
    assert "no such image: gone" in capsys.readouterr().err
    store.close()


def test_rmi_last_name_deletes_image(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_image(root, {"app": b"x"}, ("only",))
    assert _run(root, "rmi", "only") == 0
    assert capsys.readouterr().out.splitlines() == ["Untagged: only:latest", f"Deleted: {app.id}"]


def test_tag_errors(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_image(root, {"app": b"x"}, ("app",))
    assert _run(root, "tag", "app", "Bad:Name") == 2
    assert "invalid reference format" in capsys.readouterr().err
    assert _run(root, "tag", "app", "x@sha256:" + "a" * 64) == 2
    assert "digest" in capsys.readouterr().err
    assert _run(root, "tag", "nothere", "x") == 1
    assert "no such image: nothere" in capsys.readouterr().err


def test_prune(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_image(root, {"app": b"x"}, ("app",))
    gone = make_image(root, {"gone": b"y" * 4096}, ("gone",))
    assert _run(root, "rmi", "gone") == 0
    capsys.readouterr()
    assert _run(root, "prune") == 0
    out = capsys.readouterr().out
    assert "Deleted: 3 blobs" in out and "Total reclaimed space:" in out
    store = Store.open(root)
    assert not store.blobs.has(gone.id)
    assert store.blobs.has(app.id)
    assert _run(root, "prune", "--all") == 0
    assert "0 untagged images" in capsys.readouterr().out
    assert store.get_image("app").id == app.id
    store.close()


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (999, "999B"),
        (1234, "1.23kB"),
        (4_261_550, "4.26MB"),
        (77_863_040, "77.9MB"),
        (100_000_000, "100MB"),
        (999_999, "1e+03kB"),
        (5_000_000_000, "5GB"),
    ],
)
def test_human_size_matches_docker(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (45 * 60, "45 minutes"),
        (3600, "About an hour"),
        (5 * 3600, "5 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (3 * 365 * 86400, "3 years"),
    ],
)
def test_human_duration_matches_docker(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_parse_time_and_table() -> None:
    t = parse_time("2015-10-31T22:22:56.015925234Z")
    assert t is not None and t.microsecond == 15925 and t.year == 2015
    assert parse_time("garbage") is None
    table = format_table(["A", "B"], [["x", "y"], ["longer-than-ten", "z"]])
    # cell width = widest cell + 3 padding, at least 10 (Docker's tabwriter settings)
    assert table.splitlines() == [
        "A".ljust(18) + "B",
        "x".ljust(18) + "y",
        "longer-than-ten   z",
    ]
    assert format_table(["A", "B"], [["x", "y"]]).splitlines()[1] == "x".ljust(10) + "y"
