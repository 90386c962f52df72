"""Benchmark: indexing a whole kernel BTF vs `bpftool btf dump file X` on the same file.

    /usr/bin/python3 bench/bench_btf.py [--runs N] [FILE...]

Default files: /sys/kernel/btf/vmlinux, plus the older Debian kernel's vmlinux (extracted from its
vmlinuz into a temporary file) when the development kernel cache holds it.

(a) bpftool: `bpftool btf dump file X` (raw format, stdout to /dev/null), wall time of the process.
(b) weak_bpf: read the file, BTF.from_bytes, build the name index (one `find`), in-process. The
    file is mapped with mmap, as libbpf does for ELF files; files that cannot be mapped (sysfs on
    older kernels) are read. A second column shows a plain read() for reference.
Best of N runs each. Target: (b) <= 1.0 x (a).
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from weak_bpf.parsers.btf import BTF  # noqa: E402

SYSFS_VMLINUX = Path("/sys/kernel/btf/vmlinux")
TARGET = 1.0


def _best(runs: int, action: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def _bpftool(bpftool: str, path: Path) -> None:
    with open(os.devnull, "wb") as devnull:
        subprocess.run([bpftool, "btf", "dump", "file", str(path)], stdout=devnull, check=True)


def _index_mmap(path: Path) -> int:
    with open(path, "rb") as f:
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return _index_read(path)
        try:
            btf = BTF.from_bytes(mapped, source=str(path))  # type: ignore[arg-type]
        finally:
            mapped.close()
    btf.find("task_struct")
    return btf.nr_types


def _index_read(path: Path) -> int:
    btf = BTF.from_bytes(path.read_bytes(), source=str(path))
    btf.find("task_struct")
    return btf.nr_types


def _debian_vmlinux(workdir: Path) -> Path | None:
    """The older Debian cloud kernel's vmlinux, when the dev cache has the kernel unpacked."""
    cache = Path(
        os.environ.get("WEAK_BPF_DEV_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "weak-bpf-progs-dev"
    )
    kernels = sorted(p for p in (cache / "kernels").glob("*") if (p / ".complete").exists())
    if not kernels:
        return None
    kver = kernels[0].name
    vmlinuz = kernels[0] / "boot" / f"vmlinuz-{kver}"
    if not vmlinuz.exists():
        return None
    from weak_bpf.files.compression import decompress
    from weak_bpf.parsers.vmlinuz import vmlinux_from_vmlinuz

    path = workdir / f"vmlinux-{kver}"
    path.write_bytes(
        vmlinux_from_vmlinuz(vmlinuz.read_bytes(), str(vmlinuz), decompress=decompress)
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=7, help="best of N (default 7)")
    args = parser.parse_args(argv)
    bpftool = shutil.which("bpftool") or shutil.which("bpftool", path="/usr/sbin:/sbin")
    if bpftool is None:
        print("bench_btf: bpftool is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-btf-") as tmp:
        files: list[Path] = list(args.files)
        if not files:
            if SYSFS_VMLINUX.exists():
                files.append(SYSFS_VMLINUX)
            debian = _debian_vmlinux(Path(tmp))
            if debian is not None:
                files.append(debian)
        if not files:
            print("bench_btf: no BTF file to measure", file=sys.stderr)
            return 2
        header = (
            f"{'file':<40} {'types':>7} {'bpftool':>9} {'weak_bpf':>9} {'(read)':>9} {'ratio':>6}"
        )
        print(header)
        print("-" * len(header))
        failed = False
        for path in files:
            nr_types = _index_mmap(path)  # warm the page cache and check it parses
            _bpftool(bpftool, path)
            tool = _best(args.runs, lambda p=path: _bpftool(bpftool, p))  # type: ignore[misc]
            ours = _best(args.runs, lambda p=path: _index_mmap(p))  # type: ignore[misc]
            plain = _best(args.runs, lambda p=path: _index_read(p))  # type: ignore[misc]
            ratio = ours / tool
            verdict = "PASS" if ratio <= TARGET else "FAIL"
            failed |= ratio > TARGET
            name = path.name if len(str(path)) > 40 else str(path)
            print(
                f"{name:<40} {nr_types - 1:>7} {tool * 1000:>7.1f}ms {ours * 1000:>7.1f}ms "
                f"{plain * 1000:>7.1f}ms {ratio:>5.2f}x {verdict}"
            )
        print(f"target: weak_bpf <= {TARGET:.1f} x bpftool (best of {args.runs})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
