"""The use cases behind the commands. They work under an explicit root and return values; they
never print. Writing goes through weak_bpf.actions."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import logging
import os
import posixpath
import re
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from weak_bpf import __version__
from weak_bpf.apply import plan as resolver
from weak_bpf.apply import writer as actions
from weak_bpf.apply.journal import send_to_journal, stderr_report
from weak_bpf.apply.plan import Candidate
from weak_bpf.apply.resolution import Action, ProgramChange, Resolution
from weak_bpf.config import Config, load_config
from weak_bpf.engine import symbols
from weak_bpf.engine.checks import check_object, malformed
from weak_bpf.errors import ApplyError, ParseError, WeakBpfError
from weak_bpf.kernel import find as kernel
from weak_bpf.kernel import load as kernel_data
from weak_bpf.kernel.cache import Cache, content_key, stat_key
from weak_bpf.kernel.facts import facts_from_files, load_kernel_facts
from weak_bpf.kernel.find import resolve_in_root
from weak_bpf.model import KernelFacts, Result, Verdict
from weak_bpf.parsers.bpfobject import BpfObject, read_bpf_object
from weak_bpf.parsers.btf import Kind
from weak_bpf.parsers.greylist import Greylist, render_greylist
from weak_bpf.program import installed as programs_mod
from weak_bpf.program import rpmdb
from weak_bpf.program.installed import (
    InstalledProgram,
    LoadedProgram,
    installed_programs,
    load_program,
)

log = logging.getLogger("weak-bpf-progs")


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


def list_kernels(root: Path, kvers: Sequence[str] = ()) -> tuple[KernelSummary, ...]:
    """Installed kernels (or the ones named) under `root`, each read as far as it can be."""
    wanted = kvers or kernel.judged_kernels(root)
    return tuple(_summarise(kernel.find_kernel(root, kver)) for kver in wanted)


def _summarise(artifacts: kernel.KernelArtifacts) -> KernelSummary:
    problems = []
    btf_types = kfunc_tags = symvers_entries = None
    try:
        if artifacts.btf is not None:
            btf = kernel_data.load_kernel_btf(artifacts.btf).btf
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
    symbols = kernel_data.load_symbols(artifacts)
    problems.extend(p for p in symbols.problems if not p.startswith("System.map: "))
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
    data = kernel_data.read_file(where, max_size=programs_mod.MAX_OBJECT_SIZE)
    try:
        return read_bpf_object(data, shown)
    except ParseError as e:
        raise e.located(shown) from None


def greylist_beside(root: Path, path: Path) -> str | None:
    """OBJECT.greylist, the greylist a package ships next to OBJECT, as shown to users; None if
    there is none. It wins over a .greylist section in the object."""
    where = object_path(root, path)
    sidecar = where.with_name(where.name + ".greylist")
    try:
        if not sidecar.is_file():
            return None
    except OSError:  # a name too long for the extra suffix, a loop
        return None
    try:
        return str(sidecar.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(sidecar)


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


def settings(root: Path) -> Config:
    """The configuration; a broken one is reported and the defaults are used, so that a typo
    never stops a kernel installation."""
    try:
        return load_config(root)
    except WeakBpfError as e:
        log.warning("%s", e)
        if e.hint:
            log.warning("hint: %s", e.hint)
        return Config()


def _artifacts(root: Path, kver: str, config: Config) -> kernel.KernelArtifacts:
    """K's artifacts, with the kABI stablelist the configuration names for K, if any."""
    artifacts = kernel.find_kernel(root, kver)
    override = config.kabi_override(kver)
    if override is not None:
        path = resolve_in_root(root, override) or root / override
        artifacts = dataclasses.replace(artifacts, kabi_list=path)
    return artifacts


def kernel_facts(
    root: Path, kvers: Sequence[str] = (), *, cache: bool = True, config: Config | None = None
) -> list[KernelFacts]:
    """Facts of the given (default: every installed kernel, and the running one) kernels,
    oldest first."""
    store = Cache(root, writable=cache)
    config = config or settings(root)
    wanted = list(kvers) or list(kernel.judged_kernels(root))
    return [load_kernel_facts(_artifacts(root, k, config), store) for k in wanted]


RESULTS_VERSION = "1"


