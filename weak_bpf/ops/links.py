"""Resolving: bring the weak-updates links of kernels in line with the installed programs, under
the lock, and report each kernel (add-kernel, remove-kernel, add-progs, remove-progs)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import posixpath
import re
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from weak_bpf.apply import plan as resolver
from weak_bpf.apply import writer as actions
from weak_bpf.apply.journal import send_to_journal, stderr_report
from weak_bpf.apply.plan import Candidate
from weak_bpf.apply.resolution import Action, ProgramChange, Resolution
from weak_bpf.config import Config
from weak_bpf.errors import ApplyError, WeakBpfError
from weak_bpf.kernel import find as kernel
from weak_bpf.model import Verdict
from weak_bpf.ops.audited import AuditReport
from weak_bpf.ops.verdicts import audit, settings
from weak_bpf.program import rpmdb

log = logging.getLogger("weak-bpf-progs")


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
    if not kernel.is_installed(root, kver):
        kernel.find_kernel(root, kver)  # raises KernelNotFound unless K is the running kernel
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
