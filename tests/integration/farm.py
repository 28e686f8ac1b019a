#!/usr/bin/env python3
"""A small build farm on one machine, sharing one build cache through a registry (issue 15).

Four hosts, each in a network namespace of its own (``ip netns``): a registry host running
Debian's ``docker-registry`` and three builder hosts A, B and C, joined by veth pairs to a
bridge inside the registry host's namespace (``10.199.0.0/24``; nothing is added to the
machine's own network, and no traffic leaves the namespaces). Each builder has its own store
and its own checkout of the same sources (at different paths, with different mtimes).

1. A builds ``main`` and exports its cache (``mode=max``) to ``REGISTRY/farm/cache:shared``.
2. A change is made and built on A (exporting again); B and C, each in their own checkout
   with the change applied, build it with ``--cache-from``: every step is a hit (no RUN
   executes) and they produce A's image digest (``SOURCE_DATE_EPOCH`` set).
3. Three branches, each changing a different file, are built on A, B and C *at once*, all
   exporting to the same ref. Then a fresh store on each host builds each branch from the
   cache: every step of every branch is a hit, on every host: no export lost another's.

Run as root: ``python3 tests/integration/farm.py`` (``--keep`` keeps the work directory).
Exits 0 when every check holds; prints one line per check. ``test_farm.py`` runs it in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: bases.py

SUBNET = "10.199.0"
REGISTRY_IP = f"{SUBNET}.1"
PORT = 5000
SDE = "1700000000"

BASE = f"{REGISTRY_IP}:{PORT}/library/busybox:latest"
DOCKERFILE = f"""\
FROM {BASE} AS deps
COPY deps.txt /src/deps.txt
RUN sort /src/deps.txt > /src/deps.sorted && sleep 1

