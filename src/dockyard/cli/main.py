"""The ``dockyard`` command: global options, then one lazily imported module per subcommand.

Start-up is user time, so this module imports only argparse-free basics until it knows which
subcommand runs. Each subcommand lives in ``dockyard.cli.cmd_<name>`` and provides::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...
    def normalize_argv(argv: list[str]) -> list[str]: ...   # optional, before parsing

Exit codes are mapped from exception classes in one place, :func:`main`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import argparse

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("dockyard.cli.cmd_build", "Build an image from a Dockerfile"),
    "check": ("dockyard.cli.cmd_check", "Lint a Dockerfile"),
    "images": ("dockyard.cli.cmd_images", "List images in the store"),
    "image": ("dockyard.cli.cmd_image", "Image commands by docker's other names (image ls ...)"),
    "inspect": ("dockyard.cli.cmd_inspect", "Show an image's details as JSON"),
    "history": ("dockyard.cli.cmd_history", "Show an image's history"),
    "tag": ("dockyard.cli.cmd_tag", "Give an image another name"),
    "manifest": ("dockyard.cli.cmd_manifest", "Name images of several platforms as one"),
    "rmi": ("dockyard.cli.cmd_rmi", "Remove image names (and unreferenced images)"),
    "prune": ("dockyard.cli.cmd_prune", "Remove unreferenced blobs and snapshots"),
    "cp": ("dockyard.cli.cmd_cp", "Copy files out of an image (IMAGE:PATH DEST)"),
    "run": ("dockyard.cli.cmd_run", "Run an image's command"),
    "save": ("dockyard.cli.cmd_save", "Write images to a tar archive"),
    "load": ("dockyard.cli.cmd_load", "Load images from a docker or OCI archive"),
    "import": ("dockyard.cli.cmd_import", "Make an image from a root filesystem tarball"),
    "pull": ("dockyard.cli.cmd_pull", "Download an image from a registry"),
    "push": ("dockyard.cli.cmd_push", "Upload an image to a registry"),
    "login": ("dockyard.cli.cmd_login", "Store credentials for a registry"),
    "logout": ("dockyard.cli.cmd_login", "Remove the stored credentials of a registry"),
    "export": ("dockyard.cli.cmd_export", "Write an image's flattened filesystem as a tar"),
    "cache": ("dockyard.cli.cmd_cache", "Inspect and prune the build cache"),
    "store": ("dockyard.cli.cmd_store", "Check the store (and repair it): store check"),
    "info": ("dockyard.cli.cmd_info", "Show the runtime, snapshotter and store in use"),
    "debug": ("dockyard.cli.cmd_debug", "Frontend debugging: parse, expand, stages"),
    "completion": ("dockyard.cli.cmd_completion", "Print a shell completion script"),
}


# Commands that never touch files of the store with in-container ownership (snapshots,
# cache mounts): as an ordinary user they run outside dockyard's user namespace. Every
# other command enters it first (docs/rootless.md).
_OUTSIDE_NAMESPACE = frozenset((
    "check", "images", "inspect", "history", "tag", "manifest", "load", "import", "pull",
    "login", "logout", "debug", "completion",
))

# Commands that move layers through Python's buffers: glibc's heap is tuned for them first
# (dockyard/_malloc.py). The others start a little leaner without it.
_BULK = frozenset((
    "build", "cp", "run", "save", "load", "import", "pull", "push", "export",
))

# Global flags of the limits (dockyard/limits.py) -> the environment variable each sets.
_LIMIT_FLAGS: dict[str, str] = {
    "--max-layer-size": "DOCKYARD_MAX_LAYER_SIZE",
    "--max-ratio": "DOCKYARD_MAX_RATIO",
    "--max-entries": "DOCKYARD_MAX_ENTRIES",
    "--max-path-depth": "DOCKYARD_MAX_PATH_DEPTH",
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: dockyard [--root DIR] [--debug] COMMAND [ARGS...]",
        "",
        "A daemonless builder: Dockerfile + build context -> OCI image.",
        "",
        "global options:",
        "  --root DIR   store root (default: $DOCKYARD_ROOT, /var/lib/dockyard as root,",
        "               ~/.local/share/dockyard otherwise)",
        "  --debug      show tracebacks for errors",
        "  --max-layer-size SIZE   decompressed bytes per layer or archive (default 64GiB)",
        "  --max-ratio N           decompressed/compressed bytes past 256 MiB (default 100)",
        "  --max-entries N         entries per layer or archive (default 2000000)",
        "  --max-path-depth N      path components of an entry (default 256); 0: no limit",
        "  --version    print the version and exit",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'dockyard COMMAND --help' for a command's options."]
    return "\n".join(lines)


def build_parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of one subcommand (also used to generate the CLI reference)."""
    import argparse
    import importlib

    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"dockyard {name}", description=help_)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    root: str | None = None
    debug = False
    while args_in and args_in[0].startswith("-"):
        opt = args_in.pop(0)
        if opt in ("--version", "-v"):
            from dockyard._version import __version__

            print(f"dockyard {__version__}")
            return 0
        if opt in ("-h", "--help"):
            print(_usage())
            return 0
        if opt == "--debug":
            debug = True
        elif opt == "--root":
            if not args_in:
                print("dockyard: --root needs a directory", file=sys.stderr)
                return 2
            root = args_in.pop(0)
        elif opt.startswith("--root="):
            root = opt.split("=", 1)[1]
        elif opt.split("=", 1)[0] in _LIMIT_FLAGS:
            flag, eq, value = opt.partition("=")
            if not eq:
                if not args_in:
                    print(f"dockyard: {flag} needs a value", file=sys.stderr)
                    return 2
                value = args_in.pop(0)
            # The environment carries it to every unpack (dockyard/limits.py reads it).
            os.environ[_LIMIT_FLAGS[flag]] = value
        else:
            print(f"dockyard: unknown global option {opt}\n\n{_usage()}", file=sys.stderr)
            return 2
    if not args_in:
        print(_usage(), file=sys.stderr)
        return 2
    name = args_in.pop(0)
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"dockyard: unknown command {name!r}{hint}", file=sys.stderr)
        return 2
    if root is None:
        from dockyard import default_root

        root = default_root()
    if name == "build":
        from dockyard.quick import try_build

        code = try_build(args_in, root)
        if code is not None:
            return code
    return _dispatch(name, args_in, root, debug)


