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


def bpftool_loadall(
    obj: Path, tag: str, *, debug: bool = False
) -> subprocess.CompletedProcess[str]:
    """`bpftool [-d] prog loadall OBJ` on the running kernel, into a pin directory of its own
    (named by `tag`), removed afterwards."""
    pin = BPFFS / f"wbp-{os.getpid()}-{tag}"
    try:
        flags = ["-d"] if debug else []
        return subprocess.run(
            [require_tool("bpftool"), *flags, "prog", "loadall", str(obj), str(pin)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        shutil.rmtree(pin, ignore_errors=True)


def load_running(obj: Path, name: str) -> Load:
    require_root()
    proc = bpftool_loadall(obj, name)
    return Load(proc.returncode == 0, proc.stderr[-4000:])
