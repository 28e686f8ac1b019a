"""Which platforms this host can run, natively or through QEMU user-mode emulation.

A RUN step (or ``dockyard run``) for a foreign platform runs the image's own binaries: the
kernel hands them to the interpreter registered for their ELF header in ``binfmt_misc``.
Debian's ``qemu-user-static`` registers ``qemu-<arch>`` entries there (``binfmt-support``
does the registering) with the ``F`` flag: the kernel opens the interpreter when it is
registered, so it works inside a container whose filesystem has no QEMU. Without ``F`` the
interpreter path would be looked up inside the container and the step would fail with
"exec format error"; dockyard says so before it starts one.

Nothing here changes the host: it only reads ``/proc/sys/fs/binfmt_misc``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dockyard.errors import ExecutorError

__all__ = ["PlatformSupport", "check_runnable", "runnable_platforms", "support_for"]

BINFMT = Path("/proc/sys/fs/binfmt_misc")

# OCI architecture -> the QEMU target (binfmt entry qemu-<target>)
_QEMU: dict[str, str] = {
    "amd64": "x86_64", "386": "i386", "arm64": "aarch64", "arm": "arm",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el",
    "mips64": "mips64", "loong64": "loongarch64",
}
# what a machine runs without emulation: its own architecture and its 32-bit companion
_NATIVE: dict[str, tuple[str, ...]] = {
    "amd64": ("linux/amd64", "linux/386"),
    "arm64": ("linux/arm64", "linux/arm/v7", "linux/arm/v6"),
}
# platforms offered for each emulator, in the order ``dockyard info`` lists them
_EMULATED: dict[str, tuple[str, ...]] = {
    "aarch64": ("linux/arm64",), "arm": ("linux/arm/v7", "linux/arm/v6"),
    "x86_64": ("linux/amd64",), "i386": ("linux/386",), "ppc64le": ("linux/ppc64le",),
    "s390x": ("linux/s390x",), "riscv64": ("linux/riscv64",), "mips64el": ("linux/mips64le",),
    "mips64": ("linux/mips64",), "loongarch64": ("linux/loong64",),
}


@dataclass(frozen=True)
class PlatformSupport:
    """How this host runs one platform: natively, through an emulator, or not at all."""

    platform: str
    native: bool
    emulator: str | None = None  # the binfmt_misc entry, e.g. qemu-aarch64
    interpreter: str | None = None
    problem: str | None = None  # why it cannot run (None: it can)

    @property
    def runnable(self) -> bool:
        return self.problem is None


def _host_arch() -> str:
    machine = os.uname().machine.lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "i386": "386",
            "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
            "riscv64": "riscv64"}.get(machine, machine)


def _native_platforms() -> tuple[str, ...]:
    arch = _host_arch()
    return _NATIVE.get(arch, (f"linux/{arch}",))


def _entry(name: str, root: Path) -> dict[str, str] | None:
    """A binfmt_misc entry's fields (``enabled``, ``interpreter``, ``flags``), or None."""
    try:
        text = (root / name).read_text()
    except OSError:
        return None
    fields = {"enabled": "enabled" if text.startswith("enabled") else "disabled"}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(" ")
        if key == "flags:":
            fields["flags"] = value.strip()
        elif key in ("interpreter", "offset", "magic", "mask"):
            fields[key] = value.strip()
    return fields


def support_for(platform: str, root: Path | None = None) -> PlatformSupport:
    """How (and whether) ``platform`` (``os/arch[/variant]``) runs on this host."""
    root = BINFMT if root is None else root
    if platform in _native_platforms():
        return PlatformSupport(platform, native=True)
    os_, _, rest = platform.partition("/")
    arch = rest.partition("/")[0]
    if os_ != "linux":
        return PlatformSupport(platform, False, problem=f"{os_} binaries cannot run on Linux")
    target = _QEMU.get(arch)
    if target is None:
        return PlatformSupport(platform, False,
                               problem=f"no emulator is known for the architecture {arch}")
    name = f"qemu-{target}"
    hint = ("install Debian's qemu-user-static and binfmt-support (apt-get install "
            "qemu-user-static binfmt-support; scripts/setup.sh also mounts binfmt_misc and "
            "registers the emulators where no service manager does)")
    if not (root / "register").exists():
        return PlatformSupport(platform, False, name, problem=(
            f"binfmt_misc is not mounted ({root}), so {platform} binaries cannot be "
            f"emulated: {hint}"))
    entry = _entry(name, root)
    if entry is None:
        return PlatformSupport(platform, False, name, problem=(
            f"no QEMU emulator for {platform} is registered in binfmt_misc ({name}): {hint}"))
    interpreter = entry.get("interpreter")
    if entry["enabled"] != "enabled":
        return PlatformSupport(platform, False, name, interpreter, problem=(
            f"the {name} emulator is registered but disabled (update-binfmts --enable {name})"))
    if "F" not in entry.get("flags", ""):
        return PlatformSupport(platform, False, name, interpreter, problem=(
            f"the {name} emulator is registered without the F (fix binary) flag, so it "
            f"cannot work inside a container: use Debian's qemu-user-static, whose "
            f"binfmt-support entries set it"))
    return PlatformSupport(platform, False, name, interpreter)


def runnable_platforms(root: Path | None = None) -> list[PlatformSupport]:
    """Every platform this host can run: native ones first, then the emulated ones."""
    root = BINFMT if root is None else root
    out = [PlatformSupport(p, native=True) for p in _native_platforms()]
    seen = {p.platform for p in out}
    for target, platforms in _EMULATED.items():
        for platform in platforms:
            if platform in seen or not (root / f"qemu-{target}").exists():
                continue
            support = support_for(platform, root)
            if support.runnable:
                out.append(support)
                seen.add(platform)
    return out


def check_runnable(platform: str, root: Path | None = None) -> None:
    """Raise ExecutorError saying what to install when ``platform`` cannot run here."""
    support = support_for(platform, root)
    if support.problem is not None:
        raise ExecutorError(f"cannot run {platform} binaries on this "
                            f"{_native_platforms()[0]} host: {support.problem}")
