"""Mutation kinds: each changes one input of a build, on disk or in the build's options.

A kind is a function ``(rng, ctx, project, state) -> description | None`` (None: nothing to
change in this project right now). The context is changed in place, with the smallest file
operation that does it, and times are put back (``tree.retime``): the stat caches under test
see a changed ctime only where something changed.

Kinds that need the build itself (an edit while it runs) or a special episode (a filesystem
with 1-second timestamps) are driven by the runner; they are listed here so that every kind
has one name (the names ``known.py`` and the reports use).
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import corpus, tree
from .corpus import VARIANTS, Project


@dataclass
class State:
    """The build's inputs besides the context tree (which is read from disk)."""

    args: dict[str, str] = field(default_factory=dict)  # --build-arg NAME=VALUE
    env_args: tuple[str, ...] = ()  # --build-arg NAME (value from the environment)
    env: dict[str, str] = field(default_factory=dict)  # the caller's environment additions
    network: str = "default"
    umask: int = 0o022
    sde: str | None = None
    sde_via: str = "env"  # "env" or "arg"
    target: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # tag -> base variant
    ignore_on: tuple[str, ...] = ()  # .dockerignore toggle lines switched on
    url_variant: dict[str, str] = field(default_factory=dict)  # served file -> variant
    coarse: bool = False  # the context is on a 1-second-timestamp filesystem

    @classmethod
    def initial(cls, project: Project) -> State:
        return cls(env_args=tuple(project.env_args),
                   tags={t: corpus.TAGS[t][0] for t in corpus.TAGS},
                   url_variant=dict.fromkeys(project.url_files, VARIANTS[0]))

    def describe(self) -> dict[str, object]:
        """Everything a build's result may depend on besides the tree, as plain data."""
        return {
            "args": sorted(self.args.items()),
            "env_args": list(self.env_args),
            "env": sorted(self.env.items()),
            "network": self.network,
            "umask": self.umask,
            "sde": self.sde,
            "sde_via": self.sde_via if self.sde else None,
            "target": self.target,
            "tags": sorted(self.tags.items()),
            "url": sorted(self.url_variant.items()),
        }


Kind = Callable[[random.Random, Path, Project, State], "str | None"]


def _other(rng: random.Random, choices: tuple[object, ...] | str, current: object) -> object:
    return rng.choice([c for c in choices if c != current])


def _variant_of(ctx: Path, rel: str, template: str) -> str | None:
    """Which variant ``rel`` holds now (None if it is not a regular file)."""
    p = ctx / rel
    if p.is_symlink() or not p.is_file():
        return None
    data = p.read_text(errors="replace")
    for v in VARIANTS:
        if data == template.format(v=v):
            return v
    return None


def _edit_one(rng: random.Random, ctx: Path, files: dict[str, str]) -> str | None:
    candidates = [(rel, t) for rel, t in sorted(files.items()) if _variant_of(ctx, rel, t)]
    if not candidates:
        return None
    rel, template = rng.choice(candidates)
    old = _variant_of(ctx, rel, template)
    new = str(_other(rng, VARIANTS, old))
    tree.overwrite_in_place(ctx, rel, template.format(v=new))
    return f"{rel}: content {old} -> {new} (same size, mtime kept)"


