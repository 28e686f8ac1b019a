"""dockyard: a daemonless builder that turns a Dockerfile and a build context into an OCI image.

The public API is small and imported lazily, so ``import dockyard`` stays cheap::

    import dockyard
    result = dockyard.build("path/to/context", tags=["app:latest"])
    print(result.image_id)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dockyard._version import __version__

if TYPE_CHECKING:
    from dockyard.api import BuildResult, StepResult, build
    from dockyard.errors import (
        BuildError,
        ContextError,
        DockerfileError,
        DockyardError,
        Location,
        RunError,
    )

__all__ = [
    "BuildError",
    "BuildResult",
    "ContextError",
    "DockerfileError",
    "DockyardError",
    "Location",
    "RunError",
    "StepResult",
    "__version__",
    "build",
]

# Imported on first use: `dockyard --version` must not pay for dataclasses and friends.
_LAZY = {
    "build": "dockyard.api",
    "BuildResult": "dockyard.api",
    "StepResult": "dockyard.api",
    "BuildError": "dockyard.errors",
    "ContextError": "dockyard.errors",
    "DockerfileError": "dockyard.errors",
    "DockyardError": "dockyard.errors",
    "Location": "dockyard.errors",
    "RunError": "dockyard.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dockyard' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
