"""Load BPF objects on the running kernel with bpftool, as root: the ground truth for verdicts."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from conftest import require_root, require_tool

BPFFS = Path("/sys/fs/bpf")
SYSFS_BTF = Path("/sys/kernel/btf/vmlinux")


def install_running_kernel(root: Path, release: str) -> None:
    """Make the running kernel an installed kernel of `root`: its sysfs BTF and kallsyms."""
    (root / "usr/lib/modules" / release).mkdir(parents=True)
    (root / "usr/lib/modules" / release / "modules.dep").touch()
    (root / "sys/kernel/btf").mkdir(parents=True)
    shutil.copyfile(SYSFS_BTF, root / "sys/kernel/btf/vmlinux")
    (root / "proc").mkdir()
    shutil.copyfile("/proc/kallsyms", root / "proc/kallsyms")


def install_programs(root: Path, objects: dict[str, Path], package: str = "tests") -> None:
    for name, obj in objects.items():
        target = root / "usr/lib/bpf" / package / f"{name}.bpf.o"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(obj, target)


@dataclasses.dataclass(frozen=True)
class Load:
    ok: bool
    log: str


def load_running(obj: Path, name: str) -> Load:
    """`bpftool prog loadall OBJ` into a pin directory of its own, removed afterwards."""
    require_root()
    bpftool = require_tool("bpftool")
    pin = BPFFS / f"wbp-{os.getpid()}-{name}"
    try:
        proc = subprocess.run(
            [bpftool, "prog", "loadall", str(obj), str(pin)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        shutil.rmtree(pin, ignore_errors=True)
    return Load(proc.returncode == 0, proc.stderr[-4000:])