FROM deps AS build
COPY app/ /src/app/
RUN cat /src/deps.sorted /src/app/* | sha256sum > /src/app.sum

FROM {BASE}
COPY --from=build /src/app.sum /app.sum
COPY --from=deps /src/deps.sorted /deps.sorted
RUN wc -c /app.sum /deps.sorted > /manifest
"""

SOURCES = {
    "Dockerfile": DOCKERFILE,
    "deps.txt": "zlib\nopenssl\nlibc\n",
    "app/main.c": "int main(void) { return 0; }\n",
    "app/util.c": "int util(void) { return 1; }\n",
    "app/README": "the app\n",
}
BRANCHES = {
    "feature-a": {"app/main.c": "int main(void) { return 2; }\n"},
    "feature-b": {"app/util.c": "int util(void) { return 3; }\n"},
    "feature-c": {"deps.txt": "zlib\nopenssl\nlibc\nlibfoo\n"},
}


class Farm:
    def __init__(self, work: Path, dockyard: Sequence[str]) -> None:
        self.work = work
        self.dockyard = list(dockyard)
        tag = f"{os.getpid() % 100000}"
        self.ns = {h: f"dyfarm{tag}-{h}" for h in ("reg", "a", "b", "c")}
        self.registry: subprocess.Popen[bytes] | None = None
        self.failures: list[str] = []
        self.env = {"SOURCE_DATE_EPOCH": SDE, "DOCKYARD_NO_QUICK": "1",
                    "DOCKYARD_INSECURE_REGISTRIES": f"{REGISTRY_IP}:{PORT}"}

    # --- hosts ---------------------------------------------------------------------------

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def up(self) -> None:
        reg = self.ns["reg"]
        for name in self.ns.values():
            self.ip("netns", "add", name)
        self.ip("-n", reg, "link", "set", "lo", "up")
        self.ip("-n", reg, "link", "add", "br0", "type", "bridge")
        self.ip("-n", reg, "addr", "add", f"{REGISTRY_IP}/24", "dev", "br0")
        self.ip("-n", reg, "link", "set", "br0", "up")
        for number, host in enumerate(("a", "b", "c"), start=2):
            ns = self.ns[host]
            # both ends are made inside the namespaces: the machine's network is untouched
            self.ip("link", "add", f"to-{host}", "netns", reg, "type", "veth",
                    "peer", "name", "eth0", "netns", ns)
            self.ip("-n", reg, "link", "set", f"to-{host}", "master", "br0", "up")
            self.ip("-n", ns, "addr", "add", f"{SUBNET}.{number}/24", "dev", "eth0")
            self.ip("-n", ns, "link", "set", "eth0", "up")
            self.ip("-n", ns, "link", "set", "lo", "up")
        self.start_registry()

    def start_registry(self) -> None:
        root = self.work / "registry"
        root.mkdir()
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            f"http:\n  addr: {REGISTRY_IP}:{PORT}\n")
        log = open(root / "registry.log", "wb")  # noqa: SIM115 (the process keeps it)
        self.registry = subprocess.Popen(
            [*self.enter("reg"), "docker-registry", "serve", str(config)],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = self.run_on("a", [sys.executable, "-c", "import socket; socket."
                                      f"create_connection(('{REGISTRY_IP}', {PORT}), 1)"],
                                check=False)
            if probe.returncode == 0:
                return
            if self.registry.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("the registry host did not start: "
                           + (root / "registry.log").read_text()[-2000:])

    def down(self) -> None:
        if self.registry is not None:
            self.registry.terminate()
            try:
                self.registry.wait(10)
            except subprocess.TimeoutExpired:
                self.registry.kill()
                self.registry.wait()
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def enter(self, host: str) -> list[str]:
        """The command prefix that runs a process in ``host``'s network namespace only.
        (Not ``ip netns exec``: it also mounts a fresh /sys, hiding the cgroup file systems
        the OCI runtime needs.)"""
        return ["nsenter", f"--net=/run/netns/{self.ns[host]}", "--"]

    # --- builders ------------------------------------------------------------------------

    def run_on(self, host: str, argv: Sequence[str], *, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ, **(env or {}))
        done = subprocess.run([*self.enter(host), *argv], text=True,
                              capture_output=True, env=full_env, timeout=600)
        if check and done.returncode != 0:
            raise RuntimeError(f"host {host}: {' '.join(argv)} failed "
                               f"({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done

    def publish_base(self) -> None:
        """Host A imports the busybox base and pushes it to the registry host; every builder
        then pulls it on its first FROM, as CI runners pull their bases."""
        from bases import busybox_rootfs_tar

        root = self.work / "host-a" / "base-store"
        self.run_on("a", [*self.dockyard, "--root", str(root), "import",
                          str(busybox_rootfs_tar()), BASE], env=self.env)
        self.run_on("a", [*self.dockyard, "--root", str(root), "push", BASE], env=self.env)

    def store(self, host: str, name: str = "store") -> Path:
        """An empty store of ``host`` (its bases are pulled by the first build)."""
        return self.work / f"host-{host}" / name

    def checkout(self, host: str, name: str, changes: dict[str, str] | None = None) -> Path:
        """The sources (with ``changes``) at a path of this host's own, with random mtimes."""
        path = self.work / f"host-{host}" / "src" / f"{name}-{random.randrange(10**6)}"
        for rel, text in {**SOURCES, **(changes or {})}.items():
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            stamp = time.time() - random.randrange(10**7)
            os.utime(target, (stamp, stamp))
        return path

    def build(self, host: str, store: Path, ctx: Path, *, cache_from: bool = True,
              cache_to: bool = True) -> dict[str, object]:
        ref = f"{REGISTRY_IP}:{PORT}/farm/cache:shared"
        meta = ctx.parent / f"{ctx.name}.{host}.{random.randrange(10**6)}.json"
        argv = [*self.dockyard, "--root", str(store), "build", "--progress", "plain",
                "--metadata-file", str(meta)]
        if cache_from:
            argv += ["--cache-from", f"type=registry,ref={ref}"]
        if cache_to:
            argv += ["--cache-to", f"type=registry,ref={ref},mode=max"]
        done = self.run_on(host, [*argv, str(ctx)], env=self.env)
        data: dict[str, object] = json.loads(meta.read_text())
        data["log"] = done.stderr
        return data

    # --- checks --------------------------------------------------------------------------

    def check(self, ok: bool, what: str, detail: str = "") -> None:
        print(("ok   " if ok else "FAIL ") + what + ("" if ok else f": {detail}"), flush=True)
        if not ok:
            self.failures.append(what)


def all_cached(meta: dict[str, object]) -> bool:
    steps = meta["steps"]
    assert isinstance(steps, list)
    return bool(steps) and all(s["cached"] for s in steps)


def misses(meta: dict[str, object]) -> list[str]:
    steps = meta["steps"]
    assert isinstance(steps, list)
    return [f"line {s['location']['line']}: {s['reason']}" for s in steps if not s["cached"]]


def scenario(farm: Farm) -> None:
    farm.publish_base()
    a_store, b_store, c_store = farm.store("a"), farm.store("b"), farm.store("c")

    first = farm.build("a", a_store, farm.checkout("a", "main"), cache_from=False)
    farm.check(not all_cached(first), "A builds main and exports the cache")

    change = {"app/README": "the app, changed on A\n"}
    on_a = farm.build("a", a_store, farm.checkout("a", "change", change))
    farm.check(misses(on_a) != [], "A builds a change (it misses from the COPY of app/)")
    digest_a = on_a["containerimage.digest"]
    for host, store in (("b", b_store), ("c", c_store)):
        got = farm.build(host, store, farm.checkout(host, "change", change), cache_to=False)
        farm.check(all_cached(got), f"the change built on A is a hit on {host.upper()} "
                   "(every step, so no RUN executes)", "; ".join(misses(got)))
        farm.check(got["containerimage.digest"] == digest_a,
                   f"{host.upper()} gives A's image digest",
                   f"{got['containerimage.digest']} != {digest_a}")

    # three branches at once, all exporting to the same ref
    results: dict[str, dict[str, object]] = {}
    errors: list[str] = []

    def branch(host: str, store: Path, name: str) -> None:
        try:
            results[name] = farm.build(host, store, farm.checkout(host, name, BRANCHES[name]))
        except Exception as err:  # reported below
            errors.append(f"{name} on {host}: {err}")

    threads = [threading.Thread(target=branch, args=args) for args in (
        ("a", a_store, "feature-a"), ("b", b_store, "feature-b"), ("c", c_store, "feature-c"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    farm.check(not errors and len(results) == 3, "three branches built at once on A, B, C",
               "; ".join(errors))
    remerged = sum(str(r["log"]).count("merging again") for r in results.values())
    print(f"info the three exports merged again {remerged} time(s) after another's write",
          flush=True)
    for host in ("a", "b", "c"):
        for name in BRANCHES:
            fresh = farm.store(host, f"fresh-{name}")
            got = farm.build(host, fresh, farm.checkout(host, name, BRANCHES[name]),
                             cache_to=False)
            farm.check(all_cached(got),
                       f"{name} (exported at the same time as the others) hits on a fresh "
                       f"store of {host.upper()}", "; ".join(misses(got)))
            if name in results:
                farm.check(got["containerimage.digest"] == results[name]["containerimage.digest"],
                           f"{name} on {host.upper()} gives the branch's image digest")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--dockyard", default=None,
                        help="the dockyard command (default: this checkout's .venv)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("SKIP: the farm needs root (network namespaces)")
        return 77
    for tool in ("ip", "nsenter", "docker-registry"):
        if shutil.which(tool) is None:
            print(f"SKIP: {tool} is not installed")
            return 77
    venv = HERE.parent.parent / ".venv" / "bin" / "dockyard"
    dockyard = args.dockyard.split() if args.dockyard else (
        [str(venv)] if venv.exists() else [sys.executable, "-m", "dockyard.cli.main"])
    work = Path(tempfile.mkdtemp(prefix="dockyard-farm-", dir="/var/tmp"))
    farm = Farm(work, dockyard)
    try:
        farm.up()
        scenario(farm)
    finally:
        farm.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{len(farm.failures)} failed" if farm.failures else "farm: every check holds")
    return 1 if farm.failures else 0


if __name__ == "__main__":
    sys.exit(main())
