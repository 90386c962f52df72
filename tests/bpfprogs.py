"""Compile the C test programs of tests/progs/ with clang, against a vmlinux.h made from a real
kernel's BTF, as packagers build them. The build itself is scripts/bpfbuild.py,
shared with the demo; its results are cached by content hash.

Use the session fixtures in a test module with `from bpfprogs import bpf_compiler, old_progs`:
- `bpf_compiler(btf_file) -> {name: object path}` compiles every program against any vmlinux
  (ELF with .BTF, or raw BTF such as /sys/kernel/btf/vmlinux);
- `old_vmlinux`: the ELF vmlinux of the older Debian kernel, unpacked from its vmlinuz;
- `old_progs`: every program compiled against `old_vmlinux`.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path
from typing import Callable

import pytest

import bpfbuild
from conftest import REPO, require, require_tool

PROGS_DIR = REPO / "tests" / "progs"

Compiler = Callable[[Path], "dict[str, Path]"]


def program_sources() -> list[Path]:
    return sorted(PROGS_DIR.glob("*.bpf.c"))


def program_name(source: Path) -> str:
    """kfunc_weak.bpf.c -> kfunc_weak"""
    return source.name[: -len(".bpf.c")]


def _built(what: Callable[[], Path]) -> Path:
    try:
        return what()
    except bpfbuild.BuildError as e:
        require("not installed" not in str(e), str(e))
        raise


def compile_all(btf_file: Path) -> dict[str, Path]:
    """Every program of tests/progs compiled against the vmlinux (or BTF) `btf_file`."""
    require_tool("clang")
    include_dir = _built(lambda: bpfbuild.vmlinux_h(btf_file))
    headers = tuple(h.read_bytes() for h in sorted(PROGS_DIR.glob("*.h")))
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {
            program_name(src): pool.submit(
                bpfbuild.compile_program, src, [include_dir, PROGS_DIR], extra_inputs=headers
            )
            for src in program_sources()
        }
        return {name: future.result() for name, future in futures.items()}


def compile_source(
    text: str, name: str, btf_file: Path, work: Path, *, clang: str = "clang"
) -> Path:
    """C source `text`, written as work/NAME.bpf.c, compiled as tests/progs are (their
    common.h included) against the vmlinux (or BTF) `btf_file`."""
    require_tool(clang)
    src = work / f"{name}.bpf.c"
    src.write_text(text)
    headers = tuple(h.read_bytes() for h in sorted(PROGS_DIR.glob("*.h")))
    include = [_built(lambda: bpfbuild.vmlinux_h(btf_file)), PROGS_DIR]
    return _built(lambda: bpfbuild.compile_program(src, include, extra_inputs=headers, clang=clang))


@pytest.fixture(scope="session")
def bpf_compiler() -> Compiler:
    """compile(btf_file) -> {program name: compiled object}, memoized per file."""
    done: dict[Path, dict[str, Path]] = {}

    def compile_for(btf_file: Path) -> dict[str, Path]:
        if btf_file not in done:
            done[btf_file] = compile_all(btf_file)
        return done[btf_file]

    return compile_for


def vmlinux_of(kernel_dir: Path, kver: str) -> Path:
    """The ELF vmlinux of an unpacked Debian kernel, unpacked from its vmlinuz (cached)."""
    vmlinuz = kernel_dir / "boot" / f"vmlinuz-{kver}"
    require(vmlinuz.exists(), f"{vmlinuz} is missing")
    return bpfbuild.vmlinux_of(vmlinuz)


@pytest.fixture(scope="session")
def old_vmlinux(old_kernel: tuple[str, Path]) -> Path:
    kver, kernel_dir = old_kernel
    return vmlinux_of(kernel_dir, kver)


@pytest.fixture(scope="session")
def old_progs(bpf_compiler: Compiler, old_vmlinux: Path) -> dict[str, Path]:
    return bpf_compiler(old_vmlinux)
