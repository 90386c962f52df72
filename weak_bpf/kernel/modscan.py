"""Kernel modules' BTF: one pass over every module of a kernel, the lookups in what it kept, and
its two cache entries (the kfuncs, the raw BTF).

A distribution kernel has about 1,100 modules. The pass opens each once, finds its `.BTF` and
`.BTF_ids` sections without building the rest of its section table, keeps the raw `.BTF` (8 MB
for all of Debian's modules), and reads the kfunc sets of the few modules that have `.BTF_ids`.
Compressed modules (RHEL, Fedora: `.ko.xz`) cost most in unpacking, so their pass is split in
contiguous shares over worker processes, joined in module order.

Which module defines a FUNC or VAR name (a kprobe, fentry or ksym target that vmlinux lacks) is
found by searching each module's string section for the name first; only a module whose strings
hold it has its BTF parsed. A name that is also a string of vmlinux's may be named through it, so
it is looked up in an index of every module's FUNC and VAR names, built the first time one is
asked for. The first module in module order wins.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING

from weak_bpf.errors import BTFError, WeakBpfError
from weak_bpf.kernel import load as kernel_data
from weak_bpf.kernel.cache import Cache, content_key, stat_key
from weak_bpf.kernel.find import KernelArtifacts, module_name
from weak_bpf.model import ModuleKfunc
from weak_bpf.parsers import btfblob
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.elf import Buffer, find_sections
from weak_bpf.workerpool import WorkerDied, in_background, in_worker, pooled

if TYPE_CHECKING:
    from weak_bpf.parsers.kmod import IdSetEntry

INDEX_VERSION = "1"  # of the cached kfuncs and module BTF
PARALLEL_FROM = 300  # fewer compressed modules are unpacked in this process: forking costs more


@dataclasses.dataclass(frozen=True)
class KfuncSets:
    """The kfunc set entries of one module: BTF ids, named once vmlinux's BTF is read."""

    key: str  # the module's name from its file, as in ModuleScan.raw_btf
    module: str  # the name it gives itself
    relative: str  # its file
    entries: tuple[IdSetEntry, ...]


@dataclasses.dataclass
class ModuleScan:
    kfunc_sets: list[KfuncSets]  # in module order
    raw_btf: dict[str, Buffer]  # module name -> its `.BTF`, in module order
    problems: list[str]  # modules that could not be read


