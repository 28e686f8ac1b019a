"""Pure parts of the registry room: WWW-Authenticate parsing, the Docker credentials file,
the plain-HTTP rule, on-the-fly decompression, ``--output type=registry``."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.errors import RegistryError, UsageError
from dockyard.exporter.spec import parse_output
from dockyard.registry.auth import (
    DOCKER_HUB_AUTH_KEY,
    Challenge,
    Credentials,
    auth_key,
    load_credentials,
    parse_www_authenticate,
    remove_credentials,
    save_credentials,
)
from dockyard.registry.client import api_host, is_insecure_host
from dockyard.registry.pull import _Inflater, _media_type_in

# --- WWW-Authenticate -----------------------------------------------------------------------


def test_bearer_challenge_as_docker_hub_sends_it() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/busybox:pull"')
    assert parse_www_authenticate(header) == [Challenge("bearer", {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull",
    })]


def test_basic_challenge() -> None:
    [challenge] = parse_www_authenticate('Basic realm="Registry Realm"')
    assert challenge.scheme == "basic" and challenge.realm == "Registry Realm"


def test_several_challenges_commas_in_quotes_escapes_and_bare_tokens() -> None:
    header = ('Basic realm="a, b", Bearer realm="https://x/token?a=1,2",'
              'service=reg, error="insufficient_scope" , Negotiate abc==, '
              'Bearer realm="say \\"hi\\""')
    challenges = parse_www_authenticate(header)
    assert [c.scheme for c in challenges] == ["basic", "bearer", "negotiate", "bearer"]
    assert challenges[0].params == {"realm": "a, b"}
    assert challenges[1].params == {"realm": "https://x/token?a=1,2", "service": "reg",
                                    "error": "insufficient_scope"}
    assert challenges[2].params == {}
    assert challenges[3].realm == 'say "hi"'


def test_scheme_and_parameter_names_are_case_insensitive() -> None:
    [challenge] = parse_www_authenticate('BEARER Realm="r",SERVICE="s"')
    assert challenge == Challenge("bearer", {"realm": "r", "service": "s"})


@pytest.mark.parametrize("header", ["", "   ", ",", '="x"'])
def test_empty_or_junk_headers_give_no_challenge(header: str) -> None:
    assert parse_www_authenticate(header) == []


# --- the credentials file -------------------------------------------------------------------


def test_save_writes_docker_format_and_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"other.io": {"auth": "eDp5"}},
                                "psFormat": "table"}))
    save_credentials("localhost:5000", Credentials("bob", "pa:ss"), path)
    data = json.loads(path.read_text())
    assert data["psFormat"] == "table"
    assert data["auths"]["other.io"] == {"auth": "eDp5"}
    assert base64.b64decode(data["auths"]["localhost:5000"]["auth"]) == b"bob:pa:ss"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_credentials("localhost:5000", path) == Credentials("bob", "pa:ss")
    assert load_credentials("other.io", path) == Credentials("x", "y")
    assert load_credentials("nowhere.io", path) is None


def test_docker_hub_key_and_url_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    assert auth_key("docker.io") == DOCKER_HUB_AUTH_KEY
    assert auth_key("registry-1.docker.io") == DOCKER_HUB_AUTH_KEY
    save_credentials("docker.io", Credentials("hub", "pw"), path)
    assert DOCKER_HUB_AUTH_KEY in json.loads(path.read_text())["auths"]
    assert load_credentials("index.docker.io", path) == Credentials("hub", "pw")
    # keys other tools wrote as URLs match their host
    path.write_text(json.dumps({"auths": {"https://Reg.Example.com/v2/": {
        "username": "u", "password": "p"}}}))
    assert load_credentials("reg.example.com", path) == Credentials("u", "p")
    assert remove_credentials("reg.example.com", path) is True
    assert remove_credentials("reg.example.com", path) is False
    assert json.loads(path.read_text())["auths"] == {}


def test_identity_token_and_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {
        "tok.io": {"auth": base64.b64encode(b"u:").decode(), "identitytoken": "refresh"},
        "bad.io": {"auth": base64.b64encode(b"no-colon").decode()},
    }}))
    found = load_credentials("tok.io", path)
    assert found is not None and found.identity_token == "refresh"
    assert "refresh" not in repr(found) and "password=<hidden>" in repr(found)
    with pytest.raises(RegistryError, match="not base64 of user:password"):
        load_credentials("bad.io", path)
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        load_credentials("tok.io", path)


def test_env_config_and_docker_config_dir(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    save_credentials("file.io", Credentials("f", "1"))
    assert json.loads((tmp_path / "config.json").read_text())["auths"]["file.io"]
    env_auth = {"auths": {"env.io": {"auth": base64.b64encode(b"e:2").decode()}}}
    monkeypatch.setenv("DOCKYARD_AUTH_CONFIG", json.dumps(env_auth))
    assert load_credentials("env.io") == Credentials("e", "2")
    assert load_credentials("file.io") == Credentials("f", "1")


def test_user_name_with_colon_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        save_credentials("x.io", Credentials("a:b", "c"), tmp_path / "c.json")


# --- plain HTTP and hosts -------------------------------------------------------------------


@pytest.mark.parametrize(("host", "insecure"), [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True),
    ("127.8.9.10", True), ("[::1]:5000", True), ("[::1]", True),
    ("registry.example.com", False), ("10.0.0.1:5000", False), ("localhost.evil.com", False),
    ("128.0.0.1", False),
])
def test_loopback_registries_may_use_plain_http(host: str, insecure: bool) -> None:
    assert is_insecure_host(host) is insecure


def test_listed_insecure_registries() -> None:
    assert is_insecure_host("reg.lan:5000", ["reg.lan"])
    assert is_insecure_host("reg.lan:5000", ["reg.lan:5000"])
    assert not is_insecure_host("reg.lan:5000", ["reg.lan:6000"])
    assert is_insecure_host("10.1.2.3:5000", ["10.0.0.0/8"])
    assert not is_insecure_host("11.1.2.3", ["10.0.0.0/8", "not-a-cidr/x"])


def test_docker_hub_api_host() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("ghcr.io") == "ghcr.io"


# --- decompression on the fly ---------------------------------------------------------------


def _feed_in_pieces(data: bytes, size: int) -> tuple[bytes, _Inflater]:
    inflater = _Inflater()
    out = b"".join(inflater.feed(data[i:i + size]) for i in range(0, len(data), size))
    return out + inflater.finish(), inflater


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_inflater_handles_multi_member_gzip_in_any_pieces(piece: int) -> None:
    a, b = b"first member " * 300, b"second member " * 200
    data = gzip.compress(a, mtime=0) + gzip.compress(b, mtime=0)
    out, inflater = _feed_in_pieces(data, piece)
    assert out == a + b and inflater.complete and inflater.kind == "gzip"


def test_inflater_zstd_plain_and_truncated() -> None:
    import zstandard

    text = b"zstd frame " * 1000
    out, inflater = _feed_in_pieces(zstandard.ZstdCompressor().compress(text), 100)
    assert out == text and inflater.kind == "zstd" and inflater.complete
    out, inflater = _feed_in_pieces(text, 100)
    assert out == text and inflater.kind == "none" and inflater.complete
    out, inflater = _feed_in_pieces(b"ab", 1)  # shorter than any magic
    assert out == b"ab" and inflater.kind == "none"
    truncated = gzip.compress(text, mtime=0)[:-20]
    _out, inflater = _feed_in_pieces(truncated, 64)
    assert not inflater.complete


def test_media_type_sniffed_from_the_body() -> None:
    assert _media_type_in(b'{"manifests":[]}') == "application/vnd.oci.image.index.v1+json"
    assert _media_type_in(b'{"config":{}}') == "application/vnd.oci.image.manifest.v1+json"
    assert _media_type_in(b'{"mediaType":"x"}') == "x"
    assert _media_type_in(b"[]") is None and _media_type_in(b"nope") is None


# --- outputs and the import cost -------------------------------------------------------------


def test_output_type_registry_and_push() -> None:
    spec = parse_output("type=registry,name=localhost:5000/a:1,registry.insecure=true,"
                        "oci-mediatypes=false")
    assert (spec.type, spec.push, spec.insecure, spec.oci_mediatypes) == (
        "registry", True, True, False)
    assert parse_output("type=image,push=true").push is True
    assert parse_output("type=image").push is False
    with pytest.raises(UsageError):
        parse_output("type=oci,dest=x.tar,push=true")


def test_importing_the_registry_room_does_not_import_httpx() -> None:
    code = ("import sys, dockyard.registry, dockyard.exporter, dockyard.api; "
            "print('httpx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
