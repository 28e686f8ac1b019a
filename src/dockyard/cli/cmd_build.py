"""``dockyard build``: a thin layer over :func:`dockyard.build`.

It takes what ``docker build`` (buildx) takes: ``--pull`` alone means always, ``--load``
loads the image into the Docker daemon, ``--provenance``/``--sbom`` are accepted (no
attestations are made), ``--rm``/``--force-rm`` change nothing (no intermediate containers
are kept), ``BUILDKIT_PROGRESS`` sets the default ``--progress``, and ``--check`` lints the
Dockerfile instead of building.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockyard.progress.events import Event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("context", metavar="CONTEXT",
                        help="build context: a directory, a tarball, or - for a tar on stdin")
    parser.add_argument("-f", "--file", dest="dockerfile", metavar="FILE",
                        help="the Dockerfile (default: CONTEXT/Dockerfile; - for stdin)")
    parser.add_argument("-t", "--tag", dest="tags", action="append", default=[],
                        metavar="NAME[:TAG]", help="name the image (repeatable)")
    parser.add_argument("--build-arg", dest="build_args", action="append", default=[],
                        metavar="K[=V]", help="set a build arg (K alone: from the environment)")
    parser.add_argument("--target", metavar="STAGE", help="build this stage and what it needs")
    parser.add_argument("--no-cache", action="store_true",
                        help="rebuild every step (results are still recorded)")
    parser.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE[,...]",
                        help="rebuild the steps of these stages only")
    parser.add_argument("--cache-ttl", metavar="DURATION",
                        help="rebuild RUN steps whose cached result is older than this (e.g. 24h)")
    parser.add_argument("-o", "--output", dest="outputs", action="append", default=[],
                        metavar="SPEC",
                        help="type=oci|docker|local|tar,dest=PATH[,...] or type=registry")
    parser.add_argument("--label", dest="labels", action="append", default=[], metavar="K=V",
                        help="add a label to the image")
    parser.add_argument("--platform", dest="platforms", action="append", default=[],
                        metavar="OS/ARCH[/VARIANT][,...]",
                        help="target platform(s) (default: the host's); several build one "
                             "multi-platform image (an index); RUN steps of a foreign "
                             "platform run under QEMU emulation (see dockyard info)")
    parser.add_argument("--network",
                        choices=("default", "host", "none", "slirp4netns", "pasta"),
                        default="default",
                        help="network for RUN steps (default: the host's; slirp4netns or "
                             "pasta: a user-mode network of the build's own, "
                             "docs/rootless.md)")
    parser.add_argument("--secret", dest="secrets", action="append", default=[],
                        metavar="id=ID,src=FILE|env=VAR", help="expose a secret to RUN --mount")
    parser.add_argument("--ssh", action="append", default=[], metavar="default[=SOCKET]",
                        help="forward an SSH agent socket to RUN --mount=type=ssh")
    parser.add_argument("--allow", action="append", default=[], metavar="ENTITLEMENT",
                        help="allow an entitlement (security.insecure)")
    parser.add_argument("--build-context", dest="build_contexts", action="append", default=[],
                        metavar="NAME=DIR",
                        help="a named context (a directory, URL or docker-image://REF) for "
                        "FROM NAME, COPY --from=NAME and RUN --mount from=NAME; it replaces "
                        "a stage of that name")
    parser.add_argument("--jobs", type=int, default=None,
                        help="stages built at once (default: every stage whose dependencies are done)")
    parser.add_argument("--progress", default=None, choices=PROGRESS_MODES,
                        help="progress output (default: $BUILDKIT_PROGRESS, else tty on a "
                             "terminal, else plain)")
    parser.add_argument("-q", "--quiet", action="store_true", help="same as --progress quiet")
    parser.add_argument("--iidfile", metavar="FILE", help="write the image id to FILE")
    parser.add_argument("--metadata-file", metavar="FILE",
                        help="write build metadata (digests, per-step cache results) as JSON")
    parser.add_argument("--snapshotter", choices=("auto", "overlay", "native"), default="auto",
                        help="how RUN/COPY snapshots are made (default: overlay when it works)")
    parser.add_argument("--pull", type=_pull_policy, default="missing", nargs="?",
                        const="always", metavar="always|missing|never",
                        help="pull FROM images: missing (default: those not in the store), "
                             "always (also --pull alone), never (true and false mean always "
                             "and missing)")
    parser.add_argument("--cache-from", dest="cache_from", action="append", default=[],
                        metavar="SPEC",
                        help="import a shared build cache: type=registry,ref=REG/REPO:TAG | "
                             "type=local,src=DIR (repeatable; an unreadable one is a warning)")
    parser.add_argument("--cache-to", dest="cache_to", action="append", default=[],
                        metavar="SPEC",
                        help="export the build cache: type=registry,ref=REG/REPO:TAG"
                             "[,mode=min|max][,compression=gzip|zstd][,oci-mediatypes=true] | "
                             "type=local,dest=DIR | type=inline")
    parser.add_argument("--push", action="store_true",
                        help="push the image to its registry after the build (every -t name; "
                             "same as --output type=registry); prints the pushed digests")
    parser.add_argument("--load", action="store_true",
                        help="load the image into the Docker daemon ($DOCKER_HOST, else "
                             "/var/run/docker.sock; same as --output type=docker)")
    parser.add_argument("--add-host", dest="add_hosts", action="append", default=[],
                        metavar="NAME:ADDRESS", help="add a line to /etc/hosts of every RUN")
    parser.add_argument("--check", action="store_true",
                        help="lint the Dockerfile (as dockyard check) instead of building; "
                             "exit 1 when something was found")
    parser.add_argument("--provenance", nargs="?", const="true", metavar="VALUE",
                        help="accepted for docker compatibility: no attestations are made")
    parser.add_argument("--sbom", nargs="?", const="true", metavar="VALUE",
                        help="accepted for docker compatibility: no attestations are made")
    parser.add_argument("--rm", action="store_true",
                        help="accepted for docker compatibility: no intermediate containers "
                             "are kept")
    parser.add_argument("--force-rm", action="store_true",
                        help="accepted for docker compatibility (as --rm)")
    parser.add_argument("--ulimit", dest="ulimits", action="append", default=[],
                        metavar="NAME=SOFT[:HARD]",
                        help="a resource limit for every RUN, as docker build's "
                             "(e.g. nofile=1024:2048; -1 is unlimited)")
    parser.add_argument("--shm-size", metavar="SIZE",
                        help="size of /dev/shm in every RUN (default 64m)")
    parser.add_argument("--runtime", metavar="NAME|PATH",
                        help="OCI runtime: crun or runc (default: $DOCKYARD_RUNTIME, then probe)")


PROGRESS_MODES = ("auto", "tty", "plain", "rawjson", "quiet")
_PULL_WORDS = ("always", "missing", "never", "true", "false")


def normalize_argv(argv: list[str]) -> list[str]:
    """``--pull`` alone means always, as in docker: make sure argparse does not take the next
    argument (the context, usually) as its value."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--pull" and (i + 1 >= len(out) or out[i + 1].lower() not in _PULL_WORDS):
            out[i] = "--pull=always"
    return out


