"""The shared build cache's pure parts: ``--cache-from``/``--cache-to`` specs, the cache
document (format, validation, merging), the chain of cache backends, and the registry
client's retries against a small loopback server that fails on purpose."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.errors import RegistryError, UsageError
from dockyard.image.oci import InvalidDocument
from dockyard.registry.buildcache import (
    FORMAT,
    CacheDocument,
    CacheSpec,
    parse_cache_spec,
    select_records,
)
from dockyard.registry.client import RegistryClient, RegistryOptions
from dockyard.solver.cache import ChainCache, ImportedCache
from dockyard.solver.keys import KEY_VERSION
from dockyard.store.db import CacheRecord, RemoteBlob, Store


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


# ------------------------------------------------------------------ specs


def test_specs_as_buildx_spells_them() -> None:
    assert parse_cache_spec("reg.example/app:cache", export=False) == CacheSpec(
        "registry", ref="reg.example/app:cache")
    spec = parse_cache_spec("type=registry,ref=r:5000/a/b:c,mode=max,compression=zstd,"
                            "oci-mediatypes=true,ignore-error=true,image-manifest=true",
                            export=True)
    assert (spec.type, spec.ref, spec.mode, spec.compression, spec.ignore_error) == (
        "registry", "r:5000/a/b:c", "max", "zstd", True)
    local = parse_cache_spec("type=local,dest=/tmp/c,tag=main", export=True)
    assert (local.path, local.tag, local.mode) == ("/tmp/c", "main", "min")
    assert parse_cache_spec("type=local,src=/tmp/c", export=False).path == "/tmp/c"
    assert parse_cache_spec("type=inline", export=True).type == "inline"
    assert parse_cache_spec('"type=local","dest=/a,b"', export=True).path == "/a,b"


@pytest.mark.parametrize(("text", "export", "message"), [
    ("", True, "empty value"),
    ("type=registry", True, "needs ref="),
    ("type=registry,ref=a/b,mode=all", True, "mode must be min or max"),
    ("type=registry,ref=a/b,compression=lz4", True, "compression must be gzip or zstd"),
    ("type=registry,ref=a/b,compression=zstd,oci-mediatypes=false", True, "oci-mediatypes"),
    ("type=registry,ref=a/b,oci-mediatypes=maybe", True, "not a boolean"),
    ("type=s3,bucket=x", True, "unknown key 'bucket'"),
    ("type=s3", True, "BuildKit services"),
    ("type=local", True, "needs dest=DIR"),
    ("type=local,dest=/x", False, "needs src=DIR"),
    ("type=inline", False, "type=inline is for --cache-to"),
    ("type=inline,mode=max", True, "mode=min only"),
    ("type=registry,ref=a/b,nonsense", True, "is not key=value"),
])
def test_bad_specs(text: str, export: bool, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_cache_spec(text, export=export)


# ------------------------------------------------------------------ the document


def record(key: int, layer: int | None, created: float = 1.5) -> CacheRecord:
    return CacheRecord(key=d(key), diff_id=d(layer) if layer is not None else None,
                       chain_id=None, result={"instruction": "RUN"}, description=f"step {key}",
                       created=created)


def blob(layer: int) -> dict[str, Any]:
    return {"digest": d(1000 + layer), "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "size": 10 + layer, "diffSize": 100 + layer}


def document(keys: dict[int, int | None]) -> CacheDocument:
    doc = CacheDocument()
    for key, layer in keys.items():
        doc.add(record(key, layer), blob(layer) if layer is not None else None)
    return doc


def test_document_round_trip_and_format() -> None:
    doc = document({1: 10, 2: None, 3: 10})
    data = json.loads(doc.to_json())
    assert data["format"] == FORMAT and data["keys"] == KEY_VERSION
    assert doc.to_json() == json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    again = CacheDocument.from_json(doc.to_json(), "t")
    assert again.records == doc.records and again.layers == doc.layers
    records = again.cache_records()
    assert records[d(1)].diff_id == d(10) and records[d(1)].created == 1.5
    assert records[d(2)].diff_id is None


def test_documents_that_cannot_be_used() -> None:
    good = json.loads(document({1: 10}).to_json())
    with pytest.raises(InvalidDocument, match="unknown format"):
        CacheDocument.from_obj({**good, "format": "other"}, "t")
    broken = json.loads(json.dumps(good))
    del broken["layers"][d(10)]
    with pytest.raises(InvalidDocument, match="does not carry"):
        CacheDocument.from_obj(broken, "t")
    with pytest.raises(InvalidDocument, match="bad layer entry"):
        CacheDocument.from_obj({**good, "layers": {d(10): {"digest": "x"}}}, "t")
    sneaky = dict(good["layers"][d(10)], digest="sha256:" + ("../" * 22)[:64])
    with pytest.raises(InvalidDocument, match="bad layer entry"):  # names a file by digest
        CacheDocument.from_obj({**good, "layers": {d(10): sneaky}}, "t")
    with pytest.raises(InvalidDocument, match="not JSON"):
        CacheDocument.from_json(b"{", "t")
    # a selection record the solver could not read (a broken cache, or a hostile one): the
    # cache is refused with that reason (a warning), not a traceback in the build
    sel = {"instruction": "selection", "selection": d(1), "files": "",
           "parents": {"a": ["dir", 493, 0, 0, 0, "", "", [], [0, 0], ""]}}
    for broken_result in ({**sel, "parents": "x"}, {**sel, "parents": {"a": ["dir"]}},
                          {**sel, "parents": {"a": ["dir", "rwx", 0, 0, 0, "", "", [], [0, 0]]}},
                          {**sel, "files": 3}, {**sel, "selection": None}, ["not", "a", "dict"]):
        bad = json.loads(json.dumps(good))
        next(iter(bad["records"].values()))["result"] = broken_result
        with pytest.raises(InvalidDocument, match="malformed result"):
            CacheDocument.from_obj(bad, "t")
    fine = json.loads(json.dumps(good))
    next(iter(fine["records"].values()))["result"] = sel
    assert CacheDocument.from_obj(fine, "t").records
    # records of another key format could never match: dropped, the document is still read
    old = CacheDocument.from_obj({**good, "keys": "dockyard.cache.v1"}, "t")
    assert old.records == {}


def test_merge_keeps_ours_and_adds_theirs() -> None:
    ours = document({1: 10, 2: 11})
    theirs = CacheDocument()
    theirs.add(record(2, 12), blob(12))  # the same key made elsewhere: ours wins
    theirs.add(record(3, 13), blob(13))
    merged = ours.merge(theirs)
    assert merged.records[d(2)]["layer"] == d(11)
    assert set(merged.records) == {d(1), d(2), d(3)}
    assert merged.covers(ours) and merged.covers(theirs)
    assert d(13) in merged.layers
    assert not ours.covers(theirs)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(1, 30), st.one_of(st.none(), st.integers(1, 8))),
       st.dictionaries(st.integers(1, 30), st.one_of(st.none(), st.integers(1, 8))))
def test_merge_loses_nothing(a: dict[int, int | None], b: dict[int, int | None]) -> None:
    da, db = document(a), document(b)
    merged = da.merge(db)
    assert merged.covers(da) and merged.covers(db)
    assert set(merged.records) == set(da.records) | set(db.records)
    for rec in merged.records.values():  # every record's layer is carried
        assert rec["layer"] is None or rec["layer"] in merged.layers
    assert CacheDocument.from_json(merged.to_json(), "t").records == merged.records
    assert merged.merge(db).records == merged.records  # idempotent


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.integers(1, 40), st.tuples(st.one_of(st.none(), st.integers(1, 8)),
                                                     st.integers(0, 5))),
       st.sets(st.integers(1, 40)), st.integers(300, 6000), st.integers(1, 9))
def test_trimming_keeps_ours_and_drops_the_oldest(
    entries: dict[int, tuple[int | None, int]], ours: set[int], budget: int, max_layers: int,
) -> None:
    doc = CacheDocument()
    for key, (layer, age) in entries.items():
        doc.add(record(key, layer, created=float(age)), blob(layer) if layer else None)
    keep = {d(k) for k in ours}
    out, dropped = doc.trimmed(keep, budget, max_layers)
    assert set(out.records) <= set(doc.records)
    assert dropped == len(doc.records) - len(out.records)
    assert keep & set(doc.records) <= set(out.records)  # this build's records stay
    if len(doc.to_json()) <= budget and len(doc.layers) <= max_layers:
        assert dropped == 0 and out is doc
    elif set(out.records) - keep:  # something of others' kept: within three quarters
        assert len(out.to_json()) <= budget * 3 // 4
        assert len(out.layers) <= max_layers * 3 // 4
    gone = set(doc.records) - set(out.records)
    kept_theirs = set(out.records) - keep
    if gone and kept_theirs:  # the oldest went first
        assert max(doc.records[k]["created"] for k in gone) <= min(
            out.records[k]["created"] for k in kept_theirs)
    assert set(out.layers) == {r["layer"] for r in out.records.values()} - {None}
    assert CacheDocument.from_json(out.to_json(), "t").records == out.records


def test_an_export_keeps_the_cache_under_its_budget(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds that each export their own records to one local cache: once the config would
    pass the budget, the oldest records of earlier builds go, never the exporting build's."""
    from dockyard.registry import buildcache

    monkeypatch.setattr(buildcache, "CONFIG_BUDGET", 4000)
    spec = CacheSpec(type="local", path=str(tmp_path / "cache"))
    store = Store.open(tmp_path / "s")
    said: list[str] = []
    for build_no in range(1, 11):
        recs = [record(100 * build_no + n, None, created=float(build_no)) for n in range(4)]
        buildcache.export_cache(store, spec, recs, progress=said.append)
        held = buildcache.load_cache(store, spec, platform="linux/amd64").records
        assert {r.key for r in recs} <= set(held)
        blobs = tmp_path / "cache" / "blobs" / "sha256"
        index = json.loads((tmp_path / "cache" / "index.json").read_text())
        manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
        assert manifest["config"]["size"] <= 4000
    held = buildcache.load_cache(store, spec, platform="linux/amd64").records
    builds = sorted({int(r.created) for r in held.values()})
    assert builds[-1] == 10 and builds[0] > 1  # the first builds' records went
    assert builds == list(range(builds[0], 11))  # oldest first: no gaps
    assert any("dropped the" in line and "oldest records of other builds" in line
               for line in said)


