"""One object, before or without a kernel: `inspect`, and the greylist and BPF symvers a packager
ships (`greylist`, `symvers`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from weak_bpf.engine import symbols
from weak_bpf.errors import ParseError, WeakBpfError
from weak_bpf.files.read import read_file
from weak_bpf.kernel.facts import facts_from_files
from weak_bpf.ops.verdicts import kernel_facts
from weak_bpf.parsers.bpfobject import read_bpf_object
from weak_bpf.parsers.greylist import render_greylist
from weak_bpf.parsers.objvalues import BpfObject
from weak_bpf.program import installed as programs_mod
from weak_bpf.program.installed import object_path


def inspect_object(root: Path, path: Path) -> BpfObject:
    """Read one BPF object: what it needs from a kernel, before any kernel is judged."""
    where = object_path(root, path)
    try:
        shown = str(where.resolve().relative_to(root.resolve()))
    except ValueError:
        shown = str(where)
    data = read_file(where, max_size=programs_mod.MAX_OBJECT_SIZE)
    try:
        return read_bpf_object(data, shown)
    except ParseError as e:
        raise e.located(shown) from None


@dataclasses.dataclass(frozen=True)
class GreylistResult:
    text: str
    missing: tuple[str, ...]  # externs the build kernel lacks


def greylist(
    root: Path,
    path: Path,
    *,
    kver: str | None = None,
    btf_file: Path | None = None,
    symvers_file: Path | None = None,
) -> GreylistResult:
    """The greylist a packager ships with `path`, against an installed kernel or BTF file."""
    where = object_path(root, path)
    loaded = programs_mod.loose_program(where)
    if loaded.obj is None:
        raise WeakBpfError(
            loaded.error or f"{path}: unreadable",
            hint="weak-bpf-progs reads BPF objects built with 'clang -g -O2 -target bpf -c'",
        )
    if btf_file is not None:
        facts = facts_from_files(btf_file, symvers_file)
    else:
        assert kver is not None
        facts = kernel_facts(root, [kver], cache=False)[0]
        if facts.vmlinux is None and facts.symvers is None:
            raise WeakBpfError(
                f"{kver} has neither BTF nor symvers: no greylist can be made",
                hint="install the kernel's BTF (vmlinux or vmlinuz) or its symvers, or pass the "
                "build kernel's files: --btf FILE [--symvers FILE]",
            )
    entries, missing = symbols.greylist_entries(loaded.obj, facts)
    text = render_greylist(
        entries,
        build_kernel=kver,  # a bare BTF file names no kernel release
        comments=[f"greylist of {where.name}, made by weak-bpf-progs greylist"],
    )
    return GreylistResult(text, tuple(missing))


def bpf_symvers(root: Path, kver: str) -> str:
    """K's BPF symvers, derived from its BTF, in Module.symvers format."""
    facts = kernel_facts(root, [kver])[0]
    if facts.vmlinux is None:
        raise WeakBpfError(
            f"{kver} has no BTF: {'; '.join(facts.problems) or 'none was found'}",
            hint="see 'weak-bpf-progs kernels' for what was found",
        )
    entries = symbols.bpf_symvers(facts)
    comments = [f"BPF symvers of {kver}, derived from its BTF by weak-bpf-progs"]
    if not facts.has_kfunc_tags:
        comments.append(
            "its vmlinux BTF has no bpf_kfunc tags (pahole < 1.27): vmlinux kfuncs are not listed"
        )
    return render_greylist(entries, comments=comments)