def _kernel_key(facts: KernelFacts) -> str:
    """What a kernel's results depend on: every artifact read, and this tool's version."""
    a = facts.artifacts
    files = [a.btf, a.symvers, a.system_map, a.config, a.kabi_list, a.root / "proc/kallsyms"]
    files += list(a.symbol_files) + list(a.modules)
    return content_key(RESULTS_VERSION, __version__, a.kver, stat_key([f for f in files if f]))


def _program_key(root: Path, program: InstalledProgram) -> str:
    """What a program's results depend on: its object and greylist, as read inside the root,
    and the links leading to them."""
    names = [program.path, f"{program.path}.greylist"]
    files = [root / n for n in names]
    files += [resolve_in_root(root, n) or root / f"{n}.absent" for n in names]
    links = [os.readlink(f) if f.is_symlink() else "" for f in files[:2]]
    return content_key(program.path, program.native_kernel or "", *links, stat_key(files))


def audit(
    root: Path,
    kvers: Sequence[str] = (),
    *,
    programs: Sequence[str] = (),
    cache: bool = True,
    exclude: Collection[str] = (),
    progress: Callable[[str], None] | None = None,
    config: Config | None = None,
) -> AuditReport:
    """Every installed program (or those whose path matches one of `programs`, fnmatch
    patterns) against every installed kernel and the running one (or the ones given).
    `progress`, if given, hears a short line at each kernel and every few programs.

    Results are kept in the cache, per kernel, under keys that change with any file they were
    computed from, so a warm audit reads no object and no BTF at all."""
    if not root.is_dir():
        raise WeakBpfError(f"{root}: no such directory", hint="--root names an installed system")
    store = Cache(root, writable=cache)
    config = config or settings(root)  # read once: its errors are reported once
    facts = []
    for kver in list(kvers) or list(kernel.judged_kernels(root)):
        if progress is not None:
            progress(f"reading kernel {kver}...")
        facts.extend(kernel_facts(root, [kver], cache=cache, config=config))
    names = {f.kver: f"results-{_kernel_key(f)}.json" for f in facts}
    tables = {kver: store.get_json(name) or {} for kver, name in names.items()}
    changed: set[str] = set()
    audits = []
    selected = [
        p for p in installed_programs(root) if _selected(p, programs) and p.path not in exclude
    ]
    if progress is not None:
        progress(f"checking {len(selected)} programs...")
    for done, program in enumerate(selected, 1):
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
        if progress is not None and done % 10 == 0:
            progress(f"checked {done} of {len(selected)} programs")
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
            raise WeakBpfError(
                f"{path}: no such BPF object",
                hint="give an installed program as 'weak-bpf-progs audit' lists it "
                "(usr/lib/bpf/<pkg>/<name>.bpf.o), or the path of a .bpf.o file",
            )
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


# --- resolving: add and remove kernels and programs ----------------------------------------------

_PROGRAM_PATH = re.compile(
    r"usr/lib/bpf/[^/].*\.bpf\.o\Z|usr/lib/modules/[^/]+/bpf/extra/[^/].*\.bpf\.o\Z"
)


def program_path(path: str) -> str:
    """A program path as given on stdin (absolute in the target system, or root-relative),
    made root-relative and checked. Raises WeakBpfError."""
    rel = path.strip().lstrip("/")
    parts = rel.split("/")
    if "\0" in rel or ".." in parts or "" in parts or "." in parts:
        raise WeakBpfError(
            f"{path!r}: not a plain path",
            hint="give the path the package installs, without '..', '.' or empty components",
        )
    if not _PROGRAM_PATH.match(rel):
        raise WeakBpfError(
            f"{path}: not a BPF program location",
            hint="programs live in /usr/lib/bpf/<pkg>/ or /usr/lib/modules/K/bpf/extra/<pkg>/ "
            "and end in .bpf.o",
        )
    return rel


@dataclasses.dataclass(frozen=True)
class KernelRun:
    """One kernel's resolution, and the plan behind it (what --dry-run prints)."""

    resolution: Resolution
    plan: resolver.Plan
    on_stderr: bool = False  # the report went to stderr (no journal): it said everything


