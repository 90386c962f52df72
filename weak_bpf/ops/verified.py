"""The outcomes a past `verify` left in the cache, folded into an audit (every audit does it):
this boots nothing, and costs nothing when `verify` never ran."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from weak_bpf.engine.verified import Verification, fold
from weak_bpf.kernel import find as kernel
from weak_bpf.kernel.cache import CACHE_DIR, Cache
from weak_bpf.kernel.find import resolve_in_root
from weak_bpf.ops.audited import AuditReport, ProgramAudit


def fold_outcomes(
    report: AuditReport, outcomes: dict[tuple[str, str], Verification]
) -> AuditReport:
    """`report` with each (program path, kernel)'s outcome folded into its result."""
    if not outcomes:
        return report
    programs = []
    for p in report.programs:
        results = {}
        for kver, (result, linked) in p.results.items():
            outcome = outcomes.get((p.program.path, kver))
            results[kver] = (fold(result, outcome, kver) if outcome else result, linked)
        programs.append(dataclasses.replace(p, results=results))
    return dataclasses.replace(report, programs=tuple(programs))


def fold_cached(root: Path, report: AuditReport) -> AuditReport:
    """`report` with the outcomes a past `verify` cached for its objects and kernels; boots
    nothing, and costs nothing when `verify` never ran."""
    if not (root / CACHE_DIR / "verify").is_dir():
        return report
    files = {p.program.path: resolve_in_root(root, p.program.path) for p in report.programs}
    return fold_outcomes(report, _cached(root, report.kernels, files))


def fold_object(root: Path, audited: ProgramAudit, loose: Path | None) -> ProgramAudit:
    """`explain`'s one program with the outcomes a past `verify` cached for it: an installed
    program, or a `loose` object file (found by its content)."""
    path = audited.program.path
    file = loose if loose is not None else resolve_in_root(root, path)
    report = AuditReport(root, tuple(audited.results), (audited,))
    return fold_outcomes(report, _cached(root, report.kernels, {path: file})).programs[0]


def _cached(
    root: Path, kvers: Sequence[str], files: dict[str, Path | None]
) -> dict[tuple[str, str], Verification]:
    """The cached outcomes of `files` (program path -> its object) on `kvers`."""
    if not (root / CACHE_DIR / "verify").is_dir():
        return {}
    from weak_bpf.verify import store  # only once a `verify` has run

    cache = Cache(root, writable=False)
    image_keys = {}
    for kver in kvers:
        image = kernel.find_kernel(root, kver).image
        image_key = store.digest(image) if image is not None else ""
        if image_key and (root / CACHE_DIR / "verify" / image_key[:16]).is_dir():
            image_keys[kver] = image_key
    outcomes: dict[tuple[str, str], Verification] = {}
    if not image_keys:
        return outcomes
    for path, file in files.items():
        if file is None or not file.is_file():
            continue
        object_key = store.digest(file)
        for kver, image_key in image_keys.items():
            outcome = store.get(cache, object_key, image_key)
            if outcome is not None:
                outcomes[(path, kver)] = outcome
    return outcomes
