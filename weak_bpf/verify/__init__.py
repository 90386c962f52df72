"""`verify`: boot a kernel in a throwaway VM and let its own verifier load every program.

- `tools.py`: the host's qemu, busybox and loader (a missing one is a clear error);
- `initramfs.py`: the initramfs, built in memory (cpio "newc");
- `guest.py`: the guest's /init and the reading of its console (pure);
- `vm.py`: one qemu run, with a time limit, never left running;
- `store.py`: outcomes cached per (object content, kernel image content).
The verdicts are folded in by the pure `weak_bpf.engine.verified`; the use case is
`weak_bpf.ops.verify`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from weak_bpf.engine.verified import Verification
from weak_bpf.kernel.find import module_name
from weak_bpf.verify import guest, initramfs, vm
from weak_bpf.verify.guest import GuestError, GuestReport
from weak_bpf.verify.tools import Tools

GUEST_LOADER = "usr/libexec/weak-bpf-progs/verify-loader"


@dataclasses.dataclass(frozen=True)
class Boot:
    """One boot: how long it took, under which accelerator, what insmod said, and why it
    failed, if it did (then every object's outcome is unknown)."""

    seconds: float
    kvm: bool
    modules: tuple[tuple[str, int, str], ...] = ()  # (module, insmod's status, its output)
    failure: str | None = None


def run_guest(
    qemu: Path,
    image: Path,
    *,
    programs: Mapping[str, Path],
    runs: Sequence[tuple[str, str]],
    objects: Mapping[str, bytes],
    modules: Sequence[tuple[str, Path]] = (),
    config: Path | None = None,
    release: str | None = None,
    timeout: float,
    kvm: bool | None = None,
) -> tuple[GuestReport, float, bool]:
    """Boot `image` with an initramfs of `programs` (guest path -> host binary), `objects`,
    `modules` and K's `config` (as /boot/config-<release>, where libbpf reads `__kconfig`
    values; `release`: the kernel's, by default from an image named vmlinuz-<release>), and
    run `runs`: (report, seconds, whether KVM was used). Raises GuestError when the guest does
    not finish."""
    script = guest.init_script(runs, [m for m, _ in modules])
    if release is None and image.name.startswith("vmlinuz-"):
        release = image.name[len("vmlinuz-") :]
    boot_config = None
    if config is not None and release is not None:
        boot_config = (f"boot/config-{release}", config)
    entries = initramfs.files(
        script=script, programs=programs, objects=objects, modules=modules, config=boot_config
    )
    use_kvm = vm.kvm_usable() if kvm is None else kvm
    initrd = initramfs.archive(entries)
    try:
        console, seconds = vm.boot(qemu, image, initrd, timeout=timeout, kvm=use_kvm)
    except vm.QemuFailed:
        if not use_kvm:
            raise
        use_kvm = False  # KVM is there but does not work (nested virtualisation): TCG
        console, seconds = vm.boot(qemu, image, initrd, timeout=timeout, kvm=False)
    report = guest.parse_console(console, [n for n, _ in runs], [m for m, _ in modules])
    return report, seconds, use_kvm


@dataclasses.dataclass(frozen=True)
class GuestObject:
    """An object to verify: its bytes, the programs the offline reader found in it, and the
    modules it needs (kfuncs, kprobe targets), which the guest inserts first."""

    data: bytes
    programs: Collection[str] = ()
    modules: Collection[str] = ()


def verify_objects(
    tools: Tools,
    image: Path,
    objects: Mapping[str, GuestObject],
    *,
    modules: Sequence[tuple[str, Path]] = (),
    unresolved: Mapping[str, str] | None = None,
    config: Path | None = None,
    release: str | None = None,
    timeout: float,
) -> tuple[dict[str, Verification], Boot]:
    """Boot `image` once and load each program of each object on its own: {name: outcome}.
    `objects`: plain names (they become file names) -> what to verify; `modules`: inserted in
    this order; `unresolved`: {module: why} for the modules that are not there to insert. An
    object that needs a module that is not inserted is unknown; a boot that fails gives every
    object the failure."""
    runs = [(name, f"/{GUEST_LOADER} /objects/{name}.o") for name in objects]
    try:
        report, seconds, kvm = run_guest(
            tools.qemu,
            image,
            programs={"bin/busybox": tools.busybox, GUEST_LOADER: tools.loader},
            runs=runs,
            objects={name: o.data for name, o in objects.items()},
            modules=modules,
            config=config,
            release=release,
            timeout=timeout,
        )
    except GuestError as e:
        failed = Verification(failure=str(e))
        return dict.fromkeys(objects, failed), Boot(timeout, vm.kvm_usable(), (), str(e))
    missing = {**(unresolved or {}), **report.module_failures()}
    outcomes = {}
    for name, obj in objects.items():
        lacking = sorted(module_name(m) for m in obj.modules)
        lacking = [m for m in lacking if m in missing]
        if lacking:
            why = "; ".join(f"module {m} was not inserted: {missing[m]}" for m in lacking)
            outcomes[name] = Verification(failure=why)
            continue
        status, output = report.results[name]
        outcomes[name] = guest.read_loader_output(output, status, obj.programs)
    return outcomes, Boot(seconds, kvm, report.modules)
