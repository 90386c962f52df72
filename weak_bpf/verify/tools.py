"""The host's programs that a verify boot needs: qemu, a static busybox, and the loader.

Each is looked up when `verify` starts; a missing one is a clear error that names the package to
install (the CLI exits 2), before anything is booted.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from weak_bpf.errors import WeakBpfError

# The loader (tools/verify-loader.c): where the package installs it, then a checkout's build.
LIBEXEC_LOADER = Path("/usr/libexec/weak-bpf-progs/verify-loader")
CHECKOUT_LOADER = Path(__file__).resolve().parent.parent.parent / "build" / "verify-loader"
_SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class MissingTool(WeakBpfError):
    """A program `verify` needs is not installed."""


@dataclasses.dataclass(frozen=True)
class Tools:
    qemu: Path
    busybox: Path
    loader: Path


def find_qemu() -> Path:
    """qemu-system-x86_64, or RHEL's qemu-kvm (which is not on PATH)."""
    found = shutil.which("qemu-system-x86_64") or shutil.which("qemu-system-x86_64", path=_SBIN)
    if found:
        return Path(found)
    if os.access("/usr/libexec/qemu-kvm", os.X_OK):
        return Path("/usr/libexec/qemu-kvm")
    raise MissingTool(
        "qemu-system-x86_64 is not installed: verify boots each kernel in a VM",
        hint="install qemu-system-x86 (Debian, Ubuntu), qemu-system-x86-core (Fedora) or "
        "qemu-kvm-core (RHEL)",
    )


def find_busybox() -> Path:
    """A static busybox: Debian's busybox-static puts it in /bin, Fedora's busybox in /sbin."""
    found = shutil.which("busybox") or shutil.which("busybox", path=_SBIN)
    if found:
        return Path(found)
    raise MissingTool(
        "busybox is not installed: it is the shell and tools of the VM's initramfs",
        hint="install busybox-static (Debian, Ubuntu) or busybox (Fedora; on RHEL from EPEL)",
    )


def find_loader() -> Path:
    """The loader that loads each program of an object on its own, inside the VM."""
    override = os.environ.get("WEAK_BPF_VERIFY_LOADER")
    candidates = [Path(override)] if override else [LIBEXEC_LOADER, CHECKOUT_LOADER]
    for path in candidates:
        if os.access(path, os.X_OK) and path.is_file():
            _check_libraries(path)
            return path
    raise MissingTool(
        f"the verify loader is not installed ({LIBEXEC_LOADER})",
        hint="reinstall weak-bpf-progs (the package ships it); in a source checkout, run "
        "'make loader' (it needs gcc and libbpf's development files: libbpf-dev on Debian, "
        "libbpf-devel on Fedora and RHEL)",
    )


def _check_libraries(binary: Path) -> None:
    """A dynamically linked loader needs its libraries on the host (they are copied into the VM)."""
    try:
        proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    except OSError:
        return  # no ldd: the initramfs builder says so
    missing = [line.split()[0] for line in proc.stdout.splitlines() if "not found" in line]
    if missing:
        raise MissingTool(
            f"the verify loader {binary} needs {', '.join(missing)}, which is not installed",
            hint="install libbpf and elfutils-libelf (RHEL, Fedora) or libbpf1 and libelf1 "
            "(Debian)",
        )


def loader_identity(loader: Path) -> str:
    """The loader's "@loader PROTOCOL libbpf X.Y" line: outcomes it did not produce are
    verified again."""
    try:
        proc = subprocess.run(
            [str(loader), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MissingTool(f"the verify loader {loader} does not run: {e}") from None
    line = proc.stdout.strip().splitlines()[:1]
    if proc.returncode != 0 or not line or not line[0].startswith("@loader "):
        raise MissingTool(
            f"the verify loader {loader} does not answer --version: it is from another release",
            hint="reinstall weak-bpf-progs; in a source checkout, run 'make loader'",
        )
    return line[0]


def find_tools() -> Tools:
    return Tools(find_qemu(), find_busybox(), find_loader())