def test_select_records_by_stage() -> None:
    used = {d(1): (0, record(1, 1)), d(2): (1, record(2, 2)), d(3): (2, record(3, None))}
    assert [r.key for r in select_records(used, None)] == [d(1), d(2), d(3)]
    assert [r.key for r in select_records(used, [2, 1])] == [d(2), d(3)]


# ------------------------------------------------------------------ backends


class Imported:
    def __init__(self, records: dict[str, CacheRecord],
                 layers: dict[str, tuple[RemoteBlob, int | None]]) -> None:
        self.records = records
        self.layers = layers
        self.noted_blobs: list[str] = []

    def noted(self, remote: RemoteBlob) -> None:
        self.noted_blobs.append(remote.digest)


class Local:
    def __init__(self, records: dict[str, CacheRecord], fetchable: bool = True) -> None:
        self.records = records
        self.fetchable = fetchable
        self.saved: list[str] = []
        self.touched: list[str] = []

    def lookup(self, key: str) -> CacheRecord | None:
        return self.records.get(key)

    def fetch(self, record: CacheRecord) -> bool:
        return self.fetchable

    def mark_used(self, key: str) -> None:
        self.touched.append(key)

    def save(self, record: CacheRecord) -> None:
        self.saved.append(record.key)
        self.records[record.key] = record


