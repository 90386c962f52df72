"""`verify` and `audit --verify`: each kernel's own verifier, booted in a throwaway VM, loads every
program; its outcomes are cached and folded into the audit's verdicts.

Never run from a kernel hook or a file trigger: booting a VM is opt-in (`verify`, `audit
--verify`, the daemon when `verify_in_daemon = yes`). What every audit does, folding the
outcomes a past `verify` left in the cache, is in ops/verified.py.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from weak_bpf.apply import writer
from weak_bpf.config import Config
from weak_bpf.engine.verified import Verification
from weak_bpf.files.paths import resolve_in_root
from weak_bpf.kernel import find as kernel
from weak_bpf.kernel.cache import Cache
from weak_bpf.kernel.find import KernelArtifacts, module_name
from weak_bpf.ops.audited import AuditReport
from weak_bpf.ops.verdicts import audit, kernel_facts, settings
from weak_bpf.ops.verified import fold_outcomes, module_files
from weak_bpf.parsers.btf import Kind
from weak_bpf.parsers.objvalues import BpfObject
from weak_bpf.parsers.sections import TargetKind
from weak_bpf.program.installed import load_program
from weak_bpf.verify import Boot, GuestObject, store, verify_objects
from weak_bpf.verify.initramfs import InitramfsError, module_order
from weak_bpf.verify.tools import Tools, find_tools, loader_identity

log = logging.getLogger("weak-bpf-progs")

# Objects per boot: the time limit holds for each boot, an initramfs stays small, and a boot
# that fails costs only its batch (the others' outcomes are cached).
BATCH = 100


@dataclasses.dataclass(frozen=True)
class KernelVerify:
    """How one kernel was verified: `boot` is None when every outcome came from the cache;
    `problem` says why it could not be verified (no image, a boot that failed)."""

    kver: str
    objects: int  # distinct objects verified on it
    boot: Boot | None = None  # its boots taken together
    problem: str | None = None
    boots: int = 0


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    audit: AuditReport
    kernels: tuple[KernelVerify, ...]


@dataclasses.dataclass
class _Object:
    """One distinct object to verify on a kernel: a file holding it, what its programs are,
    and the modules it needs there."""

    path: Path
    key: str
    program_path: str  # an installed path of it (its offline result names the modules)
    programs: tuple[str, ...] = ()
    kprobes: tuple[str, ...] = ()  # kprobe targets: function, or module:function
    modules: tuple[str, ...] = ()  # set per kernel


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
    jobs: int | None = None,
    bootable_only: bool = True,
) -> VerifyReport:
    """Boot each kernel (default: every installed one with an image; with `bootable_only`
    False, every kernel an audit judges, those without an image being reported so) once, with
    the objects whose outcome is not cached yet, and fold every outcome into the audit of those
    kernels. `progress` hears a line per step (the daemon turns them into signals). Raises
    MissingTool before anything when qemu, busybox or the loader is missing."""
    tools = find_tools()
    loader = loader_identity(tools.loader)
    config = config or settings(root)
    wanted = list(kvers) or (verifiable_kernels(root) if bootable_only else [])
    static = audit(
        root,
        wanted,
        programs=programs,
        cache=cache,
        progress=progress,
        config=config,
        jobs=jobs,
        verified=False,
    )
    store_ = Cache(root, writable=cache)
    keys = store.Keys(store_, hashing=True)
    objects = _distinct_objects(root, static, keys, loader)
    outcomes: dict[tuple[str, str], Verification] = {}  # (program path, kver) -> outcome
    runs = []
    for kver in static.kernels:
        run, found = _verify_kernel(
            root, kver, static, objects, store_, keys, tools, loader, config, progress
        )
        runs.append(run)
        for key, outcome in found.items():
            for path in objects[key][1]:
                outcomes[(path, kver)] = outcome
    keys.save()
    if cache and any(run.boot is not None for run in runs):
        writer.bump_stamp(root)  # verdicts changed: the daemon drops the Audit answers it keeps
    return VerifyReport(fold_outcomes(static, outcomes), tuple(runs))


def _distinct_objects(
    root: Path, report: AuditReport, keys: store.Keys, loader: str
) -> dict[str, tuple[_Object, list[str]]]:
    """{object key: (the object, the installed paths holding it)}, but the objects the loader's
    libbpf is too old to open as their own loader does: they keep their offline verdict."""
    found: dict[str, tuple[_Object, list[str]]] = {}
    for p in report.programs:
        path = resolve_in_root(root, p.program.path)
        key = keys.of(path) if path is not None and path.is_file() else None
        if path is None or key is None:
            continue
        if key not in found:
            loaded = load_program(root, p.program)
            if loaded.obj is not None and not loader_can_open(loaded.obj, loader):
                log.info("%s: the verify loader's libbpf is too old for it", p.program.path)
                continue
            functions = loaded.obj.programs if loaded.obj else ()
            kprobes = tuple(
                f"{f.info.module}:{f.info.lookup_name}" if f.info.module else f.info.lookup_name
                for f in functions
                if f.info.target_kind is TargetKind.KSYM and f.info.lookup_name
            )
            names = tuple(f.name for f in functions)
            found[key] = (_Object(path, key, p.program.path, names, kprobes), [])
        found[key][1].append(p.program.path)
    return found


def loader_can_open(obj: BpfObject, loader: str) -> bool:
    """Whether the verify loader (its "@loader N libbpf X.Y" line) opens `obj` as the loader
    shipped with it must: .struct_ops.link maps need libbpf 1.2, flavored struct_ops names 1.4.
    An older one would fail the object for its own sake, not the kernel's."""
    found = re.search(r"libbpf (\d+)\.(\d+)", loader)
    if found is None:
        return True
    have = (int(found[1]), int(found[2]))
    needs = [(1, 2) for ops in obj.struct_ops if ops.link]
    needs += [(1, 4) for ops in obj.struct_ops if "___" in ops.type_name]
    return all(have >= need for need in needs)


