"""The curated public API: ``dockyard.__all__`` is exactly the list below, every name in it
resolves (lazily), and ``import dockyard`` imports nothing else. Adding to the API is a
decision: update this list and docs/api.md together."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import dockyard

FUNCTIONS = [
    "build", "cache_du", "cache_ls", "cache_prune", "check", "cp", "default_root",
    "expand_word", "export", "get_login", "history", "images", "import_", "info", "inspect",
    "load", "login", "logout", "manifest_create", "parse_dockerfile", "prune", "pull", "push", "resolve_stages",
    "rmi", "run", "save", "store_check", "tag",
]
RESULTS = [
    "BuildResult", "CacheEntry", "CheckResult", "Finding", "StageInfo", "StagesResult", "CachePruneResult", "CacheUsage", "CopyResult",
    "ExportResult", "HistoryItem", "ImageDetails", "ImageSummary", "ImportResult",
    "KindUsage", "LoadResult", "LoadedImage", "LoginResult", "ManifestResult", "LoginStatus", "LogoutResult",
    "PruneResult", "PullResult", "PushResult", "RemoveResult", "RootlessStatus", "RunResult",
    "RuntimeStatus", "SaveResult", "SnapshotterStatus", "StepResult", "StoreCheckResult",
    "StoreProblem", "SystemInfo", "TagResult",
]
EVENTS = ["Event", "ProgressMessage"]
# calls that never open the store
STORELESS = ("check", "default_root", "expand_word", "parse_dockerfile", "resolve_stages")
ERRORS = [
    "BuildError", "ContextError", "DockerfileError", "DockyardError", "ExecutorError",
    "LayerError", "Location", "NotFoundError", "RegistryError", "RunError", "StoreError",
    "UsageError",
]


def test_all_is_the_curated_list() -> None:
    expected = sorted([*FUNCTIONS, *RESULTS, *EVENTS, *ERRORS, "__version__"])
    assert sorted(dockyard.__all__) == expected
    assert list(dockyard.__all__) == sorted(dockyard.__all__)
    assert sorted(dir(dockyard)) == expected


def test_every_name_resolves() -> None:
    for name in dockyard.__all__:
        value = getattr(dockyard, name)
        assert value is not None, name
    for name in FUNCTIONS:
        assert callable(getattr(dockyard, name)), name
        assert inspect.getdoc(getattr(dockyard, name)), f"dockyard.{name} has no docstring"
    for name in ERRORS[:-1]:
        if name != "Location":
            assert issubclass(getattr(dockyard, name), dockyard.DockyardError), name


def test_unknown_names_raise_attribute_error() -> None:
    try:
        dockyard.no_such_thing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("dockyard.no_such_thing resolved")


def test_import_dockyard_stays_cheap() -> None:
    code = ("import sys, dockyard; "
            "print(sorted(m for m in sys.modules if m.startswith('dockyard')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['dockyard', 'dockyard._version']"


def test_api_calls_take_keyword_options() -> None:
    """Options are keyword-only after the operands, and every store call takes ``root``."""
    for name in FUNCTIONS:
        params = inspect.signature(getattr(dockyard, name)).parameters
        for param in params.values():
            if param.default is not inspect.Parameter.empty and param.kind not in (
                    param.KEYWORD_ONLY, param.VAR_KEYWORD):
                assert name in ("build", "check", "logout", "get_login", "images", "import_",
                                "push", "run"), f"{name}({param.name}) should be keyword-only"
        if name not in ("login", "logout", "get_login", *STORELESS):
            assert "root" in params, f"dockyard.{name} takes no root="


DOCS = Path(__file__).parents[2] / "docs" / "api.md"


def doc_sections() -> dict[str, str]:
    """docs/api.md's level-2 sections, by heading."""
    sections: dict[str, str] = {}
    heading = ""
    for line in DOCS.read_text().splitlines(keepends=True):
        if line.startswith("## "):
            heading = line[3:].strip()
            sections[heading] = ""
        elif heading:
            sections[heading] += line
    return sections


def test_docs_cover_every_function_and_type() -> None:
    """Each function has its own section with a runnable example that calls it (the
    examples are run by tests/integration/test_api_docs.py), and each type is named."""
    sections = doc_sections()
    for name in FUNCTIONS:
        found = [h for h in sections if h.startswith(f"`dockyard.{name}(")]
        assert found, f"docs/api.md has no section for dockyard.{name}"
        body = sections[found[0]]
        assert "```python" in body, f"the section of dockyard.{name} has no example"
        assert f"dockyard.{name}(" in body.split("```python", 1)[1], (
            f"the example of dockyard.{name} does not call it")
    text = DOCS.read_text()
    for name in RESULTS + EVENTS + ERRORS:
        assert f"`{name}`" in text or f"`{name}(" in text, f"docs/api.md never names {name}"
