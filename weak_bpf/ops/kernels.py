"""`kernels`: what was found for each kernel, and what reading its main artifacts gave."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from weak_bpf.errors import WeakBpfError
from weak_bpf.kernel import find as kernel
from weak_bpf.kernel import load as kernel_data
from weak_bpf.kernel.cache import Cache
from weak_bpf.kernel.facts import load_vmlinux_btf
from weak_bpf.parsers.btf import Kind


@dataclasses.dataclass(frozen=True)
class KernelSummary:
    """A kernel's artifacts, and what reading the main ones gave (or why they could not be read)."""

    artifacts: kernel.KernelArtifacts
    btf_types: int | None = None
    kfunc_tags: int | None = None  # functions tagged bpf_kfunc; 0 when the BTF has no such tags
    symvers_entries: int | None = None
    system_map_symbols: int | None = None  # 0 for a placeholder (Debian ships the real one apart)
    problems: tuple[str, ...] = ()
    # where the symbols that System.map lacks came from (debuginfo, kallsyms), and how many
    symbols_source: Path | None = None
    symbols_count: int | None = None


def list_kernels(
    root: Path, kvers: Sequence[str] = (), *, cache: bool = True
) -> tuple[KernelSummary, ...]:
    """Installed kernels (or the ones named) under `root`, each read as far as it can be. A
    kernel's BTF is read as an audit reads it: from the cache, where unpacking an image left it."""
    wanted = kvers or kernel.judged_kernels(root)
    store = Cache(root, writable=cache)
    return tuple(_summarise(kernel.find_kernel(root, kver), store) for kver in wanted)


def _summarise(artifacts: kernel.KernelArtifacts, cache: Cache) -> KernelSummary:
    problems = []
    btf_types = kfunc_tags = symvers_entries = None
    try:
        if artifacts.btf is not None:
            btf, _ = load_vmlinux_btf(artifacts, cache)
            btf_types = btf.nr_types - 1
            kfunc_tags = len(btf.find("bpf_kfunc", Kind.DECL_TAG))
    except WeakBpfError as e:
        problems.append(str(e))
    if artifacts.symvers is not None:
        try:
            symvers_entries = len(kernel_data.load_symvers(artifacts.symvers))
        except WeakBpfError as e:
            problems.append(str(e))
    symbols = kernel_data.load_symbols(artifacts)  # System.map first: it is read once
    problems.extend(symbols.problems)
    system_map_symbols = None
    if symbols.source is not None and symbols.source == artifacts.system_map:
        system_map_symbols = len(symbols.symbols or ())
    elif symbols.system_map_stub:
        system_map_symbols = 0
    elsewhere = symbols.source is not None and symbols.source != artifacts.system_map
    return KernelSummary(
        artifacts,
        btf_types,
        kfunc_tags,
        symvers_entries,
        system_map_symbols,
        tuple(problems),
        symbols.source if elsewhere else None,
        len(symbols.symbols) if elsewhere and symbols.symbols is not None else None,
    )
