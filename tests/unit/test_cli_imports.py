"""The CLI is a client of the library API: no module of ``dockyard.cli`` reaches into the
store, snapshot, executor or registry rooms, at the top or lazily inside a function, under
``TYPE_CHECKING`` or through ``importlib``. They call ``dockyard.<command>`` instead.

Stricter still, the CLI imports only the API (``dockyard`` and the names of its
``__all__``), ``dockyard.errors``, the renderers (``dockyard.progress``), its own modules,
and the start-up machinery that must run before the API loads (:data:`STARTUP`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dockyard.cli

FORBIDDEN = ("dockyard.store", "dockyard.snapshot", "dockyard.executor", "dockyard.registry")
ALLOWED_ROOMS = ("dockyard.errors", "dockyard.progress", "dockyard.cli")
# before any API call: the version, the dataclass cache, the build-level up-to-date check
# (answered before the API is imported at all), the limits' and full-disk error mapping,
# and entering the user namespace as an ordinary user (in-process, before any thread starts),
# and the command's own heap tuning (which the library leaves to the program embedding it)
STARTUP = ("dockyard._version", "dockyard._dccache", "dockyard.quick", "dockyard.limits",
           "dockyard._fs", "dockyard.rootless", "dockyard._malloc")
CLI_DIR = Path(dockyard.cli.__file__).parent


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module a source file imports, wherever the statement is, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: dockyard.cli + ...
                base = ".".join(["dockyard", "cli"][: 3 - node.level] + ([base] if base else []))
            found.append((node.lineno, base))
            # "from dockyard import store" imports the room as well
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith("dockyard.")):
            # importlib.import_module("dockyard.store..."), __import__, lazy-name tables
            found.append((node.lineno, node.value))
    return found


def _is_forbidden(module: str) -> bool:
    return any(module == room or module.startswith(room + ".") for room in FORBIDDEN)


@pytest.mark.parametrize("path", sorted(CLI_DIR.glob("*.py")), ids=lambda p: p.name)
def test_cli_module_stays_off_the_rooms(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bad = [f"{path.name}:{line}: {module}" for line, module in _imports(tree)
           if _is_forbidden(module)]
    assert not bad, "the CLI must go through the dockyard API:\n" + "\n".join(bad)


def test_the_check_sees_every_kind_of_import() -> None:
    source = '''
import dockyard.store.db
from dockyard.registry import pull
from dockyard import snapshot
def f():
    from dockyard.executor.run import Executor
if TYPE_CHECKING:
    from dockyard.store import Store
importlib.import_module("dockyard.snapshot.overlay")
from dockyard import images
from dockyard.errors import UsageError
'''
    flagged = {line for line, module in _imports(ast.parse(source)) if _is_forbidden(module)}
    assert flagged == {2, 3, 4, 6, 8, 9}  # not the API or errors imports on lines 10-11


def _is_allowed(module: str) -> bool:
    import dockyard

    if module in ("dockyard", "dockyard.") or any(module == m or module.startswith(m + ".") for m in STARTUP):
        return True
    head, _, name = module.partition(".")
    if head == "dockyard" and name in dockyard.__all__:
        return True  # from dockyard import build
    return any(module == room or module.startswith(room + ".") for room in ALLOWED_ROOMS)


@pytest.mark.parametrize("path", sorted(CLI_DIR.glob("*.py")), ids=lambda p: p.name)
def test_cli_module_imports_only_the_api(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bad = [f"{path.name}:{line}: {module}" for line, module in _imports(tree)
           if module.startswith("dockyard") and not _is_allowed(module)]
    assert not bad, "the CLI imports only the dockyard API, errors and renderers:\n" + \
        "\n".join(bad)
