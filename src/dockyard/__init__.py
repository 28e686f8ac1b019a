"""dockyard: a daemonless builder that turns a Dockerfile and a build context into an OCI image.

Every command of the ``dockyard`` CLI is a function here, returning a frozen dataclass; the
CLI only parses arguments, calls one and formats the result. See docs/api.md::

    import dockyard
    result = dockyard.build("path/to/context", tags=["app:latest"])
    print(result.image_id)
    for image in dockyard.images():
        print(image.repository, image.tag, image.size)

Names are imported on first use, so ``import dockyard`` stays cheap and each call pays only
for the rooms it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dockyard._version import __version__

if TYPE_CHECKING:
    from dockyard._api._archives import (
        CopyResult,
        ExportResult,
        ImportResult,
        LoadedImage,
        LoadResult,
        SaveResult,
        cp,
        export,
        import_,
        load,
        save,
    )
    from dockyard._api._cleanup import (
        CacheEntry,
        CachePruneResult,
        PruneResult,
        cache_du,
        cache_ls,
        cache_prune,
        prune,
    )
    from dockyard._api._containers import RunResult, run
    from dockyard._api._frontend import (
        CheckResult,
        StageInfo,
        StagesResult,
        check,
        expand_word,
        parse_dockerfile,
        resolve_stages,
    )
    from dockyard._api._images import (
        ImageDetails,
        ImageSummary,
        ManifestResult,
        RemoveResult,
        TagResult,
        history,
        images,
        inspect,
        manifest_create,
        rmi,
        tag,
    )
    from dockyard._api._registries import (
        LoginResult,
        LoginStatus,
        LogoutResult,
        PullResult,
        PushResult,
        get_login,
        login,
        logout,
        pull,
        push,
    )
    from dockyard._api._root import default_root
    from dockyard._api._store import StoreCheckResult, StoreProblem, store_check
    from dockyard._api._system import (
        RootlessStatus,
        RuntimeStatus,
        SnapshotterStatus,
        SystemInfo,
        info,
    )
    from dockyard.api import BuildResult, StepResult, build
    from dockyard.dockerfile.check import Finding
    from dockyard.errors import (
        BuildError,
        ContextError,
        DockerfileError,
        DockyardError,
        ExecutorError,
        LayerError,
        Location,
        NotFoundError,
        RegistryError,
        RunError,
        StoreError,
        UsageError,
    )
    from dockyard.progress.events import Event, ProgressMessage
    from dockyard.store.cache_gc import CacheUsage, KindUsage
    from dockyard.store.images import HistoryItem

# Imported on first use: `dockyard --version` must not pay for dataclasses and friends.
_LAZY = {
    # building
    "build": "dockyard.api",
    "BuildResult": "dockyard.api",
    "StepResult": "dockyard.api",
    "default_root": "dockyard._api._root",
    "Event": "dockyard.progress.events",
    "ProgressMessage": "dockyard.progress.events",
    # the Dockerfile, without a build
    "check": "dockyard._api._frontend",
    "parse_dockerfile": "dockyard._api._frontend",
    "expand_word": "dockyard._api._frontend",
    "resolve_stages": "dockyard._api._frontend",
    "CheckResult": "dockyard._api._frontend",
    "StagesResult": "dockyard._api._frontend",
    "StageInfo": "dockyard._api._frontend",
    "Finding": "dockyard.dockerfile.check",
    # images in the store
    "images": "dockyard._api._images",
    "inspect": "dockyard._api._images",
    "history": "dockyard._api._images",
    "tag": "dockyard._api._images",
    "manifest_create": "dockyard._api._images",
    "ManifestResult": "dockyard._api._images",
    "rmi": "dockyard._api._images",
    "ImageSummary": "dockyard._api._images",
    "ImageDetails": "dockyard._api._images",
    "TagResult": "dockyard._api._images",
    "RemoveResult": "dockyard._api._images",
    "HistoryItem": "dockyard.store.images",
    # registries
    "pull": "dockyard._api._registries",
    "push": "dockyard._api._registries",
    "login": "dockyard._api._registries",
    "logout": "dockyard._api._registries",
    "get_login": "dockyard._api._registries",
    "PullResult": "dockyard._api._registries",
    "PushResult": "dockyard._api._registries",
    "LoginResult": "dockyard._api._registries",
    "LoginStatus": "dockyard._api._registries",
    "LogoutResult": "dockyard._api._registries",
    # archives and files
    "save": "dockyard._api._archives",
    "load": "dockyard._api._archives",
    "import_": "dockyard._api._archives",
    "export": "dockyard._api._archives",
    "cp": "dockyard._api._archives",
    "SaveResult": "dockyard._api._archives",
    "LoadResult": "dockyard._api._archives",
    "LoadedImage": "dockyard._api._archives",
    "ImportResult": "dockyard._api._archives",
    "ExportResult": "dockyard._api._archives",
    "CopyResult": "dockyard._api._archives",
    # containers
    "run": "dockyard._api._containers",
    "RunResult": "dockyard._api._containers",
    # freeing space
    "prune": "dockyard._api._cleanup",
    "cache_ls": "dockyard._api._cleanup",
    "cache_du": "dockyard._api._cleanup",
    "cache_prune": "dockyard._api._cleanup",
    "PruneResult": "dockyard._api._cleanup",
    "CacheEntry": "dockyard._api._cleanup",
    "CachePruneResult": "dockyard._api._cleanup",
    "CacheUsage": "dockyard.store.cache_gc",
    "KindUsage": "dockyard.store.cache_gc",
    # the store itself
    "store_check": "dockyard._api._store",
    "StoreCheckResult": "dockyard._api._store",
    "StoreProblem": "dockyard._api._store",
    # the host
    "info": "dockyard._api._system",
    "SystemInfo": "dockyard._api._system",
    "RuntimeStatus": "dockyard._api._system",
    "RootlessStatus": "dockyard._api._system",
    "SnapshotterStatus": "dockyard._api._system",
    # errors
    "BuildError": "dockyard.errors",
    "ContextError": "dockyard.errors",
    "DockerfileError": "dockyard.errors",
    "DockyardError": "dockyard.errors",
    "ExecutorError": "dockyard.errors",
    "LayerError": "dockyard.errors",
    "Location": "dockyard.errors",
    "NotFoundError": "dockyard.errors",
    "RegistryError": "dockyard.errors",
    "RunError": "dockyard.errors",
    "StoreError": "dockyard.errors",
    "UsageError": "dockyard.errors",
}

__all__ = [
    "BuildError",
    "BuildResult",
    "CacheEntry",
    "CachePruneResult",
    "CacheUsage",
    "CheckResult",
    "ContextError",
    "CopyResult",
    "DockerfileError",
    "DockyardError",
    "Event",
    "ExecutorError",
    "ExportResult",
    "Finding",
    "HistoryItem",
    "ImageDetails",
    "ImageSummary",
    "ImportResult",
    "KindUsage",
    "LayerError",
    "LoadResult",
    "LoadedImage",
    "Location",
    "LoginResult",
    "LoginStatus",
    "LogoutResult",
    "ManifestResult",
    "NotFoundError",
    "ProgressMessage",
    "PruneResult",
    "PullResult",
    "PushResult",
    "RegistryError",
    "RemoveResult",
    "RootlessStatus",
    "RunError",
    "RunResult",
    "RuntimeStatus",
    "SaveResult",
    "SnapshotterStatus",
    "StageInfo",
    "StagesResult",
    "StepResult",
    "StoreCheckResult",
    "StoreError",
    "StoreProblem",
    "SystemInfo",
    "TagResult",
    "UsageError",
    "__version__",
    "build",
    "cache_du",
    "cache_ls",
    "cache_prune",
    "check",
    "cp",
    "default_root",
    "expand_word",
    "export",
    "get_login",
    "history",
    "images",
    "import_",
    "info",
    "inspect",
    "load",
    "login",
    "logout",
    "manifest_create",
    "parse_dockerfile",
    "prune",
    "pull",
    "push",
    "resolve_stages",
    "rmi",
    "run",
    "save",
    "store_check",
    "tag",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dockyard' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
