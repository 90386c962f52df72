"""Load BPF objects on the running kernel with bpftool, as root: the ground truth for verdicts."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from conftest import require_root, require_tool

BPFFS = Path("/sys/fs/bpf")


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