def scan_modules(artifacts: KernelArtifacts, *, jobs: int = 1) -> ModuleScan:
    """What the pass keeps of every module of `artifacts`, in `jobs` processes at most. It needs
    no vmlinux BTF, so that it may run while that is unpacked (in_background)."""
    paths = list(artifacts.modules)
    shares = _shares(paths, jobs)
    if shares <= 1:
        parts = [_scan(artifacts, paths)]
    else:
        size = -(-len(paths) // shares)
        cuts = [paths[i : i + size] for i in range(0, len(paths), size)]
        try:  # this process scans the first share while the workers scan the others
            with pooled(multiprocessing.get_context("fork"), len(cuts) - 1) as pool:
                others = [pool.submit(_scan, artifacts, cut) for cut in cuts[1:]]
                parts = [_scan(artifacts, cuts[0]), *(share.result() for share in others)]
        except BrokenProcessPool:  # a worker was killed (the OOM killer): all read here
            parts = [_scan(artifacts, paths)]
    scan = ModuleScan([], {}, [])
    for part in parts:
        scan.kfunc_sets.extend(part.kfunc_sets)
        for module, raw in part.raw_btf.items():
            scan.raw_btf.setdefault(module, raw)
        scan.problems.extend(part.problems)
    return scan


def scan_in_background(artifacts: KernelArtifacts, *, jobs: int = 1) -> Callable[[], ModuleScan]:
    """scan_modules started now in a worker process (when `jobs` allows one more), while this
    process goes on reading vmlinux; the function returned waits for it."""
    if not _may_fork(jobs) or _shares(artifacts.modules, jobs) > 1:  # then shared out instead
        return functools.partial(scan_modules, artifacts, jobs=jobs)
    return in_background(multiprocessing.get_context("fork"), scan_modules, artifacts)


def _may_fork(jobs: int) -> bool:
    return jobs > 1 and not in_worker()


def _shares(paths: Sequence[Path], jobs: int) -> int:
    """How many processes share the pass: more than one only for many compressed modules."""
    compressed = sum(not p.name.endswith(".ko") for p in paths)
    if compressed < PARALLEL_FROM or not _may_fork(jobs):
        return 1
    return min(jobs, compressed // (PARALLEL_FROM // 2))


def _scan(artifacts: KernelArtifacts, paths: Sequence[Path]) -> ModuleScan:
    scan = ModuleScan([], {}, [])
    for path in paths:
        try:
            _scan_one(artifacts, path, scan)
        except WeakBpfError as e:
            scan.problems.append(f"module {artifacts.relative(path)}: {e}")
    return scan


def _scan_one(artifacts: KernelArtifacts, path: Path, scan: ModuleScan) -> None:
    source = str(path)
    with kernel_data.module_data(path) as data:
        found = find_sections(data, (".BTF", ".BTF_ids"), source)
        if ".BTF" not in found:
            return
        at, size = found[".BTF"]
        raw = bytes(data[at : at + size])
        whole = bytes(data) if ".BTF_ids" in found else None  # only these register kfuncs
    name = module_name(path)
    if whole is not None:
        from weak_bpf.parsers.kmod import read_kernel_object  # pyelftools, on a cache miss

        ko = read_kernel_object(whole, source)
        entries = tuple(e for kset in ko.kfunc_sets for e in kset.entries)
        if entries:
            relative = artifacts.relative(path) or source
            scan.kfunc_sets.append(KfuncSets(name, ko.name or name, relative, entries))
    scan.raw_btf.setdefault(name, raw)


def name_kfuncs(scan: ModuleScan, vmlinux: BTF, problems: list[str]) -> dict[str, ModuleKfunc]:
    """The kfuncs the modules' sets register, by name (the first module wins): a set gives BTF
    ids, named in the module's BTF on vmlinux."""
    kfuncs: dict[str, ModuleKfunc] = {}
    for sets in scan.kfunc_sets:
        try:
            btf = BTF.from_bytes(scan.raw_btf[sets.key], base=vmlinux, source=sets.relative)
        except BTFError as e:
            problems.append(f"module {sets.relative}: {e}")
            continue
        for entry in sets.entries:
            if btf.start_id <= entry.btf_id < btf.nr_types:
                kfunc = ModuleKfunc(sets.module, sets.relative, entry.flags)
                kfuncs.setdefault(btf.name(entry.btf_id), kfunc)
    return kfuncs


class ModuleBtf:
    """The split BTF of each module, on vmlinux, parsed when first asked for; and which module
    defines a FUNC or VAR name. A module whose BTF does not parse is a problem, once."""

    def __init__(
        self,
        raw_btf: dict[str, Buffer],
        vmlinux: BTF,
        problems: list[str],
        files: dict[str, Path] | None = None,
    ) -> None:
        self.raw_btf = raw_btf
        self.vmlinux = vmlinux
        self.problems = problems
        self.files = files or {}  # module name -> its file, named in errors
        self._parsed: dict[str, BTF | None] = {}
        self._found: dict[str, str | None] = {}
        self._all: dict[str, str] | None = None

    def btf(self, module: str) -> BTF | None:
        """Module `module`'s BTF; None if it has none or it does not parse."""
        module = module.replace("-", "_")
        if module not in self._parsed:
            self._parsed[module] = self._parse(module)
        return self._parsed[module]

    def module_of(self, name: str) -> str | None:
        """The first module whose BTF defines FUNC or VAR `name`; None if none does."""
        if name not in self._found:
            self._found[name] = self._search(name) if name else None
        return self._found[name]

    def _parse(self, module: str) -> BTF | None:
        raw = self.raw_btf.get(module)
        source = str(self.files.get(module, f"module {module}"))
        try:
            return BTF.from_bytes(raw, base=self.vmlinux, source=source) if raw else None
        except BTFError as e:
            self.problems.append(f"module {module}: {e}")
            return None

    def module_of_type(self, name: str, kind: Kind) -> str | None:
        """The first module whose BTF defines a type `name` of `kind`, such as the typedef
        btf_trace_<name> of a module's tracepoint; None if none does."""
        key = f"{kind.name} {name}"
        if key not in self._found:
            self._found[key] = self._scan(name, (kind,)) if name else None
        return self._found[key]

    def _search(self, name: str) -> str | None:
        if self.vmlinux.has_string(name):  # a module may name it with vmlinux's string
            return self._index().get(name)
        return self._scan(name, (Kind.FUNC, Kind.VAR))

    def _scan(self, name: str, kinds: tuple[Kind, ...]) -> str | None:
        """The first module that defines `name` as one of `kinds`, parsing only the modules whose
        strings hold the name."""
        needle = name.encode("utf-8", "surrogatepass") + b"\0"
        for module, raw in self.raw_btf.items():
            btf = self.btf(module) if _strings_hold(raw, needle) else None
            if btf is not None and any(
                i >= btf.start_id for kind in kinds for i in btf.find(name, kind)
            ):
                return module
        return None

    def _index(self) -> dict[str, str]:
        """Every module's FUNC and VAR names, the first module winning; built once, keeping no
        module's BTF."""
        if self._all is None:
            self._all = {}
            for module in self.raw_btf:
                btf = self._parsed[module] if module in self._parsed else self._parse(module)
                if btf is None:
                    self._parsed[module] = None  # its problem is said once
                    continue
                for kind in (Kind.FUNC, Kind.VAR):
                    for type_id in btf.ids_of_kind(kind):
                        self._all.setdefault(btf.name(type_id), module)
        return self._all


def _strings_hold(raw: Buffer, needle: bytes) -> bool:
    """Whether the string section of raw BTF `raw` holds `needle` (a name and its NUL); a blob
    whose header does not read may hold anything."""
    try:
        header = btfblob.read_header(memoryview(raw), _no_detail)
    except BTFError:
        return True
    start = header.strings_start
    return bytes(raw[start : start + header.strings_len]).find(needle) >= 0


def _no_detail(message: str, offset: int, hint: str | None = None) -> BTFError:
    return BTFError(message, offset=offset, hint=hint)


def pack_btf(raw_btf: dict[str, Buffer]) -> bytes:
    """The modules' raw BTF as one cache entry: a JSON line of [module, size] pairs, then the
    blobs in that order."""
    sizes = [[module, len(raw)] for module, raw in raw_btf.items()]
    return b"".join([json.dumps(sizes).encode(), b"\n", *map(bytes, raw_btf.values())])


def unpack_btf(data: Buffer) -> dict[str, Buffer] | None:
    """pack_btf's input back, as views of `data` (bytes, or a mapped cache entry); None if
    `data` is not such an entry."""
    view = memoryview(data)
    size = 1 << 16
    while True:  # the JSON line: a few dozen bytes a module
        end = bytes(view[:size]).find(b"\n")
        if end >= 0 or size >= len(view):
            break
        size *= 4
    if end < 0:
        return None
    blobs = view[end + 1 :]
    try:
        sizes = json.loads(bytes(view[:end]))
        raw_btf: dict[str, Buffer] = {}
        at = 0
        for module, length in sizes:
            raw_btf[module] = blobs[at : at + length]
            at += length
    except (ValueError, TypeError):
        return None
    return raw_btf if at == len(blobs) else None


class Modules:
    """The kfuncs of K's modules, and their BTF (ModuleBtf). Both come from the cache, or from
    one pass over every module that fills both entries. On a cache miss the
    pass starts before vmlinux's BTF is read, in a worker process, and is waited for after; the
    modules' BTF is read only when asked for (most programs need none)."""

    def __init__(self, artifacts: KernelArtifacts, cache: Cache, problems: list[str], jobs: int):
        self.artifacts, self.cache = artifacts, cache
        self.problems, self.jobs = problems, jobs
        key = content_key(INDEX_VERSION, artifacts.kver, stat_key(list(artifacts.modules)))
        self.kfuncs_name, self.btf_name = f"kfuncs-{key}.json", f"modbtf-{key}.bin"
        cached = cache.get_json(self.kfuncs_name)
        try:
            self.kfuncs = {k: ModuleKfunc(**v) for k, v in cached.items()} if cached else None
        except (AttributeError, TypeError):
            self.kfuncs = None  # a damaged entry
        self._btf: ModuleBtf | None = None
        self._pending = (
            None if self.kfuncs is not None else scan_in_background(artifacts, jobs=jobs)
        )

    def read(self, vmlinux: BTF | None) -> dict[str, ModuleKfunc]:
        """The modules' kfuncs, named in their BTF on `vmlinux` (None: unreadable, no kfuncs)."""
        pending, self._pending = self._pending, None
        try:
            scanned = pending() if pending is not None else None  # waited for, whatever happens
        except WorkerDied:  # killed (the OOM killer): the pass once more, in this process
            scanned = scan_modules(self.artifacts)
        if vmlinux is None:
            return {}
        if scanned is not None:
            self._scanned(scanned, vmlinux)
        return self.kfuncs or {}

    def _scanned(self, scanned: ModuleScan, vmlinux: BTF) -> None:
        before = len(self.problems)
        self.problems.extend(scanned.problems)
        self.kfuncs = name_kfuncs(scanned, vmlinux, self.problems)
        if len(self.problems) == before:  # a module read again next time may read fine
            kfuncs = {k: dataclasses.asdict(v) for k, v in sorted(self.kfuncs.items())}
            self.cache.put(self.kfuncs_name, json.dumps(kfuncs, indent=0).encode())
            self.cache.put(self.btf_name, pack_btf(scanned.raw_btf))
        self._btf = self._module_btf(scanned.raw_btf, vmlinux)

    def module_btf(self, vmlinux: BTF) -> ModuleBtf:
        """The modules' BTF: kept from the pass, or from the cache, or from a pass now."""
        if self._btf is None:
            data = self.cache.map(self.btf_name)  # shared by the workers, read where searched
            raw_btf = unpack_btf(data) if data is not None else None
            if raw_btf is None:
                self._scanned(scan_modules(self.artifacts, jobs=self.jobs), vmlinux)
            else:
                self._btf = self._module_btf(raw_btf, vmlinux)
        assert self._btf is not None
        return self._btf

    def _module_btf(self, raw_btf: dict[str, Buffer], vmlinux: BTF) -> ModuleBtf:
        files = {module_name(p): p for p in self.artifacts.modules}
        return ModuleBtf(raw_btf, vmlinux, self.problems, files)
