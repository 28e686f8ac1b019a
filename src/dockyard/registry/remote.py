"""Downloading a layer that the store knows only by where it is kept (lazy import).

An imported build cache (``--cache-from``) records its layers in the store as remote forms
(:class:`~dockyard.store.layers.RemoteBlob`): a blob in a registry repository
(``registry://DOMAIN/REPO``) or in an OCI layout directory (``oci-layout:///DIR``). When a
step that misses needs such a layer as its parent, or an output needs its bytes,
:meth:`~dockyard.store.layers.Layers.ensure_blob` calls :func:`download_layer`: the blob is
streamed once, verified against its digest and size, decompressed on the fly and the tar
verified against the diff id. Nothing is visible in the store before both match, so a
corrupt or truncated blob is never stored; a broken transfer is tried again with backoff.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

from dockyard.errors import RegistryError, StoreError
from dockyard.image.oci import InvalidDocument, layer_compression
from dockyard.store.blobs import BlobStore
from dockyard.store.layers import RemoteBlob

__all__ = ["download_layer", "layout_source", "parse_source", "registry_source"]

Form = tuple[str, str, int]  # (compression, digest, size)


def registry_source(domain: str, repository: str) -> str:
    """The ``source`` of a remote form kept in a registry repository."""
    return f"registry://{domain}/{repository}"


def layout_source(directory: str | os.PathLike[str]) -> str:
    """The ``source`` of a remote form kept in an OCI layout directory."""
    return "oci-layout://" + os.path.abspath(directory)


def parse_source(source: str) -> tuple[str, str, str]:
    """``("registry", DOMAIN, REPO)`` or ``("oci-layout", DIR, "")``."""
    if source.startswith("registry://"):
        domain, _, repo = source.removeprefix("registry://").partition("/")
        if domain and repo:
            return "registry", domain, repo
    elif source.startswith("oci-layout://"):
        return "oci-layout", source.removeprefix("oci-layout://"), ""
    raise StoreError(f"unknown layer source {source!r}")


def download_layer(blobs: BlobStore, diff_id: str, remote: RemoteBlob) -> list[Form]:
    """Download ``remote`` (a form of layer ``diff_id``) into ``blobs``: its blob and, when it
    is compressed, the uncompressed tar under the diff id. Returns the forms stored.
    Raises RegistryError or StoreError naming the layer and the source."""
    kind, where, repo = parse_source(remote.source)
    try:
        compression = layer_compression(remote.media_type)
    except InvalidDocument as err:
        raise StoreError(f"layer {diff_id} at {remote.source}: {err}") from None
    if kind == "oci-layout":
        path = Path(where) / "blobs" / "sha256" / remote.digest.removeprefix("sha256:")
        try:
            with open(path, "rb") as f:
                return _store(blobs, diff_id, remote, compression, _chunks(f), str(path))
        except OSError as err:
            raise StoreError(f"layer {diff_id}: cannot read {path}: {err.strerror}") from None
    from dockyard.registry.client import RegistryClient, RegistryOptions
    from dockyard.registry.pull import TransferError, with_retries

    with RegistryClient(where, RegistryOptions.from_env()) as client:
        def once() -> list[Form]:
            import httpx

            with client.open_blob(repo, remote.digest) as response:
                try:
                    return _store(blobs, diff_id, remote, compression,
                                  response.iter_raw(1 << 20), f"{where}/{repo}")
                except httpx.HTTPError as err:
                    raise TransferError(f"{where}/{repo}: download of layer {remote.digest} "
                                        f"failed: {type(err).__name__}: {err}") from None
                except _Broken as err:
                    raise TransferError(str(err)) from None

        forms: list[Form] = with_retries(client, once)
        return forms


class _Broken(RegistryError):
    """The bytes do not match what the cache says they are."""


def _chunks(f: BinaryIO) -> Any:
    while data := f.read(1 << 20):
        yield data


def _store(blobs: BlobStore, diff_id: str, remote: RemoteBlob, compression: str,
           chunks: Any, where: str) -> list[Form]:
    from dockyard.registry.pull import _Inflater

    same = remote.digest == diff_id
    with ExitStack() as stack:
        blob_writer = None if blobs.has(remote.digest) else stack.enter_context(blobs.writer())
        diff_writer = None if same or blobs.has(diff_id) else stack.enter_context(
            blobs.writer())
        blob_hash, diff_hash = hashlib.sha256(), hashlib.sha256()
        inflater = _Inflater()
        size = diff_size = 0

        def plain(data: bytes) -> None:
            nonlocal diff_size
            diff_hash.update(data)
            diff_size += len(data)
            if diff_writer is not None:
                diff_writer.write(data)

        try:
            for chunk in chunks:
                size += len(chunk)
                if size > remote.size:
                    raise _Broken(f"{where}: layer {remote.digest} is larger than the "
                                  f"{remote.size} bytes the cache says")
                blob_hash.update(chunk)
                if blob_writer is not None:
                    blob_writer.write(chunk)
                plain(inflater.feed(chunk))
            plain(inflater.finish())
        except RegistryError:
            raise
        except (OSError, StoreError):
            raise
        except Exception as err:  # zlib.error, ZstdError ...
            raise _Broken(f"{where}: layer {remote.digest} cannot be decompressed: "
                          f"{err}") from None
        got = "sha256:" + blob_hash.hexdigest()
        if size != remote.size or got != remote.digest:
            raise _Broken(f"{where}: layer {remote.digest} failed verification: got {got} "
                          f"({size} of {remote.size} bytes)")
        if not inflater.complete:
            raise _Broken(f"{where}: layer {remote.digest} is a truncated "
                          f"{inflater.kind} stream")
        got_diff = "sha256:" + diff_hash.hexdigest()
        if got_diff != diff_id:
            raise StoreError(f"{where}: layer {remote.digest} does not match its diff id "
                             f"{diff_id}: it decompresses to {got_diff}")
        forms: list[Form] = []
        if blob_writer is not None:
            blob_writer.commit(remote.digest, remote.size)
        if same:
            forms.append(("none", diff_id, remote.size))
        else:
            forms.append((compression, remote.digest, remote.size))
            if diff_writer is not None:
                diff_writer.commit(diff_id, diff_size)
            forms.append(("none", diff_id, diff_size))
        return forms
