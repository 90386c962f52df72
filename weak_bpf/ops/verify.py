"""`verify` and `audit --verify`: each kernel's own verifier, booted in a throwaway VM, loads every
program; its outcomes are cached and folded into the audit's verdicts.

Never run from a kernel hook or a file trigger: booting a VM is opt-in (`verify`, `audit
--verify`, the daemon when `verify_in_daemon = yes`). What every audit does, folding the
outcomes a past `verify` left in the cache, is in ops/verified.py.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from weak_bpf.config import Config
from weak_bpf.engine.verified import Verification
from weak_bpf.kernel import find as kernel
from weak_bpf.kernel.cache import Cache
from weak_bpf.kernel.find import resolve_in_root
from weak_bpf.ops.audited import AuditReport, ProgramAudit
from weak_bpf.ops.verdicts import audit, settings
from weak_bpf.ops.verified import fold_outcomes
from weak_bpf.parsers.sections import TargetKind
from weak_bpf.program.installed import InstalledProgram, load_program
from weak_bpf.verify import Boot, store, verify_objects
from weak_bpf.verify.initramfs import InitramfsError, module_order
from weak_bpf.verify.tools import Tools, find_tools

log = logging.getLogger("weak-bpf-progs")


@dataclasses.dataclass(frozen=True)
class KernelVerify:
    """How one kernel was verified: `boot` is None when every outcome came from the cache;
    `problem` says why it could not be verified (no image, a boot that failed)."""

    kver: str
    objects: int  # distinct objects verified on it
    boot: Boot | None = None
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    audit: AuditReport
    kernels: tuple[KernelVerify, ...]


def verifiable_kernels(root: Path) -> list[str]:
    """The installed kernels that have an image to boot."""
    return [
        k for k in kernel.installed_kernels(root) if kernel.find_kernel(root, k).image is not None
    ]


def verify(
    root: Path,
    kvers: Sequence[str] = (),
    *,
    programs: Sequence[str] = (),
    cache: bool = True,
    progress: Callable[[str], None] | None = None,
    config: Config | None = None,
) -> VerifyReport:
    """Boot each kernel (default: every installed one with an image) once, with the objects
    whose outcome is not cached yet, and fold every outcome into the audit of those kernels.
    `progress` hears a line per step (the daemon turns them into signals). Raises MissingTool
    before anything when qemu, busybox or the loader is missing."""
    tools = find_tools()
    config = config or settings(root)
    wanted = list(kvers) or verifiable_kernels(root)
    static = audit(
        root,
        wanted,
        programs=programs,
        cache=cache,
        progress=progress,
        config=config,
        verified=False,
    )
    store_ = Cache(root, writable=cache)
    outcomes: dict[tuple[str, str], Verification] = {}  # (program path, kver) -> outcome
    runs = []
    for kver in static.kernels:
        run, found = _verify_kernel(
            root, kver, static, store_, tools=tools, config=config, progress=progress
        )
        runs.append(run)
        outcomes.update(found)
    return VerifyReport(fold_outcomes(static, outcomes), tuple(runs))


def _verify_kernel(
    root: Path,
    kver: str,
    report: AuditReport,
    cache: Cache,
    *,
    tools: Tools,
    config: Config,
    progress: Callable[[str], None] | None,
) -> tuple[KernelVerify, dict[tuple[str, str], Verification]]:
    artifacts = kernel.find_kernel(root, kver)
    if artifacts.image is None or not artifacts.installed:
        return KernelVerify(kver, 0, problem=f"{kver} has no kernel image to boot"), {}
    if artifacts.arch not in (None, "x86_64"):
        return KernelVerify(kver, 0, problem=f"{kver} is a {artifacts.arch} kernel: verify "
                            "boots x86_64 kernels only"), {}  # fmt: skip
    image_key = store.digest(artifacts.image)
    keys: dict[str, str] = {}  # program path -> object key
    by_key: dict[str, tuple[ProgramAudit, Path]] = {}  # object key -> a program, its file
    for p in report.programs:
        path = resolve_in_root(root, p.program.path)
        if path is None or not path.is_file():
            continue
        keys[p.program.path] = key = store.digest(path)
        by_key.setdefault(key, (p, path))
    found = {k: store.get(cache, k, image_key) for k in by_key}
    missing = sorted(k for k, v in found.items() if v is None)
    boot = None
    problem = None
    if missing:
        modules = sorted({m for k in missing for m in by_key[k][0].results[kver][0].modules})
        objects, kprobes = {}, {}
        for key in missing:
            program, path = by_key[key]
            objects[key[:16]] = path.read_bytes()
            kprobes[key[:16]] = _kprobe_targets(root, program.program)
        try:
            ordered = module_order(artifacts.modules, artifacts.modules_dep, modules)
        except InitramfsError as e:
            log.warning("%s: %s: the programs that need it will fail to load", kver, e)
            ordered = []
        if progress is not None:
            progress(f"booting {kver} to verify {len(missing)} objects...")
        results, boot = verify_objects(
            tools,
            artifacts.image,
            objects,
            modules=ordered,
            kprobes=kprobes,
            config=artifacts.config,
            release=kver,
            timeout=config.verify_timeout,
        )
        problem = boot.failure
        for key in missing:
            found[key] = results[key[:16]]
            store.put(cache, key, image_key, results[key[:16]])
        if progress is not None:
            progress(f"{kver}: {'failed' if problem else 'booted'} in {boot.seconds:.1f} s")
    outcomes = {}
    for program_path, key in keys.items():
        outcome = found.get(key)
        if outcome is not None:
            outcomes[(program_path, kver)] = outcome
    return KernelVerify(kver, len(by_key), boot, problem), outcomes


def _kprobe_targets(root: Path, program: InstalledProgram) -> list[tuple[str, str]]:
    """(program, function) of the object's kprobes, whose targets the VM tries."""
    loaded = load_program(root, program)
    if loaded.obj is None:
        return []
    return [
        (f.name, f.info.lookup_name)
        for f in loaded.obj.programs
        if f.info.target_kind is TargetKind.KSYM and f.info.lookup_name
    ]
