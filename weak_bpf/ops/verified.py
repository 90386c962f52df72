"""The outcomes a past `verify` left in the cache, folded into an audit (every audit does it):
this boots nothing, and costs nothing when `verify` never ran."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from weak_bpf.files.paths import resolve_in_root
from weak_bpf.kernel.cache import CACHE_DIR, Cache
from weak_bpf.kernel.find import KernelArtifacts, module_name
from weak_bpf.ops.audited import AuditReport, ProgramAudit

if TYPE_CHECKING:  # the fold is imported when there is something to fold
    from weak_bpf.engine.verified import Verification


def fold_outcomes(
    report: AuditReport, outcomes: dict[tuple[str, str], Verification]
) -> AuditReport:
    """`report` with each (program path, kernel)'s outcome folded into its result."""
    if not outcomes:
        return report
    from weak_bpf.engine.verified import fold

    programs = []
    for p in report.programs:
        results = {}
        for kver, (result, linked) in p.results.items():
            outcome = outcomes.get((p.program.path, kver))
            results[kver] = (fold(result, outcome, kver) if outcome else result, linked)
        programs.append(dataclasses.replace(p, results=results))
    return dataclasses.replace(report, programs=tuple(programs))


def fold_cached(report: AuditReport, kernels: Sequence[KernelArtifacts]) -> AuditReport:
    """`report` with the outcomes a past `verify` cached for its objects on `kernels` (its
    kernels, as found); boots nothing, and costs nothing when `verify` never ran."""
    root = report.root
    if not (root / CACHE_DIR / "verify").is_dir():
        return report
    files = {p.program.path: resolve_in_root(root, p.program.path) for p in report.programs}
    return fold_outcomes(report, _cached(root, kernels, files))


def fold_object(
    root: Path, audited: ProgramAudit, loose: Path | None, kernels: Sequence[KernelArtifacts]
) -> ProgramAudit:
    """`explain`'s one program with the outcomes a past `verify` cached for it on `kernels`: an
    installed program, or a `loose` object file (found by its content)."""
    path = audited.program.path
    file = loose if loose is not None else resolve_in_root(root, path)
    report = AuditReport(root, tuple(audited.results), (audited,))
    outcomes = _cached(root, kernels, {path: file}, hashing=loose is not None)
    return fold_outcomes(report, outcomes).programs[0]


def module_files(artifacts: KernelArtifacts) -> dict[str, Path]:
    """{module name: its file} of a kernel."""
    return {module_name(ko.name): ko for ko in artifacts.modules}


def _cached(
    root: Path,
    kernels: Sequence[KernelArtifacts],
    files: dict[str, Path | None],
    *,
    hashing: bool = False,
) -> dict[tuple[str, str], Verification]:
    """The cached outcomes of `files` (program path -> its object) on `kernels`.
    Content keys come from the index `verify` wrote; with `hashing`, a file it does not list
    (a loose object `explain` was given) is hashed."""
    if not (root / CACHE_DIR / "verify").is_dir():
        return {}
    from weak_bpf.verify import store  # only once a `verify` has run

    cache = Cache(root, writable=False)
    keys = store.Keys(cache, hashing=hashing)
    boots = {}
    for artifacts in kernels:
        kver = artifacts.kver
        image_key = keys.of(artifacts.image)
        if image_key is None:
            continue
        boot = store.boot_key(image_key, keys.of(artifacts.config))
        if store.has_boot(cache, boot):
            boots[kver] = (boot, artifacts)
    outcomes: dict[tuple[str, str], Verification] = {}
    if not boots:
        return outcomes
    modules = {kver: module_files(a) for kver, (_, a) in boots.items()}
    for path, file in files.items():
        object_key = keys.of(file)
        if object_key is None:
            continue
        for kver, (boot, _) in boots.items():
            entry = store.get(cache, object_key, boot)
            if entry is not None and entry.current(keys, modules[kver]):
                outcomes[(path, kver)] = entry.outcome
    return outcomes
