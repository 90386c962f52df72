"""The use cases behind the commands. They read under an explicit root and return values; they
never print. (The writing use cases, add-kernel and friends, come with the resolver.)"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from collections.abc import Sequence
from pathlib import Path

from weak_bpf import __version__, kernel, kernel_data, symbols
from weak_bpf import programs as programs_mod
from weak_bpf.cache import Cache, content_key, stat_key
from weak_bpf.checks import check_object, malformed
from weak_bpf.errors import ParseError, WeakBpfError
from weak_bpf.kernel import resolve_in_root
from weak_bpf.kernelfacts import facts_from_files, load_kernel_facts
from weak_bpf.model import KernelFacts, Result, Verdict
from weak_bpf.parsers.bpfobject import BpfObject, read_bpf_object
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.greylist import Greylist, render_greylist
from weak_bpf.programs import InstalledProgram, LoadedProgram, installed_programs, load_program


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


# --- audit and explain ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProgramAudit:
    program: InstalledProgram
    build_kernel: str | None
    results: dict[str, tuple[Result, bool]]  # kver -> (result, linked now)
    greylist: Greylist | None = None  # when the object was read in this run (not cached)


@dataclasses.dataclass(frozen=True)
class AuditReport:
    root: Path
    kernels: tuple[str, ...]
    programs: tuple[ProgramAudit, ...]

    @property
    def clean(self) -> bool:
        """Nothing incompatible or unknown (audit's exit status 0)."""
        return all(
            result.verdict not in (Verdict.INCOMPATIBLE, Verdict.UNKNOWN)
            for p in self.programs
            for result, _ in p.results.values()
        )


def weak_updates_dir(kver: str) -> str:
    return f"usr/lib/modules/{kver}/bpf/weak-updates"


def is_linked(root: Path, kver: str, program: InstalledProgram) -> bool:
    """Whether K's weak-updates link for the program's link name points at this object."""
    link = root / weak_updates_dir(kver) / program.link_name
    if not link.is_symlink():
        return False
    target = resolve_in_root(root, f"{weak_updates_dir(kver)}/{program.link_name}")
    return target is not None and target == resolve_in_root(root, program.path)


def evaluate(loaded: LoadedProgram, facts: KernelFacts) -> Result:
    if loaded.obj is None or loaded.error is not None:
        return malformed(loaded.error or "unreadable")
    native = loaded.program.native_kernel == facts.kver
    return check_object(loaded.obj, loaded.greylist, facts, native=native)


def kernel_facts(root: Path, kvers: Sequence[str] = (), *, cache: bool = True) -> list[KernelFacts]:
    """Facts of the given (default: all installed) kernels, oldest first."""
    store = Cache(root, writable=cache)
    wanted = list(kvers) or list(kernel.installed_kernels(root))
    return [load_kernel_facts(kernel.find_kernel(root, k), store) for k in wanted]


RESULTS_VERSION = "1"


def _kernel_key(facts: KernelFacts) -> str:
    """What a kernel's results depend on: every artifact read, and this tool's version."""
    a = facts.artifacts
    files = [a.btf, a.symvers, a.system_map, a.config, a.kabi_list, a.root / "proc/kallsyms"]
    files += list(a.modules)
    return content_key(RESULTS_VERSION, __version__, a.kver, stat_key([f for f in files if f]))


def _program_key(root: Path, program: InstalledProgram) -> str:
    files = [root / program.path, root / f"{program.path}.greylist"]
    return content_key(program.path, program.native_kernel or "", stat_key(files))


def audit(
    root: Path, kvers: Sequence[str] = (), *, programs: Sequence[str] = (), cache: bool = True
) -> AuditReport:
    """Every installed program (or those whose path matches one of `programs`, fnmatch
    patterns) against every installed kernel (or the ones given).

    Results are kept in the cache, per kernel, under keys that change with any file they were
    computed from, so a warm audit reads no object and no BTF at all."""
    store = Cache(root, writable=cache)
    facts = kernel_facts(root, kvers, cache=cache)
    names = {f.kver: f"results-{_kernel_key(f)}.json" for f in facts}
    tables = {kver: store.get_json(name) or {} for kver, name in names.items()}
    changed: set[str] = set()
    audits = []
    for program in (p for p in installed_programs(root) if _selected(p, programs)):
        key = _program_key(root, program)
        entries = {kver: table.get(key) for kver, table in tables.items()}
        try:
            cached = {k: Result.from_json(e["result"]) for k, e in entries.items() if e}
        except (KeyError, ValueError, TypeError):
            cached = {}
        build_kernel = next((e.get("build_kernel") for e in entries.values() if e), None)
        greylist = None
        if len(cached) < len(facts):
            loaded = load_program(root, program)
            greylist, build_kernel = loaded.greylist, loaded.build_kernel
            for f in facts:
                if f.kver not in cached:
                    cached[f.kver] = evaluate(loaded, f)
                    tables[f.kver][key] = {
                        "build_kernel": build_kernel,
                        "result": cached[f.kver].to_json(),
                    }
                    changed.add(f.kver)
        results = {f.kver: (cached[f.kver], is_linked(root, f.kver, program)) for f in facts}
        audits.append(ProgramAudit(program, build_kernel, results, greylist))
    for kver in changed:
        store.put(names[kver], json.dumps(tables[kver]).encode())
    return AuditReport(root, tuple(f.kver for f in facts), tuple(audits))


def _selected(program: InstalledProgram, patterns: Sequence[str]) -> bool:
    if not patterns:
        return True
    names = (program.path, program.link_name)
    return any(fnmatch.fnmatch(name, pat) for pat in patterns for name in names)


def explain(root: Path, path: Path, kvers: Sequence[str] = ()) -> ProgramAudit:
    """Every check of one program (installed or not) on the given or all installed kernels."""
    program = programs_mod.program_for_path(root, path)
    if program is not None:
        loaded = load_program(root, program)
    else:
        where = object_path(root, path)
        if not where.is_file():
            raise WeakBpfError(f"{path}: no such BPF object", hint="give the object's path")
        loaded = programs_mod.loose_program(where)
    facts = kernel_facts(root, kvers)
    results = {
        f.kver: (evaluate(loaded, f), program is not None and is_linked(root, f.kver, program))
        for f in facts
    }
    return ProgramAudit(loaded.program, loaded.build_kernel, results, loaded.greylist)


# --- greylist and symvers ------------------------------------------------------------------------


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
        raise WeakBpfError(loaded.error or f"{path}: unreadable", hint="is it a BPF object?")
    if btf_file is not None:
        facts = facts_from_files(btf_file, symvers_file)
    else:
        assert kver is not None
        facts = kernel_facts(root, [kver], cache=False)[0]
        if facts.vmlinux is None and facts.symvers is None:
            raise WeakBpfError(
                f"{kver} has neither BTF nor symvers: no greylist can be made",
                hint="install the kernel's BTF (vmlinux or vmlinuz) or its symvers",
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
