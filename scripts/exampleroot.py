"""Build an example root: real kernels in the RHEL/Fedora layout and vendor BPF programs.

Used by the demo (scripts/demo.py) and by tests that need a whole installed system. Kernel files
are hard-linked from the download cache where the filesystem allows it, else copied.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from weak_bpf.versions import kernel_sort_key

import bpfbuild

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "progs"
# Programs whose package ships a greylist, made at build time against the build kernel as the
# %weak_bpf_greylist macro makes it (the CRCs depend on that kernel, so none is committed).
GREYLISTED = ("globex-net/ct_keepalive.bpf.o",)


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def copy_file(src: str, dst: str) -> None:
    """Hard-link what no run writes (kernel modules and images), copy the rest."""
    if "/kernel/" in src or src.endswith(("vmlinuz", "symvers.gz", "System.map", "config")):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def copy_root(src: Path, dst: Path) -> Path:
    """A copy of a root to change: kernel files shared (hard links), the rest copied."""
    shutil.copytree(src, dst, symlinks=True, copy_function=copy_file)
    return dst


def install_kernel(root: Path, kver: str, unpacked: Path) -> None:
    """Lay out an unpacked Debian kernel as RHEL does: usr/lib/modules/K/{vmlinuz,config,...}."""
    moddir = root / "usr/lib/modules" / kver
    _place(unpacked / f"boot/vmlinuz-{kver}", moddir / "vmlinuz")
    _place(unpacked / f"boot/config-{kver}", moddir / "config")
    _place(unpacked / f"boot/System.map-{kver}", moddir / "System.map")
    symvers = unpacked / f"usr/src/linux-headers-{kver}/Module.symvers"
    (moddir / "symvers.gz").write_bytes(gzip.compress(symvers.read_bytes(), mtime=0))
    ko_root = unpacked / "lib/modules" / kver
    for ko in ko_root.rglob("*.ko"):
        _place(ko, moddir / ko.relative_to(ko_root))


def example_sources() -> list[Path]:
    """examples/progs/<pkg>/<name>.bpf.c"""
    return sorted(EXAMPLES.glob("*/*.bpf.c"))


def install_programs(root: Path, vmlinux: Path, sources: Iterable[Path], dest: str) -> list[Path]:
    """Compile each source against `vmlinux`'s vmlinux.h into root/dest/<pkg>/<name>.bpf.o."""
    include = bpfbuild.vmlinux_h(vmlinux)
    installed = []
    for source in sources:
        obj = bpfbuild.compile_program(source, [include])
        target = root / dest / source.parent.name / obj.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(obj, target)
        installed.append(target)
    return installed


def write_greylist(root: Path, obj: Path, kver: str) -> Path:
    """`obj`'s greylist against the installed kernel `kver`, beside it, as a packager's build
    writes it with `weak-bpf-progs greylist OBJECT --kernel K`."""
    from weak_bpf import ops

    made = ops.greylist(root, obj.relative_to(root), kver=kver)
    if made.missing:
        raise RuntimeError(f"{obj.name}: {kver} lacks {', '.join(made.missing)}")
    greylist = obj.with_name(obj.name + ".greylist")
    greylist.write_text(made.text)
    return greylist


def build_example_root(root: Path, kernels: dict[str, Path]) -> list[Path]:
    """A fresh root with `kernels` ({kver: unpacked dir}) and the example programs, built as a
    vendor would: CO-RE objects against the oldest kernel, a greylist for those in GREYLISTED,
    plus one native build for the oldest kernel."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for kver, unpacked in kernels.items():
        install_kernel(root, kver, unpacked)
    oldest = min(kernels, key=kernel_sort_key)
    vmlinux = bpfbuild.vmlinux_of(kernels[oldest] / f"boot/vmlinuz-{oldest}")
    core = install_programs(root, vmlinux, example_sources(), "usr/lib/bpf")
    for name in GREYLISTED:
        write_greylist(root, root / "usr/lib/bpf" / name, oldest)
    native = install_programs(
        root, vmlinux, [EXAMPLES / "acme-net/xdp_ct.bpf.c"], f"usr/lib/modules/{oldest}/bpf/extra"
    )
    return core + native
