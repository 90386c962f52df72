"""`audit` and `explain`: every installed program (or one object) on every kernel, with results
kept in the cache."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from weak_bpf import __version__
from weak_bpf.config import Config, load_config
from weak_bpf.errors import WeakBpfError
from weak_bpf.files.paths import resolve_in_root, resolved_path
from weak_bpf.kernel import find as kernel
from weak_bpf.kernel.cache import Cache, content_key, stat_key
from weak_bpf.kernel.facts import load_kernel_facts
from weak_bpf.model import KernelFacts, Result
from weak_bpf.ops.audited import AuditReport, ProgramAudit
from weak_bpf.ops.judging import Task, evaluate, judge
from weak_bpf.ops.verified import fold_cached, fold_object
from weak_bpf.program import installed as programs_mod
from weak_bpf.program.installed import (
    InstalledProgram,
    installed_programs,
    load_program,
    object_path,
    sidecar_greylist,
)
from weak_bpf.workerpool import usable_jobs

log = logging.getLogger("weak-bpf-progs")


def weak_updates_dir(kver: str) -> str:
    return f"usr/lib/modules/{kver}/bpf/weak-updates"


def is_linked(root: Path, kver: str, program: InstalledProgram) -> bool:
    """Whether K's weak-updates link for the program's link name points at this object."""
    return kver in linked_kernels(root, [kver], program)


def linked_kernels(root: Path, kvers: Sequence[str], program: InstalledProgram) -> set[str]:
    """The kernels among `kvers` whose weak-updates link for the program points at it."""
    top = str(root)
    linked: set[str] = set()
    target: str | None = None
    for kver in kvers:
        where = f"{weak_updates_dir(kver)}/{program.link_name}"
        if not os.path.islink(f"{top}/{where}"):
            continue
        if target is None:
            target = resolved_path(top, program.path)
            if target is None:
                break
        if resolved_path(top, where) == target:
            linked.add(kver)
    return linked


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


def kernel_facts(
    root: Path,
    kvers: Sequence[str] = (),
    *,
    cache: bool = True,
    config: Config | None = None,
    jobs: int = 1,
) -> list[KernelFacts]:
    """Facts of the given (default: every installed kernel, and the running one) kernels,
    oldest first. `jobs`: the processes that may scan a kernel's modules."""
    store = Cache(root, writable=cache)
    config = config or settings(root)
    return [_facts(root, a, store, config, jobs) for a in _kernels(root, kvers)]


def _kernels(root: Path, kvers: Sequence[str]) -> Sequence[kernel.KernelArtifacts]:
    """The given kernels (each must be installed or running), or every one that can be judged."""
    return [kernel.find_kernel(root, k) for k in kvers] if kvers else kernel.find_kernels(root)


def _facts(
    root: Path, artifacts: kernel.KernelArtifacts, store: Cache, config: Config, jobs: int
) -> KernelFacts:
    """K's facts, read on first use, with the kABI stablelist the configuration names for K."""
    override = config.kabi_override(artifacts.kver)
    if override is not None:
        path = resolve_in_root(root, override) or root / override
        artifacts = dataclasses.replace(artifacts, kabi_list=path)
    return load_kernel_facts(artifacts, store, jobs=jobs)


RESULTS_VERSION = "2"


def _kernel_key(facts: KernelFacts) -> str:
    """What a kernel's results depend on: every artifact read, and this tool's version."""
    a = facts.artifacts
    files = [a.btf, a.image, a.symvers, a.system_map, a.config, a.kabi_list, a.kallsyms]
    files += list(a.symbol_files) + list(a.modules)
    return content_key(RESULTS_VERSION, __version__, a.kver, stat_key([f for f in files if f]))


