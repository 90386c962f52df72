"""Load a kernel's artifacts: read the files that weak_bpf.kernel found, unpack them, and hand the
bytes to the pure parsers. Every error names the file (ParseError.located)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from weak_bpf import compression
from weak_bpf.errors import ParseError
from weak_bpf.kernel import BtfSourceKind, KernelArtifacts
from weak_bpf.parsers.kabi import KabiList, parse_kabi_list
from weak_bpf.parsers.kconfig import KernelConfig, parse_kconfig
from weak_bpf.parsers.kmod import KernelObject, read_kernel_object
from weak_bpf.parsers.symvers import Symvers, parse_symvers
from weak_bpf.parsers.sysmap import SystemMap, parse_system_map
from weak_bpf.parsers.vmlinuz import vmlinux_from_vmlinuz

T = TypeVar("T")
MAX_FILE_SIZE = 1 << 30  # a vmlinux with its debug info
MAX_TEXT_SIZE = 64 << 20  # symvers, System.map, config, kABI lists: a few MB in real kernels
MAX_MODULE_SIZE = 256 << 20


def read_file(path: Path, *, max_size: int = MAX_FILE_SIZE) -> bytes:
    """The bytes of `path`, unpacked when compressed. Unreadable files are ParseErrors."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_size + 1)
    except OSError as e:
        raise ParseError(f"cannot read: {e.strerror or e}", source=str(path)) from None
    if len(data) > max_size:
        raise ParseError(
            f"larger than {compression.size_text(max_size)}, the most it reads", source=str(path)
        )
    return compression.maybe_decompress(data, str(path), max_size=max_size)


def _load(
    path: Path, parse: Callable[[bytes, str | None], T], *, max_size: int = MAX_FILE_SIZE
) -> T:
    try:
        return parse(read_file(path, max_size=max_size), str(path))
    except ParseError as e:
        raise e.located(str(path)) from None


def load_symvers(path: Path) -> Symvers:
    return _load(path, parse_symvers, max_size=MAX_TEXT_SIZE)


def load_system_map(path: Path) -> SystemMap:
    return _load(path, parse_system_map, max_size=MAX_TEXT_SIZE)


def load_config(path: Path) -> KernelConfig:
    return _load(path, parse_kconfig, max_size=MAX_TEXT_SIZE)


def load_kabi_list(path: Path) -> KabiList:
    return _load(path, parse_kabi_list, max_size=MAX_TEXT_SIZE)


def load_kernel_object(path: Path) -> KernelObject:
    """A module (.ko, .ko.xz, .ko.zst, .ko.gz) or a vmlinux ELF."""
    return _load(path, read_kernel_object, max_size=MAX_MODULE_SIZE)


def load_vmlinux(path: Path) -> bytes:
    """The vmlinux ELF from a vmlinuz (or a vmlinux as is)."""
    return _load(
        path,
        lambda data, source: vmlinux_from_vmlinuz(data, source, decompress=compression.decompress),
    )


def load_btf_bytes(kernel: KernelArtifacts) -> bytes | None:
    """The bytes that hold K's BTF: a raw blob (sysfs) or an ELF with a .BTF section; None if K
    has no BTF source. Parse them with weak_bpf.parsers.btf."""
    if kernel.btf is None:
        return None
    if kernel.btf_source_kind is BtfSourceKind.VMLINUZ:
        return load_vmlinux(kernel.btf)
    return _load(kernel.btf, lambda data, source: data)
