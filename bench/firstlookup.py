"""What a build imports before its first cache lookup (issue 18: "the full path of a build
that misses should import no more than it needs before the first cache lookup").

    FIRSTLOOKUP_OUT=report.md .venv/bin/python bench/firstlookup.py --root R build ...

Runs dockyard's CLI with the given arguments; when the solver first calls
``Store.get_cache_record``, it writes to FIRSTLOOKUP_OUT (default stderr) the time since this
script started, the modules loaded then (by top-level package) and which of a list of
heavy modules a lookup should not need are among them. The hook patches the method when
``dockyard.store.db`` is first imported, so the import order is the CLI's own.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections import Counter
from types import ModuleType
from typing import Any

T0 = time.perf_counter()
HEAVY = ("httpx", "httpcore", "rich", "isal", "zstandard", "ssl", "tarfile", "bz2", "lzma",
         "zlib", "gzip", "json", "email", "http", "urllib", "asyncio", "concurrent", "logging",
         "sqlite3", "hashlib", "inspect", "ast", "dataclasses", "typing", "pathlib", "shutil",
         "tempfile", "subprocess", "signal", "locale", "difflib", "csv", "uuid", "platform")


def _report() -> None:
    elapsed = time.perf_counter() - T0
    mods = sorted(sys.modules)
    tops = Counter(m.split(".")[0] for m in mods)
    ours = sorted(m for m in mods if m.startswith("dockyard"))
    lines = [f"first cache lookup after {elapsed * 1000:.0f} ms (from this script's start), "
             f"{len(mods)} modules loaded, {len(ours)} of them dockyard's", "",
             "heavy modules loaded by then: " + ", ".join(h for h in HEAVY if h in sys.modules),
             "", "dockyard modules: " + " ".join(m.removeprefix("dockyard.") for m in ours), "",
             "top-level packages by module count: "
             + ", ".join(f"{k} {v}" for k, v in tops.most_common(25)), ""]
    out = os.environ.get("FIRSTLOOKUP_OUT")
    if out:
        with open(out, "w") as f:
            f.write("\n".join(lines))
    else:
        sys.stderr.write("\n".join(lines))


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "dockyard.store.db":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        assert spec is not None and spec.loader is not None
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            store = module.Store
            real = store.get_cache_record
            done: list[bool] = []

            def get_cache_record(self: Any, key: str) -> Any:
                if not done:
                    done.append(True)
                    _report()
                return real(self, key)

            store.get_cache_record = get_cache_record

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def main() -> None:
    sys.meta_path.insert(0, _Hook())
    sys.argv = ["dockyard", *sys.argv[1:]]
    from dockyard.cli.main import entry

    entry()


if __name__ == "__main__":
    main()
