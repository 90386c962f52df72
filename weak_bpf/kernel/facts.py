"""What one kernel provides to BPF programs, read from its artifacts under the root: vmlinux BTF,
the kfuncs of its modules, symvers, the kABI stablelist, System.map and config.

Reading is lazy where it is costly (module BTF) and cached across runs (var/cache): the vmlinux
BTF taken out of a vmlinuz, and the index of module kfuncs. A missing or unreadable artifact is
recorded in `problems`, never raised: the checks turn it into an `unknown` verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from weak_bpf.errors import WeakBpfError
from weak_bpf.kernel import load as kernel_data
from weak_bpf.kernel import modscan
from weak_bpf.kernel.cache import Cache, content_key, file_key, stat_key
from weak_bpf.kernel.find import BtfSourceKind, KernelArtifacts
from weak_bpf.model import KernelFacts
from weak_bpf.parsers import errinject
from weak_bpf.parsers.btf import BTF
from weak_bpf.parsers.sysmap import SystemMap


def load_vmlinux_btf(artifacts: KernelArtifacts, cache: Cache) -> tuple[BTF, frozenset[int] | None]:
    """K's vmlinux BTF and its `.BTF_ids` (None: unknown). A BTF unpacked from a kernel image is
    cached, with its ids: unpacking costs seconds. Other forms are read in place."""
    assert artifacts.btf is not None
    source = str(artifacts.btf)
    if artifacts.btf_source_kind is BtfSourceKind.SYSFS:  # raw BTF, compared with the image's
        btf, raw = kernel_data.load_raw_btf(artifacts.btf)
        return btf, _image_btf_ids(artifacts, raw, cache)
    if artifacts.btf_source_kind is not BtfSourceKind.VMLINUZ:
        found = kernel_data.load_kernel_btf(artifacts.btf)
        return found.btf, found.btf_ids
    key = file_key(artifacts.btf)
    btf_name, ids_name = f"btf-{key}.btf", f"btfids-{key}.json"
    cached, cached_ids = cache.get(btf_name), cache.get_json(ids_name)
    if cached is not None and isinstance(cached_ids, list):
        try:
            return BTF.from_bytes(cached, source=source), frozenset(cached_ids)
        except (WeakBpfError, TypeError):
            pass  # a damaged entry: rebuild it
    found = kernel_data.load_kernel_btf(artifacts.btf)
    ids = found.btf_ids or frozenset()
    cache.put(btf_name, found.btf.to_bytes())
    cache.put(ids_name, json.dumps(sorted(ids)).encode())
    return found.btf, ids


def _image_btf_ids(
    artifacts: KernelArtifacts, sysfs_btf: bytes, cache: Cache
) -> frozenset[int] | None:
    """The running kernel's `.BTF_ids`, from its installed image when that image's BTF is the
    sysfs BTF byte for byte (the ids are only valid for that BTF); else None (unknown)."""
    if artifacts.image is None:
        return None
    name = f"btfids-running-{file_key(artifacts.image)}-{content_key(sysfs_btf)}.json"
    cached = cache.get_json(name)
    if isinstance(cached, dict) and "ids" in cached:
        ids = cached["ids"]
        return frozenset(ids) if isinstance(ids, list) else None
    try:
        found = kernel_data.image_btf_ids(artifacts.image, sysfs_btf)
    except WeakBpfError:
        return None  # not cached: the next run tries again (a decompressor installed, ...)
    cache.put(name, json.dumps({"ids": None if found is None else sorted(found)}).encode())
    return found


def error_injection(facts: KernelFacts, cache: Cache) -> frozenset[int] | None:
    """The addresses of the functions on K's error-injection list: none when K is built without
    one; None when unknown (K's symbols do not place it, or no vmlinux or image holds it). It is
    read from a vmlinux ELF of K (debuginfo, or the BTF's), else from its image (cached)."""
    a = facts.artifacts
    config = facts.config
    if config is not None and not config.builtin("FUNCTION_ERROR_INJECTION"):
        return frozenset()
    symbols = facts.system_map
    if symbols is None or facts.system_map_is_kallsyms:  # kallsyms' addresses are randomized
        return None
    start, stop = symbols.get(errinject.START), symbols.get(errinject.STOP)
    if start is None or stop is None:  # a whole symbol table: K is built without the list
        return frozenset()
    elfs = [*a.symbol_files]
    if a.btf is not None and a.btf_source_kind in (BtfSourceKind.VMLINUX, BtfSourceKind.DEBUGINFO):
        elfs.append(a.btf)
    name = f"errinject-{stat_key([*elfs, a.image or '', a.system_map or ''])}.json"
    cached = cache.get_json(name)
    if isinstance(cached, dict) and isinstance(cached.get("addresses"), list):
        return frozenset(cached["addresses"])
    found = kernel_data.load_error_injection(elfs, a.image, start.address, stop.address)
    if found is not None:
        cache.put(name, json.dumps({"addresses": sorted(found)}).encode())
    return found


T = TypeVar("T")


def _attempt(problems: list[str], what: str, load: Callable[[], T]) -> T | None:
    try:
        return load()
    except WeakBpfError as e:
        problems.append(f"{what}: {e}")
        return None


def load_kernel_facts(artifacts: KernelArtifacts, cache: Cache, *, jobs: int = 1) -> KernelFacts:
    """Everything the checks need from one kernel; problems are recorded, not raised. `jobs`:
    the processes that may scan its modules, when the cache does not hold their indexes."""
    a = artifacts
    problems: list[str] = []

    def lazily(what: str, load: Callable[[Path], T], path: Path) -> Callable[[], T | None]:
        return partial(_attempt, problems, what, partial(load, path))

    def symbols() -> tuple[SystemMap | None, bool]:
        found = kernel_data.load_symbols(a)
        problems.extend(found.problems)
        return found.symbols, found.is_kallsyms

    lazy: dict[str, Callable[[], object]] = {"symbols": symbols}
    if a.symvers is not None:
        lazy["symvers"] = lazily("symvers", kernel_data.load_symvers, a.symvers)
    if a.kabi_list is not None:
        lazy["kabi"] = lazily("kABI list", kernel_data.load_kabi_list, a.kabi_list)
    if a.config is not None:
        lazy["config"] = lazily("config", kernel_data.load_config, a.config)
    facts = KernelFacts(a.kver, a, problems=problems, lazy=lazy)
    facts.defer(
        "error_injection",
        lambda: _attempt(problems, "error-injection list", partial(error_injection, facts, cache)),
    )

    def vmlinux() -> BTF | None:
        if a.btf is None:
            facts.set_fact("vmlinux_btf_ids", None)
            return None
        modules = modscan.Modules(a, cache, problems, jobs)  # may start the pass over the modules
        loaded = None
        try:
            loaded = _attempt(problems, "BTF", lambda: load_vmlinux_btf(a, cache))
        finally:
            btf, ids = loaded if loaded is not None else (None, None)
            facts.module_kfuncs_found = modules.read(btf)
        facts.set_fact("vmlinux_btf_ids", ids)
        if btf is not None:
            base = btf
            facts.load_module_btf = lambda module: modules.module_btf(base).btf(module)
            facts.find_module_symbol = lambda name: modules.module_btf(base).module_of(name)
            facts.find_module_type = lambda name, kind: modules.module_btf(base).module_of_type(
                name, kind
            )
        return btf

    facts.defer("vmlinux", vmlinux)
    return facts


def facts_from_files(btf_file: Path, symvers_file: Path | None = None) -> KernelFacts:
    """Facts from a BTF file (raw, vmlinux ELF or vmlinuz) and a symvers file, for a packager's
    build machine where the build kernel is not installed: no modules, no cache. Errors are
    raised."""
    found = kernel_data.load_kernel_btf(btf_file)
    facts = KernelFacts(btf_file.name, None, vmlinux=found.btf)
    if found.btf_ids is not None:
        facts.set_fact("vmlinux_btf_ids", found.btf_ids)
    facts.set_fact("symvers", kernel_data.load_symvers(symvers_file) if symvers_file else None)
    return facts