def test_imported_cache_records_a_remote_layer_and_downloads_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    remote = RemoteBlob(d(1010), "application/vnd.oci.image.layer.v1.tar+gzip", 20,
                        "registry://reg.example/team/cache")
    source = Imported({d(1): record(1, 10)}, {d(10): (remote, 4096)})
    cache = ImportedCache(store, [source])
    rec = cache.lookup(d(1))
    assert rec is not None and cache.fetch(rec)
    layer = store.get_layer(d(10))
    assert layer is not None and layer.remotes == (remote,) and layer.size == 4096
    assert store.layer_present(d(10)) and not store.layers.local(d(10))
    assert source.noted_blobs == [d(1010)]
    assert list(store.blobs.iter_digests()) == []
    assert cache.lookup(d(2)) is None


def test_chain_asks_in_order_and_keeps_imported_hits_locally(tmp_path: Path) -> None:
    local = Local({d(1): record(1, None), d(2): record(2, 20)}, fetchable=True)
    other = Local({d(2): record(2, 21), d(3): record(3, 30)})
    chain = ChainCache([local, other])
    assert chain.lookup(d(1)) == local.records[d(1)]
    hit = chain.lookup(d(3))
    assert hit is not None and chain.fetch(hit)
    chain.mark_used(d(3))
    assert local.saved == [d(3)]  # kept in the local store for the next build
    chain.mark_used(d(1))
    assert local.touched == [d(1)]
    # a local record whose layer is gone falls through to the next backend
    local.fetchable = False
    got = chain.lookup(d(2))
    assert got is not None and got.diff_id == d(21)
    assert chain.lookup(d(9)) is None


