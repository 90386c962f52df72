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
from collections.abc import Mapping, Sequence
from pathlib import Path

from weak_bpf.engine.verified import Kprobe, Verification
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
    kprobes: Sequence[str] = (),
    config: Path | None = None,
    release: str | None = None,
    timeout: float,
    kvm: bool | None = None,
) -> tuple[GuestReport, float, bool]:
    """Boot `image` with an initramfs of `programs` (guest path -> host binary), `objects`,
    `modules` and K's `config` (as /boot/config-<release>, where libbpf reads `__kconfig`
    values; `release`: the kernel's, by default from an image named vmlinuz-<release>), run
    `runs` and try `kprobes`: (report, seconds, whether KVM was used). Raises GuestError when
    the guest does not finish."""
    script = guest.init_script(runs, [m for m, _ in modules], kprobes)
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
    report = guest.parse_console(console, [n for n, _ in runs], [m for m, _ in modules], kprobes)
    return report, seconds, use_kvm


def verify_objects(
    tools: Tools,
    image: Path,
    objects: Mapping[str, bytes],
    *,
    modules: Sequence[tuple[str, Path]] = (),
    kprobes: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    config: Path | None = None,
    release: str | None = None,
    timeout: float,
) -> tuple[dict[str, Verification], Boot]:
    """Boot `image` once and load each program of each object on its own: {name: outcome}.
    `objects`: plain names (they become file names) -> bytes; `kprobes`: name -> [(program,
    symbol)] to try a kprobe on. A boot that fails gives every object the failure."""
    kprobes = kprobes or {}
    symbols = sorted({s for targets in kprobes.values() for _, s in targets})
    runs = [(name, f"/{GUEST_LOADER} /objects/{name}.o") for name in objects]
    try:
        report, seconds, kvm = run_guest(
            tools.qemu,
            image,
            programs={"bin/busybox": tools.busybox, GUEST_LOADER: tools.loader},
            runs=runs,
            objects=objects,
            modules=modules,
            kprobes=symbols,
            config=config,
            release=release,
            timeout=timeout,
        )
    except GuestError as e:
        failed = Verification(failure=str(e))
        return dict.fromkeys(objects, failed), Boot(timeout, vm.kvm_usable(), (), str(e))
    placed = dict(report.kprobes)
    outcomes = {}
    for name in objects:
        _, output = report.results[name]
        programs, open_error = guest.parse_loader_output(output)
        tried = tuple(Kprobe(p, s, placed[s]) for p, s in kprobes.get(name, ()))
        outcomes[name] = Verification(programs, tried, open_error)
    return outcomes, Boot(seconds, kvm, report.modules)