def _dispatch(name: str, argv: list[str], root: str, debug: bool) -> int:
    from dockyard._dccache import install

    install()  # before the first dataclass: see dockyard/_dccache.py
    from dockyard.errors import DockyardError

    try:
        if any(os.environ.get(env) for env in _LIMIT_FLAGS.values()):
            from dockyard.limits import current

            current()  # a bad limit is a usage error now, not in the middle of an unpack
        try:
            parser = build_parser(name)
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("dockyard."):
                print(f"dockyard: command {name!r} is not available in this build ({err})",
                      file=sys.stderr)
                return 1
            raise
        normalize = getattr(sys.modules.get(COMMANDS[name][0]), "normalize_argv", None)
        args = parser.parse_args(normalize(argv) if normalize else argv)
        args.argv = argv
        args.root = root
        args.debug = debug
        if name not in _OUTSIDE_NAMESPACE:
            from dockyard.rootless import enter, needed

            if needed():
                enter()  # an ordinary user: this process moves into its user namespace
        if name in _BULK:
            from dockyard._malloc import tune

            tune()
        code: int = args._run(args)
        return code
    except BrokenPipeError:
        # the reader of stdout went away (`save | tar t | head -1`): stop quietly with
        # 141 (128+SIGPIPE), as other tools do; later flushes go nowhere instead of failing
        _silence_stdout()
        return 141
    except DockyardError as err:
        if debug:
            import traceback

            traceback.print_exc()
        print(err.render(), file=sys.stderr)
        return err.exit_code
    except Exception as err:
        # A full disk is an ordinary error wherever it is met (docs/reliability.md).
        from dockyard._fs import as_no_space

        full = as_no_space(err, root)
        if full is None:
            raise
        if debug:
            import traceback

            traceback.print_exc()
        print(full.render(), file=sys.stderr)
        return full.exit_code
    except KeyboardInterrupt:
        print("dockyard: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null: buffered writers still holding output flush into nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def entry() -> NoReturn:
    """The ``dockyard`` executable: :func:`main`, then a quick exit.

    Tearing the interpreter down (module dicts, thousands of objects) took 20-25 ms after a
    build, 7% of a small rebuild. Once everything a normal exit does for us is done - the
    ``atexit`` handlers (temp dirs, caches), the standard streams flushed, no other thread
    still running - the process ends with ``os._exit``. Otherwise it exits normally.
    """
    code = main()
    import atexit
    import threading

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        _silence_stdout()
        code = code or 141
    except OSError:
        sys.exit(code)
    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon
           for t in threading.enumerate()):
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    entry()