# ------------------------------------------------------------------ retries


class Flaky(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    plan: ClassVar[list[str]] = []
    seen: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        Flaky.seen.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        step = Flaky.plan.pop(0) if Flaky.plan and self.path != "/v2/" else "ok"
        if step == "drop":
            self.close_connection = True
            self.connection.close()
            return
        status = 200 if step == "ok" else int(step)
        body = b'{"schemaVersion":2}' if status == 200 else b'{"errors":[]}'
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = _answer


@pytest.fixture
def flaky() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Flaky.seen = []
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_requests_are_retried_with_backoff(flaky: str) -> None:
    Flaky.plan = ["503", "drop", "429", "500", "ok"]
    with RegistryClient(flaky, RegistryOptions(backoff=0.01)) as client:
        body, _, _ = client.get_manifest("a/b", "1")
        assert body == b'{"schemaVersion":2}'
        assert client.retried == 4


def test_retries_end_with_a_clear_error(flaky: str) -> None:
    Flaky.plan = ["503"] * 10
    with RegistryClient(flaky, RegistryOptions(backoff=0.01, retries=2)) as client, \
            pytest.raises(RegistryError, match=r"manifest 1: HTTP 503.*\(tried 3 times\)"):
        client.get_manifest("a/b", "1")
    Flaky.plan = ["404"]
    with RegistryClient(flaky, RegistryOptions(backoff=0.01)) as client, \
            pytest.raises(RegistryError, match="HTTP 404"):
        client.get_manifest("a/b", "1")  # not worth another try
    assert Flaky.plan == []


class TokenFlaky(BaseHTTPRequestHandler):
    """A registry behind a Bearer token server (one host) whose token server fails first."""

    protocol_version = "HTTP/1.1"
    plan: ClassVar[list[str]] = []
    tokens: ClassVar[int] = 0

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        host = self.headers.get("Host")
        if self.path.startswith("/token"):
            TokenFlaky.tokens += 1
            step = TokenFlaky.plan.pop(0) if TokenFlaky.plan else "ok"
            if step == "drop":
                self.close_connection = True
                self.connection.close()
                return
            if step != "ok":
                self._reply(int(step), b"busy", Retry_After="0")
                return
            self._reply(200, b'{"token": "t0k"}', Content_Type="application/json")
        elif self.headers.get("Authorization") != "Bearer t0k":
            self._reply(401, b'{"errors":[]}', WWW_Authenticate=f'Bearer realm="http://{host}'
                        '/token",service="flaky"')
        else:
            self._reply(200, b'{"schemaVersion":2}',
                        Content_Type="application/vnd.oci.image.manifest.v1+json")


@pytest.fixture
def token_flaky() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenFlaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    TokenFlaky.tokens = 0
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_token_requests_are_retried(token_flaky: str) -> None:
    """The token server is part of every transfer: a reset, 429 and 5xx are tried again;
    a token server that stays down is a clear error naming it and the tries."""
    options = RegistryOptions(backoff=0.01, insecure_registries=(token_flaky,))
    TokenFlaky.plan = ["503", "drop", "429", "ok"]
    with RegistryClient(token_flaky, options) as client:
        body, _, _ = client.get_manifest("a/b", "1")
        assert body == b'{"schemaVersion":2}'
        assert client.retried == 3 and TokenFlaky.tokens == 4
    TokenFlaky.plan = ["502"] * 10
    with RegistryClient(token_flaky, RegistryOptions(
            backoff=0.01, retries=2, insecure_registries=(token_flaky,))) as client, \
            pytest.raises(RegistryError, match=r"cannot get a token from http://.*/token: "
                                               r"HTTP 502.*\(tried 3 times\)"):
        client.get_manifest("a/b", "1")
    TokenFlaky.plan = ["drop"] * 10
    with RegistryClient(token_flaky, RegistryOptions(
            backoff=0.01, retries=1, insecure_registries=(token_flaky,))) as client, \
            pytest.raises(RegistryError, match=r"cannot get a token .*\(tried 2 times\)"):
        client.get_manifest("a/b", "1")


def test_delay_grows_and_honours_retry_after() -> None:
    options = RegistryOptions(backoff=0.25)
    assert 0.12 <= options.delay(0) <= 0.38
    assert 0.5 <= options.delay(2) <= 1.5
    assert options.delay(20) <= 8.0
    assert options.delay(0, "3") == 3.0
    assert options.delay(0, "3600") == 30.0


def test_retries_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_REGISTRY_RETRIES", "7")
    assert RegistryOptions.from_env().retries == 7


# ------------------------------------------------------------------ selection records


def _stage_tree(root: Path, stamp: float) -> Path:
    """A stage's filesystem as a COPY --from reads it: a --parents source below directories
    of their own modes, and a hard-linked pair (made at ``root``, with mtimes ``stamp``)."""
    import os

    (root / "tree" / "a" / "b").mkdir(parents=True)
    (root / "tree" / "a" / "b" / "f").write_text("payload\n")
    (root / "links").mkdir()
    (root / "links" / "h1").write_text("same\n")
    os.link(root / "links" / "h1", root / "links" / "h2")
    (root / "links" / "other").write_text("same\n")
    os.chmod(root / "tree" / "a", 0o711)
    os.chmod(root / "tree" / "a" / "b", 0o750)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (stamp, stamp), follow_symlinks=False)
    return root