def _previous(root: Path, kver: str) -> dict[str, Verdict | None]:
    """The verdicts of the last report for K, to tell which programs changed."""
    try:
        doc = json.loads((root / actions.REPORTS / f"{kver}.json").read_bytes())
        return {p.path: p.verdict for p in Resolution.from_json(doc).programs}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _finish(root: Path, runs: list[KernelRun], *, dry_run: bool, journal: bool) -> list[KernelRun]:
    """The report of each kernel: the file, then the journal (or stderr, without a journal)."""
    if dry_run:
        return runs
    done = []
    for run in runs:
        doc = json.dumps(run.resolution.to_json(), indent=2).encode()
        actions.write_report(root, run.resolution.kernel, doc)
        told = journal and send_to_journal(run.resolution)
        if not told:
            sys.stderr.write(stderr_report(run.resolution))
        done.append(dataclasses.replace(run, on_stderr=not told))
    actions.bump_stamp(root)
    return done


def resolve(
    root: Path,
    action: Action,
    kvers: Sequence[str],
    *,
    dry_run: bool = False,
    journal: bool = True,
    gone: Collection[str] = (),
) -> list[KernelRun]:
    """Bring the weak-updates links of `kvers` (default: all installed kernels) in line with
    the installed programs, less the `gone` ones (being removed), atomically and under the lock;
    report each kernel."""
    config = settings(root)
    lock = contextlib.nullcontext() if dry_run else actions.locked(root, config.lock_timeout)
    runs = []
    with lock:
        # the running kernel is judged by audit even when not installed, but links need one
        wanted = list(kvers) or list(kernel.installed_kernels(root))
        report = (
            audit(root, wanted, cache=not dry_run, exclude=gone, config=config)
            if wanted
            else AuditReport(root, (), ())
        )
        # a dry run opens no database: reading one can create its journal files
        paths = [p.program.path for p in report.programs]
        packages = dict.fromkeys(paths) if dry_run else rpmdb.owners(root, paths)
        # a kernel found by its boot/vmlinuz-K alone has nowhere for links: when every kernel is
        # resolved, it is passed over (an explicit add-kernel K still fails with the reason)
        homeless = [k for k in report.kernels if not kvers and not _has_module_dir(root, k)]
        for k in homeless:
            log.warning(
                "kernel %s is passed over: usr/lib/modules/%s does not exist, so it can have no "
                "links (is it fully installed? 'weak-bpf-progs kernels' shows what was found)",
                k,
                k,
            )
        failed: list[ApplyError] = []
        for kver in report.kernels:
            if kver in homeless:
                continue
            try:
                runs.append(
                    _resolve_kernel(root, kver, report, packages, config, action, dry_run, gone)
                )
            except ApplyError as e:  # this kernel is left as the error says; the others go on
                failed.append(e)
    done = _finish(root, runs, dry_run=dry_run, journal=journal)
    if failed:
        raise KernelsFailed(failed, done)
    return done


class KernelsFailed(ApplyError):
    """Some kernels' links could not be made; `runs` holds the kernels that were resolved."""

    def __init__(self, failed: Sequence[ApplyError], runs: list[KernelRun]) -> None:
        hints = dict.fromkeys(e.hint for e in failed if e.hint)
        super().__init__("; ".join(str(e) for e in failed), hint="; ".join(hints) or None)
        self.runs = runs


def _has_module_dir(root: Path, kver: str) -> bool:
    return actions.bpf_dir(root, kver).parent.is_dir()