def _program_key(root: Path, program: InstalledProgram) -> str:
    """What a program's results depend on: its object and greylist, as read inside the root,
    and the links leading to them."""
    top = str(root)
    names = [program.path, sidecar_greylist(program.path)]
    files = [f"{top}/{n}" for n in names]
    files += [resolved_path(top, n) or f"{top}/{n}.absent" for n in names]
    links = [_link(f) for f in files[:2]]
    return content_key(program.path, program.native_kernel or "", *links, stat_key(files))


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def audit(
    root: Path,
    kvers: Sequence[str] = (),
    *,
    programs: Sequence[str] = (),
    cache: bool = True,
    exclude: Collection[str] = (),
    progress: Callable[[str], None] | None = None,
    config: Config | None = None,
    jobs: int | None = None,
    verified: bool = True,
) -> AuditReport:
    """Every installed program (or those whose path matches one of `programs`, fnmatch
    patterns) against every installed kernel and the running one (or the ones given).
    `progress`, if given, hears a short line at each kernel and every few programs.

    Results are kept in the cache, per kernel, under keys that change with any file they were
    computed from, so a warm audit reads no object and no BTF at all. Identical objects (the same
    bytes and greylist, under other paths or in other packages) are judged once per kernel.
    `jobs` worker processes judge what the cache does not hold (default: one per processor).
    With `verified`, the outcomes a past `verify` cached are folded in (ops.verify)."""
    if not root.is_dir():
        raise WeakBpfError(f"{root}: no such directory", hint="--root names an installed system")
    store = Cache(root, writable=cache)
    config = config or settings(root)  # read once: its errors are reported once
    jobs = usable_jobs(jobs)
    facts = []
    for artifacts in _kernels(root, kvers):
        if progress is not None:
            progress(f"reading kernel {artifacts.kver}...")
        facts.append(_facts(root, artifacts, store, config, jobs))
    names = {f.kver: f"results-{_kernel_key(f)}.json" for f in facts}
    tables = {kver: store.get_json(name) or {} for kver, name in names.items()}
    selected = [
        p for p in installed_programs(root) if _selected(p, programs) and p.path not in exclude
    ]
    if progress is not None:
        progress(f"checking {len(selected)} programs...")
    keys = [_program_key(root, program) for program in selected]
    found: list[dict[str, Result]] = []
    build_kernels: list[str | None] = []
    tasks: list[Task] = []
    for program, key in zip(selected, keys):
        entries = {kver: table.get(key) for kver, table in tables.items()}
        try:
            cached = {k: Result.from_json(e["result"]) for k, e in entries.items() if e}
        except (KeyError, ValueError, TypeError):
            cached = {}
        found.append(cached)
        build_kernels.append(next((e.get("build_kernel") for e in entries.values() if e), None))
        if len(cached) < len(facts):
            missing = tuple(f.kver for f in facts if f.kver not in cached)
            tasks.append(Task(program, missing, _size(root, program)))

    said = 0  # tens of programs said to be checked, the cached ones first

    def judged_so_far(done: int) -> None:
        nonlocal said
        tens = (len(selected) - len(tasks) + done) // 10
        if progress is not None and tens > said:
            progress(f"checked {tens * 10} of {len(selected)} programs")
            said = tens

    judged_so_far(0)
    judged = judge(root, tasks, facts, jobs=jobs, progress=judged_so_far, cached_kernels=cache)
    by_path = {task.program.path: j for task, j in zip(tasks, judged)}
    changed: set[str] = set()
    audits = []
    kvers_judged = [f.kver for f in facts]
    for program, key, cached, known_build in zip(selected, keys, found, build_kernels):
        greylist, build_kernel = None, known_build
        fresh = by_path.get(program.path)
        if fresh is not None:
            greylist, build_kernel = fresh.greylist, fresh.build_kernel
            for kver, entry in fresh.entries.items():
                cached[kver] = Result.from_json(entry["result"])
                tables[kver][key] = entry
                changed.add(kver)
        linked = linked_kernels(root, kvers_judged, program)
        results = {k: (cached[k], k in linked) for k in kvers_judged}
        audits.append(ProgramAudit(program, build_kernel, results, greylist))
    for kver in changed:
        store.put(names[kver], json.dumps(tables[kver]).encode())
    report = AuditReport(root, tuple(f.kver for f in facts), tuple(audits))
    # --- verify: fold in what K's own verifier said, when a past `verify` cached it ---
    if verified:
        report = fold_cached(report, [f.artifacts for f in facts])
    return report


def _size(root: Path, program: InstalledProgram) -> int:
    try:
        return os.stat(root / program.path).st_size
    except OSError:
        return -1


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
    audited = ProgramAudit(loaded.program, loaded.build_kernel, results, loaded.greylist)
    # --- verify: fold in what K's own verifier said, when a past `verify` cached it ---
    loose = object_path(root, path) if program is None else None
    return fold_object(root, audited, loose, [f.artifacts for f in facts])
