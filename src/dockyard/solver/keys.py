"""Cache keys, version 3. The exact rules are written down in docs/cache.md.

A key is ``"sha256:" + sha256(canonical JSON of a dict)``. Each dict carries ``"v"`` (the key
format version) and ``"kind"``; layer steps chain to their parent's key, so a miss changes every
later key of the stage. Once shipped, a key format is forever: change it only by bumping
:data:`KEY_VERSION` (old records then simply never match).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from dockyard.plan.model import CopyOp, MkdirOp, RunOp

KEY_VERSION = "dockyard.cache.v3"
# v1 -> v2: a RUN keys every build arg in scope (not only those written as $NAME), the
# network mode it actually gets (build-wide --network included), and a bind mount's image by
# its id and a named context by its content; every layer step keys SOURCE_DATE_EPOCH.
# v2 -> v3: FROM an image keys its layers (diff ids), not its config digest.


def digest_of(obj: Any) -> str:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(data.encode("utf-8", "surrogateescape")).hexdigest()


def from_layers_key(diff_ids: Sequence[str], platform: str) -> str:
    """FROM an image: its layers (diff ids, in order) and the platform, as BuildKit's image
    source keys on the layer chain. Nothing of the image config: every field a step reads
    (Env, User, WorkingDir, Shell, OnBuild's triggers) the planner writes into that step's
    op, so into its own key; the rest (Labels, Cmd, ...) is metadata the image config takes
    from the base on every build. So a base re-tagged to the same layers with another
    config (a LABEL added, an import time) keeps every step's result."""
    return digest_of({"v": KEY_VERSION, "kind": "from", "layers": list(diff_ids),
                      "platform": platform})


def scratch_key(platform: str) -> str:
    return digest_of({"v": KEY_VERSION, "kind": "scratch", "platform": platform})


def run_components(
    op: RunOp,
    mounts: Sequence[dict[str, Any]],
    platform: str,
    *,
    network: str,
    source_date_epoch: int | None,
) -> dict[str, Any]:
    """What a RUN key is made of (besides its parent); also kept for explaining misses.
    ``network``: the mode the process gets (``RUN --network``, else the build's)."""
    proxy = {"proxy": op.proxy_digest} if op.proxy_digest else {}
    return {
        **proxy,
        "args": list(op.args),
        "env": list(op.key_env),
        "user": op.user,
        "workdir": op.workdir,
        "network": network,
        "security": op.security,
        "mounts": list(mounts),
        "scripts": [[p, hashlib.sha256(c.encode()).hexdigest()] for p, c in op.script_files],
        "platform": platform,
        "source_date_epoch": source_date_epoch,
    }


def copy_components(
    op: CopyOp,
    sources_digest: str,
    source_id: str | None,
    chown: tuple[int, int] | None,
    platform: str,
    *,
    source_date_epoch: int | None,
) -> dict[str, Any]:
    """What a COPY/ADD key is made of: the operation and the content digest of its sources."""
    return {
        "add": op.is_add,
        "sources": list(op.sources),
        "heredocs": [[h.name, hashlib.sha256(h.content.encode()).hexdigest()]
                     for h in op.heredocs],
        "content": sources_digest,
        "from": source_id,
        "dest": op.dest,
        "workdir": op.workdir,
        "chown": list(chown) if chown else None,
        "chmod": op.chmod,
        "link": op.link,
        "parents": op.parents,
        "excludes": list(op.excludes),
        "checksum": op.checksum,
        "keep_git_dir": op.keep_git_dir,
        "platform": platform,
        "source_date_epoch": source_date_epoch,
    }


def mkdir_components(
    op: MkdirOp, platform: str, *, source_date_epoch: int | None
) -> dict[str, Any]:
    return {"path": op.path, "user": op.user, "platform": platform,
            "source_date_epoch": source_date_epoch}


def step_key(kind: str, parent: str | None, components: dict[str, Any]) -> str:
    """The key of a layer step. ``parent`` is None only for ``COPY --link``."""
    return digest_of({"v": KEY_VERSION, "kind": kind, "parent": parent, "op": components})


def layer_key(kind: str, parent: str, components: dict[str, Any], *, link: bool = False) -> str:
    """The key of a layer step on top of the stage state ``parent``; a ``COPY --link`` layer
    does not depend on what is below it, so its key leaves the parent out."""
    return step_key(kind, None if link else parent, components)


def chain_key(parent: str, step: str, diff_id: str | None) -> str:
    """What the steps after a layer step chain to: the stage so far, the step's key, and the
    layer the step actually has (``None`` when it changed nothing).

    Chaining on the layer, not only on the step key, is what keeps a forced rebuild honest:
    when ``--no-cache-filter`` or ``--cache-ttl`` reruns a step and it gives a different layer,
    every later step (and every stage built on this one) misses instead of reusing results
    made on the old layer. ``parent`` is there for ``COPY --link``, whose own key leaves it out.
    """
    return digest_of({"v": KEY_VERSION, "kind": "chain", "parent": parent, "step": step,
                      "diff_id": diff_id})
