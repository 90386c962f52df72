"""What the tests of `verify` share: its tools, built or required, and the qemu processes a run
leaves (or must not leave) behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from weak_bpf.verify import tools

import qemuload
from conftest import REPO, require, require_tool


def require_verify_tools() -> None:
    """qemu, bpftool, busybox and the loader (built here in a checkout without one yet)."""
    require_tool("qemu-system-x86_64")
    require_tool("bpftool")
    require(qemuload.busybox(), "busybox is not installed (scripts/install-deps installs it)")
    try:
        tools.find_loader()
    except tools.MissingTool:  # a checkout without `make loader` yet: build it, as make check does
        subprocess.run(["make", "-C", str(REPO), "loader"], capture_output=True, check=False)
        require(os.access(tools.CHECKOUT_LOADER, os.X_OK), "cannot build the loader (make loader)")


def qemu_children(pid: int) -> list[int]:
    """The qemu processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and comm.startswith("qemu"):
            found.append(int(entry.name))
    return found


def zombie(pid: int) -> bool:
    """`pid` has exited (a zombie, or gone)."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
