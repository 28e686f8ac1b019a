"""The corpus: small projects (a Dockerfile and a generated context each) and the handles the
mutations use on them.

Every project builds ``FROM base`` (a tag the runner points at one of the base variants) and
is small in bytes and in steps: a build is a fraction of a second, so hundreds of mutation
steps fit in CI. Their RUN steps write what they see (file lists, modes, owners, link
targets, the network interfaces, build args) into the image, so an input a step reads but its
key leaves out shows up as a difference from the fresh build.

Editable files are templates with one ``{v}`` slot; the variants (:data:`VARIANTS`) all have
the same length, so a content edit keeps the size (and the mutation puts the mtime back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import tree

VARIANTS = "abc"  # the {v} values of editable files; the first is the initial content
UMASKS = (0o022, 0o077, 0o002)
NETWORKS = ("default", "host", "none")
SDE_VALUES = (None, "1700000000", "1710000000")


@dataclass(frozen=True)
class BaseVariant:
    """An image the runner imports once into the template store: the busybox rootfs plus
    ``extra`` files (or only ``extra`` when ``busybox`` is false), and ``changes`` (``-c``)."""

    name: str
    extra: Mapping[str, str]
    busybox: bool = True
    changes: tuple[str, ...] = ()


# name -> the tags a project may use and the variants each tag can point to.
BASES: tuple[BaseVariant, ...] = (
    BaseVariant("base-1", {"etc/variant": "one\n"}),
    BaseVariant("base-2", {"etc/variant": "two\n"}),
    # same layers as base-1, another config: a re-tag to it changes the env RUN steps see
    BaseVariant("base-3", {"etc/variant": "one\n"}, changes=("ENV BASE_FLAVOUR=three",)),
    BaseVariant("alt-1", {"etc/variant": "alt-one\n", "data/x.txt": "x one\n",
                          "data/y.txt": "y\n"}, busybox=False),
    BaseVariant("alt-2", {"etc/variant": "alt-two\n", "data/x.txt": "x two\n",
                          "data/y.txt": "y\n"}, busybox=False),
)
# tag -> the variants it may point to (the first is where each episode starts)
TAGS: Mapping[str, tuple[str, ...]] = {
    "base:latest": ("base-1", "base-2", "base-3"),
    "base:one": ("base-1",),
    "base:two": ("base-2",),
    "alt:latest": ("alt-1", "alt-2"),
    "altbind:latest": ("alt-1", "alt-2"),
}


@dataclass(frozen=True)
class Project:
    """One corpus entry. The handles name what each mutation kind may change."""

    name: str
    dockerfile: str
    files: Mapping[str, str | bytes] = field(default_factory=dict)  # rel -> content
    modes: Mapping[str, int] = field(default_factory=dict)  # initial modes (default 0644)
    symlinks: Mapping[str, str] = field(default_factory=dict)  # rel -> initial target
    hardlinks: Mapping[str, str] = field(default_factory=dict)  # rel -> existing rel
    initial_xattrs: Mapping[str, str] = field(default_factory=dict)
    dockerignore: tuple[str, ...] | None = None  # fixed lines (None: no .dockerignore)
    ignore_toggles: tuple[str, ...] = ()  # lines a mutation switches on and off
    edits: Mapping[str, str] = field(default_factory=dict)  # rel -> template with {v}
    ignored_edits: Mapping[str, str] = field(default_factory=dict)  # always ignored, not bound
    bound_ignored_edits: Mapping[str, str] = field(default_factory=dict)  # ignored, bind-mounted
    # symlinks inside an ignored directory that a COPY source leads through -> their targets
    via_ignored_symlink: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    pattern_files: Mapping[str, str] = field(default_factory=dict)  # item 10, case 2
    mode_choices: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    owner_paths: tuple[str, ...] = ()
    xattr_paths: tuple[str, ...] = ()
    repoint: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    file_or_link: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # rel -> (tmpl, target)
    hardlink_pairs: tuple[tuple[str, str], ...] = ()  # (existing, other) initially linked
    addable: tuple[str, ...] = ()  # directories where a file may be added or removed
    archives: Mapping[str, Callable[[str], bytes]] = field(default_factory=dict)
    during_build: tuple[int, str] | None = None  # (COPY line, file edited while it runs)
    args: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)
    indirect_args: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)
    env_args: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)
    targets: tuple[str | None, ...] = (None,)
    images: tuple[str, ...] = ("base:latest",)  # tags it reads (re-tag mutations)
    url_files: Mapping[str, str] = field(default_factory=dict)  # served name -> template
    # what the project is for, when it exists to show one known bug (see known.py)
    known_project: str | None = None
    may_fail: bool = False  # a failing build is fine when the fresh one fails alike
    in_random: bool = True  # drawn by random runs (else only its probe uses it)

    def make(self, ctx: Path) -> None:
        """Write the context (everything at mtime T0)."""
        tree.write(ctx, "Dockerfile", self.dockerfile)
        if self.dockerignore is not None:
            tree.write(ctx, ".dockerignore", ignore_text(self.dockerignore, ()))
        templated = {**self.edits, **self.ignored_edits, **self.bound_ignored_edits,
                     **self.pattern_files}
        for rel, tmpl in templated.items():
            tree.write(ctx, rel, tmpl.format(v=VARIANTS[0]), self.modes.get(rel, 0o644))
        for rel, content in self.files.items():
            tree.write(ctx, rel, content, self.modes.get(rel, 0o644))
        for rel, make in self.archives.items():
            tree.write(ctx, rel, make(VARIANTS[0]), self.modes.get(rel, 0o644))
        for rel, target in self.symlinks.items():
            tree.symlink(ctx, rel, target)
        for rel, existing in self.hardlinks.items():
            tree.hardlink(ctx, existing, rel)
        for rel, value in self.initial_xattrs.items():
            import os

            os.setxattr(ctx / rel, "user.sound", value.encode())
        for rel, mode in self.modes.items():
            if (ctx / rel).is_dir():
                import os

                os.chmod(ctx / rel, mode)
        tree.retime(ctx, *[str(p.relative_to(ctx)) for p in ctx.rglob("*")])


def ignore_text(fixed: tuple[str, ...], toggles_on: tuple[str, ...]) -> str:
    return "".join(f"{line}\n" for line in (*fixed, *toggles_on))


def _tgz(files: list[tuple[str, str, int]]) -> Callable[[str], bytes]:
    return lambda v: tree.tar_bytes([(n, c.format(v=v), m) for n, c, m in files], compress=True)


def _tar(files: list[tuple[str, str, int]]) -> Callable[[str], bytes]:
    return lambda v: tree.tar_bytes([(n, c.format(v=v), m) for n, c, m in files])


# (no %h: see the copy-nlink project)
MANIFEST = ("find . | sort > /tmp/list && while read -r f; do stat -c '%n %F %a %u:%g %N' "
            "\"$f\"; done < /tmp/list")

PROJECTS: tuple[Project, ...] = (
    Project(
        name="tree",
        dockerfile=(
            "FROM base\n"
            "WORKDIR /app\n"
            "COPY . .\n"
            f"RUN {MANIFEST} > /manifest\n"
        ),
        dockerignore=(".dockerignore", "*.log", "!keep.log", "tmp/"),
        ignore_toggles=("docs/**/*.md", "!docs/README.md", "data/b.txt", "src/c.sh"),
        edits={"src/a.txt": "alpha {v}\n", "src/b.txt": "bravo {v}\n",
               "src/c.sh": "#!/bin/sh\necho {v}\n", "docs/README.md": "readme {v}\n",
               "docs/guide/x.md": "guide {v}\n", "keep.log": "keep {v}\n",
               "data/a.txt": "data {v}\n"},
        ignored_edits={"debug.log": "debug {v}\n", "tmp/cache.bin": "cache {v}\n"},
        modes={"src/c.sh": 0o755},
        symlinks={"link-to-a": "src/a.txt", "link-dir": "src", "dangling": "nowhere"},
        hardlinks={"data/b.txt": "data/a.txt"},
        initial_xattrs={"src/a.txt": "one"},
        mode_choices={"src/c.sh": (0o755, 0o644, 0o700), "src": (0o755, 0o700, 0o775),
                      "docs/README.md": (0o644, 0o600, 0o664)},
        owner_paths=("src/a.txt", "docs", "keep.log"),
        xattr_paths=("src/a.txt", "src/b.txt"),
        repoint={"link-to-a": ("src/a.txt", "src/b.txt", "missing"),
                 "dangling": ("nowhere", "src")},
        file_or_link={"src/b.txt": ("bravo {v}\n", "a.txt")},
        hardlink_pairs=(("data/a.txt", "data/b.txt"),),
        addable=("src", "docs"),
        during_build=(3, "src/a.txt"),
    ),
    Project(
        name="multistage",
        dockerfile=(
            "FROM base AS builder\n"
            "ARG FLAVOUR=plain\n"
            "WORKDIR /build\n"
            "COPY src/ ./src/\n"
            "RUN cat src/*.txt > joined && echo \"flavour=$FLAVOUR\" >> joined\n"
            "\n"
            "FROM base AS tools\n"
            "COPY tools/ /tools/\n"
            "RUN chmod 755 /tools/run.sh\n"
            "\n"
            "FROM base\n"
            "COPY --from=builder /build/joined /out/joined\n"
            "COPY --from=tools /tools/ /usr/local/bin/\n"
            "COPY --from=0 /build/src/ /out/src/\n"
            "RUN sh /usr/local/bin/run.sh /out > /out/report\n"
        ),
        edits={"src/one.txt": "one {v}\n", "src/two.txt": "two {v}\n",
               "tools/run.sh": "#!/bin/sh\n# {v}\nls \"$1\" | sort; cat \"$1/joined\"\n",
               "tools/helper.txt": "helper {v}\n"},
        mode_choices={"tools/run.sh": (0o644, 0o755), "src/two.txt": (0o644, 0o600)},
        owner_paths=("src/one.txt",),
        file_or_link={"src/two.txt": ("two {v}\n", "one.txt")},
        addable=("src",),
        during_build=(4, "src/one.txt"),
        args={"FLAVOUR": (None, "spicy", "mild")},
        targets=(None, "builder", "tools"),
    ),
    Project(
        name="bind-context",
        dockerfile=(
            "FROM base\n"
            "COPY app.conf /etc/app.conf\n"
            "RUN --mount=type=bind,target=/src cd /src && find . | sort > /seen"
            " && cat conf/*.conf > /conf-all\n"
            "RUN --mount=type=bind,source=conf,target=/conf cat /conf/main.conf > /main.conf\n"
        ),
        dockerignore=(".dockerignore", "conf/private.conf", "*.tmp"),
        ignore_toggles=("old/",),
        files={"old/x.txt": "old\n"},
        edits={"app.conf": "app {v}\n", "conf/main.conf": "main {v}\n",
               "conf/extra.conf": "extra {v}\n"},
        bound_ignored_edits={"conf/private.conf": "private {v}\n", "scratch.tmp": "tmp {v}\n"},
        mode_choices={"conf/main.conf": (0o644, 0o600, 0o755)},
        symlinks={"conf/link.conf": "main.conf"},
        repoint={"conf/link.conf": ("main.conf", "extra.conf")},
        owner_paths=("conf/extra.conf",),
        xattr_paths=("conf/main.conf",),
    ),
    Project(
        name="bind-stage-image",
        dockerfile=(
            "FROM base AS gen\n"
            "COPY gen.sh /gen.sh\n"
            "RUN sh /gen.sh > /generated\n"
            "\n"
            "FROM base\n"
            "RUN --mount=type=bind,from=gen,target=/g cat /g/generated > /from-stage\n"
            "RUN --mount=type=bind,from=altbind,source=/etc,target=/e cat /e/variant"
            " > /from-image\n"
            "COPY --from=alt /data/ /alt-data/\n"
        ),
        edits={"gen.sh": "echo generated {v}\n"},
        mode_choices={"gen.sh": (0o644, 0o755)},
        images=("base:latest", "alt:latest", "altbind:latest"),
    ),
    Project(
        name="cache-mount",
        dockerfile=(
            "FROM base\n"
            "COPY list.txt /list.txt\n"
            "RUN --mount=type=cache,target=/cache,id=sound-list"
            " sh -c 'cp /list.txt /cache/last; sort /list.txt > /sorted'\n"
            "RUN --mount=type=cache,target=/cache2,sharing=locked"
            " --mount=type=tmpfs,target=/scratch"
            " sh -c 'n=$(cat /cache2/n 2>/dev/null || echo 0); echo $((n+1)) > /cache2/n;"
            " cp /list.txt /scratch/x; wc -l < /scratch/x > /count'\n"
        ),
        edits={"list.txt": "c {v}\nb\na\n"},
        mode_choices={"list.txt": (0o644, 0o600)},
        xattr_paths=("list.txt",),
        during_build=(2, "list.txt"),
    ),
    Project(
        name="args-env",
        dockerfile=(
            "ARG BASE_TAG=latest\n"
            "FROM base:${BASE_TAG}\n"
            "ARG GREETING=hello\n"
            "ARG TARGET_OS=linux\n"
            "ARG NAME_LEN=abc\n"
            "ARG FROM_ENV=unset\n"
            "ENV STAGE_ENV=fixed\n"
            "COPY build.sh /build.sh\n"
            "RUN echo \"$GREETING $STAGE_ENV\" > /greeting\n"
            "RUN sh /build.sh > /build-out\n"
            "RUN echo ${#NAME_LEN} > /name-len\n"
            "RUN echo \"from-env=$FROM_ENV\" > /from-env\n"
        ),
        edits={"build.sh": "echo \"os=$TARGET_OS\" # {v}\n"},
        args={"GREETING": (None, "hi", "greetings"), "BASE_TAG": (None, "one", "two")},
        indirect_args={"TARGET_OS": (None, "plan9", "aix"), "NAME_LEN": (None, "a", "abcdef")},
        env_args={"FROM_ENV": (None, "alpha", "beta")},
        images=("base:latest", "base:one", "base:two"),
    ),
    Project(
        name="archives",
        dockerfile=(
            "FROM base\n"
            "ADD bundle.tar.gz /opt/\n"
            "ADD plain.tar /deep/er/path/\n"
            "COPY bundle.tar.gz /raw/\n"
            "RUN find /opt /deep | sort > /tree\n"
        ),
        archives={
            "bundle.tar.gz": _tgz([("bin/", "", 0o755), ("bin/tool", "tool {v}\n", 0o755),
                                   ("share/doc.txt", "doc\n", 0o644)]),
            "plain.tar": _tar([("a.txt", "a {v}\n", 0o600), ("sub/", "", 0o750),
                               ("sub/b.txt", "b\n", 0o644)]),
        },
        mode_choices={"plain.tar": (0o644, 0o600)},
    ),
    Project(
        name="user-workdir",
        dockerfile=(
            "FROM base\n"
            "USER app\n"
            "WORKDIR /home/app/work/deeper\n"
            "COPY --chown=app:app files/ ./\n"
            "COPY --chmod=640 files/secret.txt /etc/app-secret\n"
            "USER root\n"
            "RUN stat -c '%n %a %u:%g' /home/app/work /home/app/work/deeper /etc/app-secret"
            " > /perms && id app >> /perms\n"
        ),
        edits={"files/a.txt": "a {v}\n", "files/secret.txt": "secret {v}\n"},
        mode_choices={"files/a.txt": (0o644, 0o755, 0o600), "files": (0o755, 0o700)},
        owner_paths=("files/a.txt", "files"),
        xattr_paths=("files/a.txt",),
    ),
    Project(
        name="symlinks",
        dockerfile=(
            "FROM base\n"
            "COPY links/ /links/\n"
            "COPY links/to-file /resolved-file\n"
            "COPY via-dir/inner.txt /via-inner.txt\n"
            "RUN cd /links && " + MANIFEST + " > /links.txt\n"
        ),
        edits={"links/a.txt": "a {v}\n", "links/b.txt": "b {v}\n",
               "real-dir/inner.txt": "inner {v}\n", "other-dir/inner.txt": "other {v}\n"},
        symlinks={"links/to-file": "a.txt", "via-dir": "real-dir", "links/maybe": "b.txt"},
        repoint={"links/to-file": ("a.txt", "b.txt"), "via-dir": ("real-dir", "other-dir")},
        file_or_link={"links/maybe": ("mb {v}\n", "b.txt")},
        mode_choices={"links/a.txt": (0o644, 0o755)},
    ),
    Project(
        name="network-umask",
        dockerfile=(
            "FROM base\n"
            "RUN ls /sys/class/net > /ifaces\n"
            "RUN --network=none ls /sys/class/net > /ifaces-none\n"
            "WORKDIR /made/by/workdir\n"
            "RUN mkdir -p /made/by/run && stat -c '%n %a' /made /made/by /made/by/workdir"
            " /made/by/run > /modes\n"
            "COPY note.txt ./\n"
        ),
        edits={"note.txt": "note {v}\n"},
    ),
    Project(
        name="heredoc-link",
        dockerfile=(
            "FROM base\n"
            "COPY --link app/ /app/\n"
            "COPY <<EOF /etc/conf.txt\n"
            "value=1\n"
            "EOF\n"
            "RUN <<EOF\n"
            "cat /app/*.txt /etc/conf.txt > /all\n"
            "EOF\n"
            "COPY --link --chmod=755 app/run.sh /usr/local/bin/run\n"
        ),
        edits={"app/one.txt": "one {v}\n", "app/two.txt": "two {v}\n",
               "app/run.sh": "#!/bin/sh\necho {v}\n"},
        mode_choices={"app/one.txt": (0o644, 0o600), "app/run.sh": (0o644, 0o700)},
        owner_paths=("app/two.txt",),
        addable=("app",),
    ),
    Project(
        name="ignore-pattern",
        dockerfile=(
            "FROM base\n"
            "COPY . /ctx/\n"
            "RUN cat '/ctx/v]^/f' > /odd\n"
        ),
        dockerignore=(".dockerignore", "build", "v]^"),
        files={"build/skipped.txt": "skipped\n"},
        edits={"normal.txt": "normal {v}\n"},
        pattern_files={"v]^/f": "odd {v}\n"},
    ),
    Project(
        name="ignore-symlink",
        dockerfile=(
            "FROM base\n"
            "COPY x /x\n"
        ),
        dockerignore=(".dockerignore", "ign"),
        edits={"data/file": "data {v}\n", "other/file": "other {v}\n"},
        symlinks={"ign/l": "../data", "x": "ign/l/file"},
        via_ignored_symlink={"ign/l": ("../data", "../other")},
        # BuildKit never sees ign/, so x dangles and the COPY fails; until #12 item 10 is
        # fixed dockyard follows the link. Either way both builds must agree.
        may_fail=True,
        in_random=False,
    ),
    Project(
        name="rw-bind",
        dockerfile=(
            "FROM base\n"
            "COPY input.txt /input.txt\n"
            "RUN --mount=type=bind,target=/src,rw sh -c 'cat /src/input.txt > /out;"
            " echo scribble >> /src/input.txt; touch /src/new-file'\n"
        ),
        edits={"input.txt": "input {v}\n"},
        known_project="rw-bind",
    ),
    Project(
        name="rw-bind-stage",
        dockerfile=(
            "FROM base AS stage\n"
            "COPY data.txt /data\n"
            "\n"
            "FROM base\n"
            "RUN --mount=type=bind,from=stage,target=/s,rw sh -c 'echo more >> /s/data"
            " && cat /s/data > /out'\n"
        ),
        edits={"data.txt": "data {v}\n"},
        known_project="rw-bind-stage",
    ),
    Project(
        name="copy-nlink",
        dockerfile=(
            "FROM base\n"
            "COPY . /app/\n"
            "RUN stat -c '%n %h' /app/a.txt /app/b.txt > /nlink\n"
        ),
        edits={"a.txt": "a {v}\n", "b.txt": "b {v}\n"},
        known_project="copy-nlink",
    ),
    Project(
        name="add-url",
        dockerfile=(
            "FROM base\n"
            "ARG URL_BASE\n"
            "ADD ${URL_BASE}/served.txt /fetched.txt\n"
            "RUN cat /fetched.txt > /copy\n"
        ),
        url_files={"served.txt": "served {v}\n"},
        edits={"unused.txt": "unused {v}\n"},
    ),
)

BY_NAME: Mapping[str, Project] = {p.name: p for p in PROJECTS}
