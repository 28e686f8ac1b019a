"""A Docker daemon as an output: ``build --load`` (``-o type=docker`` without ``dest``).

The daemon is the one the docker CLI would talk to: ``$DOCKER_HOST`` (``unix://PATH`` or
``tcp://HOST:PORT``, plain HTTP), else ``unix:///var/run/docker.sock``. The image goes to it
as a ``docker save`` archive through the Engine API's ``POST /images/load``, as
``docker load`` sends it. :meth:`DockerDaemon.ping` is called before a build starts, so a
build whose image could not be loaded fails before its first step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from dockyard.errors import DockyardError, UsageError

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_HOST", "DockerDaemon"]

DEFAULT_HOST = "unix:///var/run/docker.sock"
_TIMEOUT = 10.0  # seconds to connect and answer a ping


@dataclass(frozen=True)
class DockerDaemon:
    """Where the Docker daemon listens: ``unix://PATH`` or ``tcp://HOST:PORT``."""

    host: str

    @classmethod
    def from_env(cls) -> DockerDaemon:
        """The daemon of ``$DOCKER_HOST``, else the default socket."""
        host = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        if not host.startswith(("unix://", "tcp://", "http://")):
            raise UsageError(
                f"--load: DOCKER_HOST={host}: only unix:// and tcp:// daemons are supported")
        if os.environ.get("DOCKER_TLS_VERIFY"):
            raise UsageError("--load: a daemon behind TLS (DOCKER_TLS_VERIFY) is not supported; "
                             "use -o type=docker,dest=FILE and 'docker load -i FILE'")
        return cls(host)

    def _client(self, timeout: float | None) -> httpx.Client:
        import httpx

        if self.host.startswith("unix://"):
            transport = httpx.HTTPTransport(uds=self.host.removeprefix("unix://"))
            return httpx.Client(transport=transport, base_url="http://docker",
                                timeout=timeout)
        base = "http://" + self.host.split("://", 1)[1]
        return httpx.Client(base_url=base, timeout=timeout)

    def _unreachable(self, why: str) -> UsageError:
        env = "DOCKER_HOST" if os.environ.get("DOCKER_HOST") else "the default socket"
        return UsageError(
            f"--load: no Docker daemon answers at {self.host} ({env}): {why}; start one, set "
            "DOCKER_HOST, or write an archive with -o type=docker,dest=FILE")

    def ping(self) -> None:
        """Raise a UsageError that says where dockyard looked unless a daemon answers."""
        import httpx

        if self.host.startswith("unix://") and not os.path.exists(
                self.host.removeprefix("unix://")):
            raise self._unreachable("no such socket")
        try:
            with self._client(_TIMEOUT) as client:
                reply = client.get("/_ping")
        except httpx.HTTPError as err:
            raise self._unreachable(str(err) or type(err).__name__) from None
        if reply.status_code != 200:
            raise self._unreachable(f"/_ping answered HTTP {reply.status_code}")

    def load(self, archive: BinaryIO) -> tuple[str, ...]:
        """Send a ``docker save`` archive; returns the daemon's ``Loaded image: ...`` lines."""
        import httpx

        def chunks() -> Iterator[bytes]:
            while block := archive.read(1 << 20):
                yield block

        loaded: list[str] = []
        try:
            with self._client(None) as client, client.stream(
                    "POST", "/images/load", params={"quiet": "1"}, content=chunks(),
                    headers={"Content-Type": "application/x-tar"}) as reply:
                if reply.status_code != 200:
                    body = reply.read().decode("utf-8", "replace").strip()
                    raise DockyardError(
                        f"--load: the Docker daemon refused the image (HTTP "
                        f"{reply.status_code}): {_message(body)}")
                for line in reply.iter_lines():
                    loaded += _loaded(line)
        except httpx.HTTPError as err:
            raise DockyardError(f"--load: sending the image to {self.host} failed: "
                                f"{err or type(err).__name__}") from None
        return tuple(loaded)


def _message(body: str) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    return str(doc.get("message", body)) if isinstance(doc, dict) else body


def _loaded(line: str) -> list[str]:
    """The ``Loaded image`` lines of one JSON message; an error message raises."""
    if not line.strip():
        return []
    try:
        doc = json.loads(line)
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    if doc.get("error") or doc.get("errorDetail"):
        detail = doc.get("errorDetail") or {}
        raise DockyardError(f"--load: the Docker daemon refused the image: "
                            f"{doc.get('error') or detail.get('message')}")
    stream = str(doc.get("stream") or "").strip()
    return [stream] if stream else []
