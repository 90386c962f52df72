"""The use cases behind the commands. They read under an explicit root and return values; they
never print. (The writing use cases, add-kernel and friends, come with the resolver.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from weak_bpf import kernel, kernel_data
from weak_bpf.errors import ParseError, WeakBpfError
from weak_bpf.parsers.bpfobject import BpfObject, read_bpf_object
from weak_bpf.parsers.btf import BTF, Kind


@dataclasses.dataclass(frozen=True)
class KernelSummary:
    """A kernel's artifacts, and what reading the main ones gave (or why they could not be read)."""

    artifacts: kernel.KernelArtifacts
    btf_types: int | None = None
    kfunc_tags: int | None = None  # functions tagged bpf_kfunc; 0 when the BTF has no such tags
    symvers_entries: int | None = None
    system_map_symbols: int | None = None  # 0 for a placeholder (Debian ships the real one apart)
    problems: tuple[str, ...] = ()


def list_kernels(root: Path, kvers: Sequence[str] = ()) -> tuple[KernelSummary, ...]:
    """Installed kernels (or the ones named) under `root`, each read as far as it can be."""
    wanted = kvers or kernel.installed_kernels(root)
    return tuple(_summarise(kernel.find_kernel(root, kver)) for kver in wanted)


def _summarise(artifacts: kernel.KernelArtifacts) -> KernelSummary:
    problems = []
    btf_types = kfunc_tags = symvers_entries = None
    try:
        raw = kernel_data.load_btf_bytes(artifacts)
        if raw is not None:
            btf = BTF.from_bytes(raw, source=str(artifacts.btf))
            btf_types = btf.nr_types - 1
            kfunc_tags = len(btf.find("bpf_kfunc", Kind.DECL_TAG))
    except WeakBpfError as e:
        problems.append(str(e))
    if artifacts.symvers is not None:
        try:
            symvers_entries = len(kernel_data.load_symvers(artifacts.symvers))
        except WeakBpfError as e:
            problems.append(str(e))
    system_map_symbols = None
    if artifacts.system_map is not None:
        try:
            system_map = kernel_data.load_system_map(artifacts.system_map)
            system_map_symbols = 0 if system_map.placeholder else len(system_map)
        except WeakBpfError as e:
            problems.append(str(e))
    return KernelSummary(
        artifacts, btf_types, kfunc_tags, symvers_entries, system_map_symbols, tuple(problems)
    )


def object_path(root: Path, path: Path) -> Path:
    """Where OBJECT is: an absolute path as given; a relative one under the root if it is there,
    else relative to the current directory."""
    if path.is_absolute():
        return path
    under_root = root / path
    return under_root if under_root.exists() else path


def inspect_object(root: Path, path: Path) -> BpfObject:
    """Read one BPF object: what it needs from a kernel, before any kernel is judged."""
    where = object_path(root, path)
    try:
        shown = str(where.resolve().relative_to(root.resolve()))
    except ValueError:
        shown = str(where)
    data = kernel_data.read_file(where)
    try:
        return read_bpf_object(data, shown)
    except ParseError as e:
        raise e.located(shown) from None