def test_selection_records_with_hardlinks_and_parents_travel_between_machines(
    tmp_path: Path,
) -> None:
    """A ``COPY --from`` selection record (the files' metadata with hard-link groups, and the
    parent directories ``--parents`` recreates, in ``result["parents"]``) keeps everything
    through a cache export and import; and its key and digest are the same on a machine
    whose tree sits at another path, with other mtimes and inode numbers."""
    from contextlib import nullcontext

    from dockyard.context.hashing import StatCache
    from dockyard.registry.buildcache import export_cache, load_cache
    from dockyard.solver.sources import SourceDigests

    sources, layers = ["/tree/./a/b/f", "/links/"], [d(5), d(6)]
    a_tree = _stage_tree(tmp_path / "host-a" / "work" / "rootfs", 1_000_000_000.0)
    b_tree = _stage_tree(tmp_path / "b", 1_700_000_000.0)
    assert (a_tree / "links/h1").stat().st_ino != (b_tree / "links/h1").stat().st_ino

    def never(_ids: list[str]) -> Any:
        raise AssertionError("an imported selection record mounts nothing")

    with StatCache(None, racy_window_ns=0) as stat_cache:
        made: list[CacheRecord] = []
        on_a = SourceDigests(Store.open(tmp_path / "sa"), lambda: stat_cache,
                             lambda _ids: nullcontext(a_tree), cache=Local({}),
                             on_record=made.append)
        sel_a = on_a.layers(layers, sources, (), parents=True)
        assert [r.result.get("instruction") for r in made] == ["selection"]
        assert sorted(made[0].result["parents"]) == ["tree/a", "tree/a/b"]
        assert sel_a.files["links/h2"].hardlink == "links/h1"
        assert sel_a.files["links/other"].hardlink == ""

        cache_dir = tmp_path / "cache"
        export_cache(Store.open(tmp_path / "sa"), CacheSpec(type="local", path=str(cache_dir)),
                     made)
        store_b = Store.open(tmp_path / "sb")
        imported = load_cache(store_b, CacheSpec(type="local", path=str(cache_dir)),
                              platform="linux/amd64")
        assert imported.records[made[0].key].result == made[0].result  # parents and all
        got: list[CacheRecord] = []
        on_b = SourceDigests(store_b, lambda: stat_cache, never,
                             cache=ChainCache([Local({}), ImportedCache(store_b, [imported])]),
                             on_record=got.append)
        sel_b = on_b.layers(layers, sources, (), parents=True)
        assert [r.key for r in got] == [made[0].key]
        assert sel_b.digest == sel_a.digest
        assert sel_b.parents == sel_a.parents
        assert dict(sel_b.files) == dict(sel_a.files)

        # machine B computing it itself, from its own tree: the same key and digest
        fresh: list[CacheRecord] = []
        own = SourceDigests(Store.open(tmp_path / "sc"), lambda: stat_cache,
                            lambda _ids: nullcontext(b_tree), cache=Local({}),
                            on_record=fresh.append)
        sel_own = own.layers(layers, sources, (), parents=True)
        assert [r.key for r in fresh] == [made[0].key]
        assert sel_own.digest == sel_a.digest
        assert fresh[0].result == made[0].result
