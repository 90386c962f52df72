"""One pass over every module of a kernel: the kfuncs that their `.BTF_ids` sets register, and
the FUNC and VAR names of their BTF (to find which module defines a kprobe or fentry target).

A distribution kernel has about 1,100 modules. Each is opened once for both indexes, and the pass
is split in contiguous shares: this process scans the first, worker processes forked after
vmlinux's BTF is read (a module's BTF is split BTF on it) the others. The shares are joined in
module order, so that the first module defining a name wins, as in one process.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

from weak_bpf.errors import WeakBpfError
from weak_bpf.kernel import load as kernel_data
from weak_bpf.kernel.find import KernelArtifacts, module_name
from weak_bpf.model import ModuleKfunc
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.elf import section_headers
from weak_bpf.workerpool import pooled

PARALLEL_FROM = 300  # fewer modules are scanned in this process: forking costs more


@dataclasses.dataclass
class ModuleIndex:
    kfuncs: dict[str, ModuleKfunc]  # kfunc -> the first module registering it
    symbols: dict[str, str]  # FUNC or VAR name -> the first module defining it
    problems: list[str]  # modules that could not be read


def scan_modules(artifacts: KernelArtifacts, vmlinux: BTF, *, jobs: int = 1) -> ModuleIndex:
    """Both indexes of every module of `artifacts`, in `jobs` processes at most."""
    paths = list(artifacts.modules)
    shares = min(jobs, len(paths) // (PARALLEL_FROM // 2) or 1)
    if shares <= 1 or len(paths) < PARALLEL_FROM or multiprocessing.current_process().daemon:
        parts = [_scan(artifacts, vmlinux, paths)]  # (a pool's worker may not start another)
    else:
        global _WORK  # noqa: PLW0603  (what the forked workers inherit)
        _WORK = (artifacts, vmlinux)
        size = -(-len(paths) // shares)
        cuts = [paths[i : i + size] for i in range(0, len(paths), size)]
        try:  # this process scans the first share while the workers scan the others
            with pooled(multiprocessing.get_context("fork"), len(cuts) - 1) as pool:
                others = pool.map_async(_scan_in_worker, cuts[1:], chunksize=1)
                parts = [_scan(artifacts, vmlinux, cuts[0]), *others.get()]
        finally:
            _WORK = None
    index = ModuleIndex({}, {}, [])
    for part in parts:
        for name, kfunc in part.kfuncs.items():
            index.kfuncs.setdefault(name, kfunc)
        for name, module in part.symbols.items():
            index.symbols.setdefault(name, module)
        index.problems.extend(part.problems)
    return index


_WORK: tuple[KernelArtifacts, BTF] | None = None


def _scan_in_worker(paths: Sequence[Path]) -> ModuleIndex:
    assert _WORK is not None
    return _scan(*_WORK, paths)


def _scan(artifacts: KernelArtifacts, vmlinux: BTF, paths: Sequence[Path]) -> ModuleIndex:
    index = ModuleIndex({}, {}, [])
    for path in paths:
        try:
            _scan_one(artifacts, vmlinux, path, index)
        except WeakBpfError as e:
            index.problems.append(f"module {artifacts.relative(path)}: {e}")
    return index


def _scan_one(artifacts: KernelArtifacts, vmlinux: BTF, path: Path, index: ModuleIndex) -> None:
    source = str(path)
    with kernel_data.module_data(path) as data:
        headers = {h.name: h for h in reversed(section_headers(data, source))}  # the first wins
        btf_section = headers.get(".BTF")
        if btf_section is None:
            return
        btf_raw = bytes(data[btf_section.offset : btf_section.offset + btf_section.size])
        whole = bytes(data) if ".BTF_ids" in headers else None  # only these register kfuncs
    btf = BTF.from_bytes(btf_raw, base=vmlinux, source=source)
    name = module_name(path)
    for kind in (Kind.FUNC, Kind.VAR):
        for type_id in btf.ids_of_kind(kind):
            index.symbols.setdefault(btf.name(type_id), name)
    if whole is None:
        return
    from weak_bpf.parsers.kmod import read_kernel_object  # pyelftools, on a cache miss

    ko = read_kernel_object(whole, source)
    module = ko.name or name
    relative = artifacts.relative(path) or source
    for kset in ko.kfunc_sets:
        for entry in kset.entries:
            if btf.start_id <= entry.btf_id < btf.nr_types:
                kfunc = ModuleKfunc(module, relative, entry.flags)
                index.kfuncs.setdefault(btf.name(entry.btf_id), kfunc)