def _resolve_kernel(  # noqa: PLR0917
    root: Path,
    kver: str,
    report: AuditReport,
    packages: Mapping[str, str | None],
    config: Config,
    action: Action,
    dry_run: bool,
    gone: Collection[str],
) -> KernelRun:
    candidates = [
        Candidate(
            p.program.path,
            p.program.link_name,
            p.build_kernel,
            p.program.native_kernel,
            p.results[kver][0],
        )
        for p in report.programs
    ]
    current = actions.current_links(root, kver)
    the_plan = resolver.plan(
        kver,
        candidates,
        current,
        link_unstable=config.link_unstable,
        link_partial=config.link_partial,
    )
    blocked: dict[str, str] = {}  # link name -> the entry weak-bpf-progs did not create there
    if dry_run:
        blocked = actions.blocked_names(root, kver, the_plan.links)
    elif the_plan.changes or not actions.in_place(root, kver):
        blocked = actions.apply_links(root, kver, the_plan.links)
    previous = _previous(root, kver)
    changes = []
    for p in report.programs:
        result = p.results[kver][0]
        name = p.program.link_name
        holder = the_plan.chosen.get(name) or the_plan.native.get(name)
        chosen = the_plan.chosen.get(name) == p.program.path
        changes.append(
            ProgramChange(
                path=p.program.path,
                package=packages.get(p.program.path),
                verdict=result.verdict,
                reasons=result.reasons,
                linked=chosen and name not in blocked,
                was_linked=current.get(name) == resolver.link_target(kver, name, p.program.path),
                previous_verdict=previous.get(p.program.path),
                link=name,
                superseded_by=holder if holder not in (None, p.program.path) else None,
                blocked=chosen and name in blocked,
                blocked_by=blocked.get(name) if chosen else None,
            )
        )
    installed = {p.program.path for p in report.programs}  # less the `gone` ones
    for name, target in sorted(current.items()):  # links of objects removed or being removed
        base = posixpath.dirname(f"{resolver.WEAK_UPDATES.format(kver=kver)}/{name}")
        path = posixpath.normpath(posixpath.join(base, target))
        if path not in installed:  # an upgrade deletes the old files before add-progs runs
            changes.append(
                ProgramChange(
                    path=path,
                    package=None,  # its package is gone or being removed
                    verdict=None,
                    was_linked=True,
                    previous_verdict=previous.get(path),
                    link=name,
                )
            )
    resolution = Resolution(kver, action, dry_run, tuple(changes))
    return KernelRun(resolution, the_plan)


def add_kernel(root: Path, kver: str, **options: Any) -> list[KernelRun]:
    found = kernel.find_kernel(root, kver)  # must be installed: raises KernelNotFound
    if not found.installed:
        raise WeakBpfError(
            f"kernel {kver} runs, but is not installed under {root}: there is no "
            f"usr/lib/modules/{kver} to link its programs in",
            hint=f"'weak-bpf-progs audit {kver}' judges the programs on it",
        )
    return resolve(root, Action.ADD_KERNEL, [kver], **options)


def remove_kernel(
    root: Path, kver: str, *, dry_run: bool = False, journal: bool = True
) -> list[KernelRun]:
    """Take away K's links (the kernel is going); nothing else is touched."""
    if "/" in kver or kver in ("", ".", "..") or "\0" in kver:
        raise WeakBpfError(f"not a kernel release: {kver!r}", hint=kernel.RELEASE_HINT)
    config = settings(root)
    present = (root / "usr/lib/modules" / kver).is_dir()
    current = actions.current_links(root, kver) if present else {}
    changes = tuple(
        ProgramChange(path=name, package=None, verdict=None, was_linked=True, link=name)
        for name in sorted(current)
    )
    run = KernelRun(
        Resolution(kver, Action.REMOVE_KERNEL, dry_run, changes),
        resolver.Plan(kver, {}, {}, (), tuple(sorted(current))),
    )
    if not dry_run:
        with actions.locked(root, config.lock_timeout):
            if present:
                actions.remove_links(root, kver)
    return _finish(root, [run], dry_run=dry_run, journal=journal)


def changed_programs(root: Path, paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """Program paths from stdin, checked: (good root-relative paths, errors)."""
    good, errors = [], []
    for path in paths:
        if not path.strip():
            continue
        try:
            good.append(program_path(path))
        except WeakBpfError as e:
            errors.append(f"ignored: {e}" + (f" ({e.hint})" if e.hint else ""))
    return good, errors


def _ignored(errors: Sequence[str]) -> None:
    """Bad paths on stdin concern the run, not a kernel: said once, counted in no kernel's
    report."""
    for problem in errors:
        log.warning("%s", problem)


def add_progs(root: Path, paths: Iterable[str], **options: Any) -> list[KernelRun]:
    """New or updated objects: every installed kernel is resolved again."""
    _, errors = changed_programs(root, paths)
    _ignored(errors)
    return resolve(root, Action.ADD_PROGS, (), **options)


def remove_progs(root: Path, paths: Iterable[str], **options: Any) -> list[KernelRun]:
    """Objects being removed (present or already gone): their links go, and the best remaining
    compatible build of the same program takes their place."""
    gone, errors = changed_programs(root, paths)
    _ignored(errors)
    return resolve(root, Action.REMOVE_PROGS, (), gone=gone, **options)
