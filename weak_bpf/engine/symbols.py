"""What a kernel exports to BPF programs, in Module.symvers form: the greylist a packager ships
with a program, and a kernel's BPF symvers. Pure: values in, entries out.

Kfuncs have no symvers CRC: they get the BTF signature CRC (weak_bpf.signature). Every kfunc is
GPL-only (the kernel refuses kfuncs to other programs), so their export type is
EXPORT_SYMBOL_BPF_GPL, with `__acquires` / `__releases` where the kfunc set's flags say so.
"""

from __future__ import annotations

from weak_bpf.engine.btfcompat import essential_name
from weak_bpf.engine.signature import signature_crc
from weak_bpf.model import KernelFacts
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.objvalues import BpfObject, ExternKind
from weak_bpf.parsers.symvers import ExportType, SymvEntry

_KF_ACQUIRE = 1 << 0
_KF_RELEASE = 1 << 1


def kfunc_export_type(flags: int | None) -> ExportType:
    if flags is not None and flags & _KF_ACQUIRE:
        return ExportType.EXPORT_SYMBOL_BPF_GPL__acquires
    if flags is not None and flags & _KF_RELEASE:
        return ExportType.EXPORT_SYMBOL_BPF_GPL__releases
    return ExportType.EXPORT_SYMBOL_BPF_GPL


def _own_func(btf: BTF, name: str) -> int | None:
    return next((i for i in btf.find(name, Kind.FUNC) if i >= btf.start_id), None)


def kfunc_entry(kernel: KernelFacts, name: str) -> SymvEntry | None:
    """The BTF-signature entry of kfunc `name` on `kernel`, if the kernel has it."""
    assert kernel.vmlinux is not None
    indexed = kernel.module_kfuncs.get(name)
    for module in (None, indexed.module if indexed else None):
        btf = kernel.vmlinux if module is None else kernel.module_btf(module)
        func_id = _own_func(btf, name) if btf is not None else None
        if btf is not None and func_id is not None:
            export = kfunc_export_type(indexed.flags if indexed else None)
            return SymvEntry(signature_crc(btf, func_id), name, module or "vmlinux", export)
    return None


def greylist_entries(obj: BpfObject, kernel: KernelFacts) -> tuple[list[SymvEntry], list[str]]:
    """The greylist of `obj` against its build kernel: symvers entries for exported symbols,
    BTF-signature entries for kfuncs. Also the externs the kernel lacks (to warn about)."""
    entries: list[SymvEntry] = []
    missing: list[str] = []
    for ext in obj.ksyms:
        name = essential_name(ext.name)
        exported = kernel.symvers.get(name) if kernel.symvers is not None else None
        if exported is not None:
            entries.append(exported)
            continue
        if ext.kind is not ExternKind.FUNC:
            continue  # a variable outside symvers: checked through BTF, not greylisted
        entry = kfunc_entry(kernel, name) if kernel.vmlinux is not None else None
        if entry is None:
            missing.append(ext.name + (" (weak)" if ext.weak else ""))
        else:
            entries.append(entry)
    return entries, missing


def bpf_symvers(kernel: KernelFacts) -> list[SymvEntry]:
    """Every kfunc `kernel` is known to provide: tagged vmlinux FUNCs (pahole 1.27+) and the
    kfunc sets of its modules."""
    entries: dict[str, SymvEntry] = {}
    vmlinux = kernel.vmlinux
    if vmlinux is None:
        return []
    for tag_id in vmlinux.find("bpf_kfunc", Kind.DECL_TAG):
        func_id = vmlinux.type(tag_id).type
        if vmlinux.kind(func_id) is Kind.FUNC:
            name = vmlinux.name(func_id)
            entries[name] = SymvEntry(
                signature_crc(vmlinux, func_id), name, "vmlinux", ExportType.EXPORT_SYMBOL_BPF_GPL
            )
    for name in kernel.module_kfuncs:
        if name not in entries:
            entry = kfunc_entry(kernel, name)
            if entry is not None:
                entries[name] = entry
    return sorted(entries.values(), key=lambda e: e.symbol)