def _pull_policy(text: str) -> str:
    value = {"true": "always", "false": "missing"}.get(text.lower(), text.lower())
    if value not in ("always", "missing", "never"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected always, missing or never")
    return value


def _pairs(items: list[str], what: str) -> dict[str, str]:
    from dockyard.errors import UsageError

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise UsageError(f"invalid {what} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _progress_mode(args: argparse.Namespace) -> str:
    from dockyard.errors import UsageError

    if args.quiet:
        return "quiet"
    if args.progress:
        return str(args.progress)
    env = os.environ.get("BUILDKIT_PROGRESS", "").strip().lower()
    if env and env not in PROGRESS_MODES:
        raise UsageError(f"BUILDKIT_PROGRESS={env}: expected one of {', '.join(PROGRESS_MODES)}")
    return env or "auto"


def _check(args: argparse.Namespace) -> int:
    """``build --check``: the findings, then buildx's closing line; 1 if anything was found."""
    from dockyard import check
    from dockyard.errors import UsageError

    if not os.path.isdir(args.context) and args.dockerfile in (None, "-"):
        raise UsageError("build --check needs a directory context (or -f FILE)")
    result = check(args.context, dockerfile=args.dockerfile)
    for finding in result.findings:
        print(finding)
    count = len(result.findings)
    if count == 0:
        print("Check complete, no warnings found.")
        return 0
    noun = "warning has" if count == 1 else "warnings have"
    print(f"Check complete, {count} {noun} been found!")
    return 1


def run(args: argparse.Namespace) -> int:
    from dockyard import build
    from dockyard.progress.render import make_renderer
    from dockyard.quick import Recorder

    if args.check:
        return _check(args)
    mode = _progress_mode(args)
    provenance_off = ("false", "0", "mode=off", None)
    if args.provenance not in provenance_off or args.sbom not in provenance_off:
        print("WARNING: --provenance/--sbom: dockyard makes no attestations; building without",
              file=sys.stderr)
    # quiet: the id is printed below, unless an output took standard output
    renderer = make_renderer(mode, sys.stderr, stdout=_Discard() if mode == "quiet" else None)
    runtime = args.runtime or os.environ.get("DOCKYARD_RUNTIME")
    # the walk for the up-to-date check starts before the build reads anything
    recorder = Recorder.start(args.argv, args.root) if getattr(args, "argv", None) else None
    on_event = renderer.handle
    if recorder is not None:
        def on_event(event: Event) -> None:
            recorder.handle(event)
            renderer.handle(event)
    try:
        result = build(
            args.context,
            dockerfile=args.dockerfile,
            tags=args.tags,
            build_args=args.build_args,
            target=args.target,
            no_cache=args.no_cache,
            no_cache_filter=[s for item in args.no_cache_filter for s in item.split(",")],
            cache_ttl=args.cache_ttl,
            outputs=[*args.outputs, *(["type=image,push=true"] if args.push else []),
                     *(["type=docker"] if args.load else [])],
            labels=_pairs(args.labels, "--label"),
            platform=",".join(args.platforms) or None,
            network=args.network,
            secrets=args.secrets,
            ssh=args.ssh,
            allow=args.allow,
            build_contexts=_pairs(args.build_contexts, "--build-context"),
            jobs=args.jobs,
            root=args.root,
            snapshotter=args.snapshotter,
            runtime=runtime,
            on_event=on_event,
            iidfile=args.iidfile,
            metadata_file=args.metadata_file,
            stdin=sys.stdin.buffer if args.context == "-" or args.dockerfile == "-" else None,
            pull=args.pull,
            quick=recorder,
            add_hosts=args.add_hosts,
            ulimits=args.ulimits,
            shm_size=args.shm_size,
            cache_from=args.cache_from,
            cache_to=args.cache_to,
        )
    finally:
        renderer.close()
    last_line = None
    if mode not in ("quiet",):
        names = ", ".join(result.tags)
        last_line = f"writing image {result.image_id}" + (f" as {names}" if names else "")
        print(last_line, file=sys.stderr)
        for line in result.loaded:
            print(line, file=sys.stderr)
    elif not result.wrote_stdout:
        print(result.image_id)
    for reference, digest in result.pushed:
        # the digest a deploy pins; on stderr with the progress, like buildx's
        # "pushing manifest for NAME@DIGEST"
        print(f"pushed {reference}@{digest}", file=sys.stderr)
    if recorder is not None:
        # the record is an optimisation: the build itself has succeeded
        with contextlib.suppress(OSError):
            recorder.write(result.image_id, last_line)
    return 0


class _Discard(io.StringIO):
    """Where the quiet renderer's id goes: the command prints it itself."""

    def write(self, text: str) -> int:
        return len(text)
