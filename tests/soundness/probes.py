"""One deterministic probe per mutation kind (and per project that exists for one bug): a
short episode on the project built to show the kind, with a fixed seed."""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping

from . import corpus, mutations
from .engine import Runner

# name -> (project, the kinds applied in order)
PROBES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "edit": ("tree", ("edit",) * 4),
    "edit-ignored": ("tree", ("edit-ignored",) * 3),
    "edit-ignored-bound": ("bind-context", ("edit-ignored-bound",) * 3),
    "edit-via-ignored-symlink": ("ignore-symlink", ("edit-via-ignored-symlink",) * 3),
    "edit-pattern-file": ("ignore-pattern", ("edit-pattern-file",) * 3),
    "edit-archive": ("archives", ("edit-archive",) * 3),
    "mode": ("tree", ("mode",) * 4),
    "mode-root": ("tree", ("mode-root",) * 3),
    "owner": ("tree", ("owner",) * 3),
    "xattr": ("tree", ("xattr",) * 3),
    "file-symlink": ("symlinks", ("file-symlink",) * 3),
    "repoint-symlink": ("symlinks", ("repoint-symlink",) * 4),
    "hardlink": ("tree", ("hardlink",) * 3),
    "add-remove": ("tree", ("add-remove",) * 3),
    "dockerignore": ("tree", ("dockerignore",) * 4),
    "build-arg": ("args-env", ("build-arg",) * 4),
    "build-arg-indirect": ("args-env", ("build-arg-indirect",) * 4),
    "env": ("args-env", ("env",) * 4),
    "network": ("network-umask", ("network",) * 3),
    "umask": ("network-umask", ("umask",) * 3),
    "sde": ("network-umask", ("sde",) * 3),
    "retag-base": ("tree", ("retag-base",) * 3),
    "retag-copy-image": ("bind-stage-image", ("retag-copy-image",) * 3),
    "retag-bind-image": ("bind-stage-image", ("retag-bind-image",) * 3),
    "target": ("multistage", ("target",) * 3),
    "edit-url": ("add-url", ("edit-url",) * 3),
    mutations.EDIT_DURING_BUILD: ("tree", (mutations.EDIT_DURING_BUILD,) * 2),
    mutations.RACY_EDIT: ("tree", (mutations.RACY_EDIT,) * 3),
    mutations.COARSE_TIMESTAMPS: ("tree", (mutations.RACY_EDIT,) * 3),
    mutations.NOOP: ("multistage", ("edit", mutations.NOOP, mutations.NOOP)),
    mutations.REVERT: ("tree", ("edit", "mode", "dockerignore", mutations.REVERT,
                                mutations.REVERT, mutations.REVERT)),
    "rw-bind": ("rw-bind", ("edit",) * 2),
    "rw-bind-stage": ("rw-bind-stage", ("edit",) * 1),
    "copy-nlink": ("copy-nlink", ("edit",) * 2),
}


def run_probe(runner: Runner, name: str) -> None:
    """Run the probe ``name``; failures are left in ``runner.failures``."""
    project_name, kinds = PROBES[name]
    project = corpus.BY_NAME[project_name]
    seed = zlib.crc32(name.encode())
    rng = random.Random(seed)
    episode = runner.start(project, seed, coarse=name == mutations.COARSE_TIMESTAMPS)
    episode.initial()
    try:
        for kind in kinds:
            for _ in range(5):
                if episode.mutate(kind, rng) is not None:
                    break
    finally:
        episode.close()