def _verify_kernel(  # noqa: PLR0917 (one kernel's share of verify's state)
    root: Path,
    kver: str,
    report: AuditReport,
    objects: dict[str, tuple[_Object, list[str]]],
    cache: Cache,
    keys: store.Keys,
    tools: Tools,
    loader: str,
    config: Config,
    progress: Callable[[str], None] | None,
) -> tuple[KernelVerify, dict[str, Verification]]:
    """{object key: outcome} on `kver`, from the cache or from one boot."""
    artifacts = kernel.find_kernel(root, kver)
    if artifacts.image is None or not artifacts.installed:
        return KernelVerify(kver, 0, problem=f"{kver} has no kernel image to boot"), {}
    if artifacts.arch not in (None, "x86_64"):
        return KernelVerify(kver, 0, problem=f"{kver} is a {artifacts.arch} kernel: verify "
                            "boots x86_64 kernels only"), {}  # fmt: skip
    image_key = keys.of(artifacts.image)
    if image_key is None:
        return KernelVerify(kver, 0, problem=f"{artifacts.image}: cannot be read"), {}
    boot_key = store.boot_key(image_key, keys.of(artifacts.config))
    results = {p.program.path: p.results[kver][0] for p in report.programs if kver in p.results}
    files = module_files(artifacts)
    needs = _kprobe_modules(root, kver, [o for o, _ in objects.values()], config)
    found: dict[str, Verification] = {}
    todo: dict[str, _Object] = {}
    for key, (obj, _) in objects.items():
        result = results.get(obj.program_path)
        if result is None:
            continue
        obj.modules = tuple(sorted({*result.modules, *needs.get(key, ())}))
        entry = store.get(cache, key, boot_key)
        if (
            entry is not None
            and entry.loader == loader
            and set(entry.modules) == {module_name(m) for m in obj.modules}
            and entry.current(keys, files)
        ):
            found[key] = entry.outcome
        else:
            todo[key] = obj
    if not todo:
        return KernelVerify(kver, len(found)), found
    keys.save()  # the content keys, before the boots: a killed verify keeps its finished batches
    batches = [list(todo.items())[i : i + BATCH] for i in range(0, len(todo), BATCH)]
    boots: list[Boot] = []
    for number, batch in enumerate(batches, start=1):
        if progress is not None:
            part = f" (boot {number} of {len(batches)})" if len(batches) > 1 else ""
            progress(f"booting {kver} to verify {len(batch)} objects{part}...")
        boot = _boot_batch(artifacts, dict(batch), tools, config, found)
        boots.append(boot)
        for key, obj in batch:
            inserted = {module_name(m) for m in obj.modules}
            modules = {m: keys.of(files.get(m)) or "" for m in sorted(inserted)}
            store.put(cache, key, boot_key, store.Entry(found[key], loader, modules))
        if progress is not None:
            progress(f"{kver}: {'failed' if boot.failure else 'booted'} in {boot.seconds:.1f} s")
    failure = next((b.failure for b in boots if b.failure), None)
    total = Boot(
        sum(b.seconds for b in boots),
        any(b.kvm for b in boots),
        tuple(m for b in boots for m in b.modules),
        failure,
    )
    return KernelVerify(kver, len(found), total, failure, len(boots)), found


def _boot_batch(
    artifacts: KernelArtifacts,
    batch: dict[str, _Object],
    tools: Tools,
    config: Config,
    found: dict[str, Verification],
) -> Boot:
    """One boot of K for `batch`; its outcomes go into `found`."""
    assert artifacts.image is not None
    ordered, unresolved = _insert_order(artifacts, {m for o in batch.values() for m in o.modules})
    guests = {
        key[:16]: GuestObject(obj.path.read_bytes(), obj.programs, obj.modules)
        for key, obj in batch.items()
    }
    outcomes, boot = verify_objects(
        tools,
        artifacts.image,
        guests,
        modules=ordered,
        unresolved=unresolved,
        config=artifacts.config,
        release=artifacts.kver,
        timeout=config.verify_timeout,
    )
    for key in batch:
        found[key] = outcomes[key[:16]]
    return boot


def _insert_order(
    artifacts: KernelArtifacts, wanted: set[str]
) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """The modules to insert, dependencies first, and {module: why} for those that cannot be:
    one that is missing spoils only the objects that need it."""
    ordered: dict[str, Path] = {}
    unresolved: dict[str, str] = {}
    for module in sorted(wanted):
        try:
            for name, path in module_order(artifacts.modules, artifacts.modules_dep, [module]):
                ordered.setdefault(name, path)
        except InitramfsError as e:
            unresolved[module_name(module)] = str(e)
    return list(ordered.items()), unresolved


def _kprobe_modules(
    root: Path, kver: str, objects: list[_Object], config: Config
) -> dict[str, set[str]]:
    """{object key: modules} holding the functions its kprobes target that vmlinux does not
    have: the guest inserts them, or attaching there would fail for want of the module."""
    if not any(o.kprobes for o in objects):
        return {}
    facts = kernel_facts(root, [kver], config=config)[0]
    vmlinux = facts.vmlinux
    needs: dict[str, set[str]] = {}
    for obj in objects:
        for target in obj.kprobes:
            module, _, func = target.rpartition(":")
            if not module and vmlinux is not None and vmlinux.find(func, Kind.FUNC):
                continue
            found = module or facts.module_of_symbol(func)
            if found:
                needs.setdefault(obj.key, set()).add(found)
    return needs