def edit(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A content edit that keeps size and mtime."""
    return _edit_one(rng, ctx, dict(p.edits))


def edit_ignored(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """An edit of a file .dockerignore excludes (the output must not change)."""
    return _edit_one(rng, ctx, dict(p.ignored_edits))


def edit_ignored_bound(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """An edit of an ignored file in a context a RUN bind-mounts."""
    return _edit_one(rng, ctx, dict(p.bound_ignored_edits))


def edit_via_ignored_symlink(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A symlink inside an ignored directory, which a COPY source leads through, re-pointed."""
    links = [rel for rel in sorted(p.via_ignored_symlink) if (ctx / rel).is_symlink()]
    if not links:
        return None
    rel = rng.choice(links)
    old = os.readlink(ctx / rel)
    new = str(_other(rng, p.via_ignored_symlink[rel], old))
    tree.symlink(ctx, rel, new)
    return f"{rel} (ignored): symlink {old} -> {new}"


def edit_pattern_file(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """An edit of a file whose name looks like a plain ignore pattern that is not one."""
    return _edit_one(rng, ctx, dict(p.pattern_files))


def edit_archive(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """An ADD'ed archive rewritten with other member contents (its mtime kept)."""
    if not p.archives:
        return None
    rel = rng.choice(sorted(p.archives))
    make = p.archives[rel]
    data = (ctx / rel).read_bytes()
    old = next((v for v in VARIANTS if make(v) == data), None)
    new = str(_other(rng, VARIANTS, old))
    tree.overwrite_in_place(ctx, rel, make(new))
    return f"{rel}: archive members {old} -> {new}"


def mode(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A permission change of a file or directory."""
    choices = [(rel, m) for rel, m in sorted(p.mode_choices.items())
               if os.path.lexists(ctx / rel) and not (ctx / rel).is_symlink()]
    if not choices:
        return None
    rel, modes = rng.choice(choices)
    old = stat.S_IMODE(os.lstat(ctx / rel).st_mode)
    new = int(str(_other(rng, tuple(str(m) for m in modes), str(old))))
    os.chmod(ctx / rel, new)
    return f"{rel}: mode {old:o} -> {new:o}"


def mode_root(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A permission change of the context directory itself."""
    old = stat.S_IMODE(os.lstat(ctx).st_mode)
    new = int(str(_other(rng, ("493", "448", "509"), str(old))))  # 755, 700, 775
    os.chmod(ctx, new)
    return f"context root: mode {old:o} -> {new:o}"


def owner(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """An owner change (uid and gid)."""
    paths = [rel for rel in p.owner_paths if os.path.lexists(ctx / rel)]
    if not paths:
        return None
    rel = rng.choice(paths)
    st = os.lstat(ctx / rel)
    new = int(str(_other(rng, ("0", "1000", "1234"), str(st.st_uid))))
    os.lchown(ctx / rel, new, new)
    return f"{rel}: owner {st.st_uid}:{st.st_gid} -> {new}:{new}"


def xattr(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A user xattr set, changed or removed."""
    paths = [rel for rel in p.xattr_paths if (ctx / rel).is_file() and not (ctx / rel).is_symlink()]
    if not paths:
        return None
    rel = rng.choice(paths)
    current = dict(tree.xattrs(ctx / rel)).get("user.sound")
    new = _other(rng, ("one", "two", None), current.decode() if current else None)
    if new is None:
        os.removexattr(ctx / rel, "user.sound")
    else:
        os.setxattr(ctx / rel, "user.sound", str(new).encode())
    return f"{rel}: xattr user.sound {current!r} -> {new!r}"


def file_symlink(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A file replaced by a symlink, or a symlink by a file."""
    if not p.file_or_link:
        return None
    rel = rng.choice(sorted(p.file_or_link))
    template, target = p.file_or_link[rel]
    hardlinked = any(rel in pair for pair in p.hardlink_pairs)
    if (ctx / rel).is_symlink():
        (ctx / rel).unlink()
        tree.write(ctx, rel, template.format(v=rng.choice(VARIANTS)))
        return f"{rel}: symlink -> file"
    if hardlinked:
        return None
    tree.symlink(ctx, rel, target)
    return f"{rel}: file -> symlink to {target}"


def repoint_symlink(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A symlink pointed somewhere else."""
    links = [rel for rel in sorted(p.repoint) if (ctx / rel).is_symlink()]
    if not links:
        return None
    rel = rng.choice(links)
    old = os.readlink(ctx / rel)
    new = str(_other(rng, p.repoint[rel], old))
    tree.symlink(ctx, rel, new)
    return f"{rel}: symlink {old} -> {new}"


def hardlink(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """Two names of one file split into two files, or joined into one."""
    if not p.hardlink_pairs:
        return None
    a, b = rng.choice(p.hardlink_pairs)
    pa, pb = ctx / a, ctx / b
    if pa.is_symlink() or pb.is_symlink() or not pa.is_file():
        return None
    if pb.exists() and os.path.samefile(pa, pb):
        data = pb.read_bytes()
        st = os.lstat(pb)
        pb.unlink()
        tree.write(ctx, b, data, stat.S_IMODE(st.st_mode))
        os.lchown(pb, st.st_uid, st.st_gid)
        return f"{b}: hardlink to {a} split off"
    tree.hardlink(ctx, a, b)
    return f"{b}: made a hardlink of {a}"


def add_remove(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A file added to or removed from a copied directory."""
    dirs = [d for d in p.addable if (ctx / d).is_dir() and not (ctx / d).is_symlink()]
    if not dirs:
        return None
    rel = f"{rng.choice(dirs)}/added-{rng.choice('xy')}.txt"
    if (ctx / rel).exists():
        (ctx / rel).unlink()
        tree.retime(ctx, rel)
        return f"{rel}: removed"
    tree.write(ctx, rel, f"added {rel}\n")
    return f"{rel}: added"


def dockerignore(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A line of .dockerignore switched on or off."""
    if p.dockerignore is None or not p.ignore_toggles:
        return None
    line = rng.choice(p.ignore_toggles)
    on = [t for t in p.ignore_toggles if (t in s.ignore_on) != (t == line)]
    s.ignore_on = tuple(on)
    tree.write(ctx, ".dockerignore", corpus.ignore_text(p.dockerignore, s.ignore_on))
    return f".dockerignore: {line!r} {'on' if line in on else 'off'}"


def _change_arg(rng: random.Random, choices: dict[str, tuple[str | None, ...]],
                s: State) -> str | None:
    if not choices:
        return None
    name = rng.choice(sorted(choices))
    old = s.args.get(name)
    new = _other(rng, choices[name], old)
    if new is None:
        s.args.pop(name, None)
    else:
        s.args[name] = str(new)
    return f"--build-arg {name}: {old!r} -> {new!r}"


def build_arg(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A build arg the Dockerfile uses as $NAME (or in FROM) given another value."""
    return _change_arg(rng, dict(p.args), s)


def build_arg_indirect(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """A build arg a RUN receives but does not spell as $NAME (a script reads it, ${#NAME})."""
    return _change_arg(rng, dict(p.indirect_args), s)


def env(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """The caller's environment: a variable ``--build-arg NAME`` reads, or one nothing reads."""
    names = [*sorted(p.env_args), "SOUND_NOISE"]
    name = rng.choice(names)
    choices = p.env_args.get(name, (None, "x", "y"))
    old = s.env.get(name)
    new = _other(rng, choices, old)
    if new is None:
        s.env.pop(name, None)
    else:
        s.env[name] = str(new)
    return f"environment {name}: {old!r} -> {new!r}"


def network(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """The build-wide --network flag."""
    old = s.network
    s.network = str(_other(rng, corpus.NETWORKS, old))
    return f"--network {old} -> {s.network}"


def umask(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """The caller's umask."""
    old = s.umask
    s.umask = int(str(_other(rng, tuple(str(u) for u in corpus.UMASKS), str(old))))
    return f"umask {old:03o} -> {s.umask:03o}"


def sde(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """SOURCE_DATE_EPOCH set, changed or unset (in the environment or as a build arg)."""
    old = (s.sde, s.sde_via)
    s.sde = _other(rng, corpus.SDE_VALUES, s.sde)  # type: ignore[assignment]
    s.sde_via = rng.choice(("env", "arg"))
    return f"SOURCE_DATE_EPOCH {old[0]} ({old[1]}) -> {s.sde} ({s.sde_via})"


def _retag(rng: random.Random, tag: str, p: Project, s: State) -> str | None:
    if tag not in p.images or len(corpus.TAGS[tag]) < 2:
        return None
    old = s.tags[tag]
    s.tags[tag] = str(_other(rng, corpus.TAGS[tag], old))
    return f"{tag}: re-tagged {old} -> {s.tags[tag]}"


def retag_base(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """The FROM image's tag moved to another image."""
    return _retag(rng, "base:latest", p, s)


def retag_copy_image(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """The tag of an image used by COPY --from moved."""
    return _retag(rng, "alt:latest", p, s)


def retag_bind_image(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """The tag of an image used by RUN --mount=type=bind,from= moved."""
    return _retag(rng, "altbind:latest", p, s)


def target(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """Another --target."""
    if len(p.targets) < 2:
        return None
    old = s.target
    s.target = _other(rng, p.targets, old)  # type: ignore[assignment]
    return f"--target {old} -> {s.target}"


def edit_url(rng: random.Random, ctx: Path, p: Project, s: State) -> str | None:
    """What an ADD'ed URL serves changed."""
    if not p.url_files:
        return None
    name = rng.choice(sorted(p.url_files))
    old = s.url_variant[name]
    s.url_variant[name] = str(_other(rng, VARIANTS, old))
    return f"URL {name}: content {old} -> {s.url_variant[name]}"


# The kinds the runner applies between builds, by name.
KINDS: dict[str, Kind] = {
    "edit": edit,
    "edit-ignored": edit_ignored,
    "edit-ignored-bound": edit_ignored_bound,
    "edit-via-ignored-symlink": edit_via_ignored_symlink,
    "edit-pattern-file": edit_pattern_file,
    "edit-archive": edit_archive,
    "mode": mode,
    "mode-root": mode_root,
    "owner": owner,
    "xattr": xattr,
    "file-symlink": file_symlink,
    "repoint-symlink": repoint_symlink,
    "hardlink": hardlink,
    "add-remove": add_remove,
    "dockerignore": dockerignore,
    "build-arg": build_arg,
    "build-arg-indirect": build_arg_indirect,
    "env": env,
    "network": network,
    "umask": umask,
    "sde": sde,
    "retag-base": retag_base,
    "retag-copy-image": retag_copy_image,
    "retag-bind-image": retag_bind_image,
    "target": target,
    "edit-url": edit_url,
}
# Kinds the runner drives itself (see engine.py).
EDIT_DURING_BUILD = "edit-during-build"
RACY_EDIT = "racy-edit"
NOOP = "noop"  # nothing changed: the up-to-date check may answer
REVERT = "revert"  # the context and options put back to an earlier step's (as a checkout does)
# an episode whose context lives on a filesystem with 1-second timestamps
COARSE_TIMESTAMPS = "coarse-timestamps"
ALL_KINDS = (*KINDS, EDIT_DURING_BUILD, RACY_EDIT, NOOP, REVERT, COARSE_TIMESTAMPS)


def applicable(kind: str, project: Project) -> bool:
    """Whether ``kind`` can ever change something in ``project``."""
    checks: dict[str, bool] = {
        "edit": bool(project.edits),
        "edit-ignored": bool(project.ignored_edits),
        "edit-ignored-bound": bool(project.bound_ignored_edits),
        "edit-via-ignored-symlink": bool(project.via_ignored_symlink),
        "edit-pattern-file": bool(project.pattern_files),
        "edit-archive": bool(project.archives),
        "mode": bool(project.mode_choices),
        "owner": bool(project.owner_paths),
        "xattr": bool(project.xattr_paths),
        "file-symlink": bool(project.file_or_link),
        "repoint-symlink": bool(project.repoint),
        "hardlink": bool(project.hardlink_pairs),
        "add-remove": bool(project.addable),
        "dockerignore": bool(project.ignore_toggles),
        "build-arg": bool(project.args),
        "build-arg-indirect": bool(project.indirect_args),
        "retag-base": "base:latest" in project.images,
        "retag-copy-image": "alt:latest" in project.images,
        "retag-bind-image": "altbind:latest" in project.images,
        "target": len(project.targets) > 1,
        "edit-url": bool(project.url_files),
        EDIT_DURING_BUILD: project.during_build is not None,
        RACY_EDIT: bool(project.edits),
        COARSE_TIMESTAMPS: bool(project.edits),
    }
    return checks.get(kind, True)
