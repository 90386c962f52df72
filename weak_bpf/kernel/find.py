"""Find installed kernels and their artifacts under a root (SPEC §2). Reads; never writes.

Every path is looked up below `root`, as in a chroot: an absolute symlink target is taken relative
to the root, and a link whose target climbs above the root (through "..") counts as absent.
Returned paths are resolved, absolute paths inside the root.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from weak_bpf.errors import KernelNotFound
from weak_bpf.files.paths import module_dirs, resolve_in_root
from weak_bpf.versions import kernel_sort_key

SYSFS_BTF = "sys/kernel/btf/vmlinux"
SYMVERS_SUFFIXES = (".gz", ".xz", ".zst", "")
BOOT_SYMVERS_SUFFIXES = (".gz", ".xz", "")
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
RELEASE_HINT = (
    "give a release as 'uname -r' prints it, e.g. 5.14.0-503.el9.x86_64; 'weak-bpf-progs "
    "kernels' lists the installed ones"
)
# kver suffixes (RHEL ".x86_64", Debian "-amd64") to the RPM architecture of kABI list names
_ARCH_ALIASES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "ppc64le": "ppc64le",
    "ppc64el": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def module_name(file_or_name: str | Path) -> str:
    """nf_conntrack.ko.xz -> nf_conntrack; dashes and underscores are the same to the kernel."""
    name = Path(file_or_name).name
    bare = next((name[: -len(s)] for s in MODULE_SUFFIXES if name.endswith(s)), name)
    return bare.replace("-", "_")


class BtfSourceKind(str, enum.Enum):
    """Where a kernel's BTF comes from, best first."""

    SYSFS = "sysfs"  # sys/kernel/btf/vmlinux: raw BTF of the running kernel
    VMLINUX = "vmlinux"  # a vmlinux file: an ELF with a .BTF section, or raw BTF
    DEBUGINFO = "debuginfo"  # the vmlinux ELF of a debuginfo package (-dbg, kernel-debuginfo)
    VMLINUZ = "vmlinuz"  # the vmlinux inside the compressed image


@dataclasses.dataclass(frozen=True)
class KernelArtifacts:
    """What was found for one kernel; None (or empty) where nothing was."""

    kver: str
    root: Path
    symvers: Path | None
    image: Path | None
    system_map: Path | None
    config: Path | None
    btf: Path | None
    btf_source_kind: BtfSourceKind | None
    modules: tuple[Path, ...]
    modules_dep: Path | None
    kabi_list: Path | None
    arch: str | None
    # where else K's symbols may be listed, best first: the real System.map of a debuginfo
    # package, then vmlinux ELFs (their .symtab); used when `system_map` is missing or a stub
    symbol_files: tuple[Path, ...] = ()
    running: bool = False  # K is the kernel this system runs: sysfs and kallsyms describe it
    installed: bool = True  # K has a modules directory or an image under the root
    kallsyms: Path | None = None  # the running kernel's proc/kallsyms

    def relative(self, path: Path | None) -> str | None:
        """`path` as shown to users: relative to the root."""
        return None if path is None else str(path.relative_to(self.root))


def _file(root: Path, relative: str) -> Path | None:
    return _found(root, relative, Path.is_file)


def _dir(root: Path, relative: str) -> Path | None:
    return _found(root, relative, Path.is_dir)


def _found(root: Path, relative: str, kind: Callable[[Path], bool]) -> Path | None:
    """root/relative, resolved inside the root, if it is of `kind`: every lookup goes here."""
    path = resolve_in_root(root, relative)
    return path if path is not None and kind(path) else None


def _module_trees(root: Path, kver: str | None = None) -> list[str]:
    """The module directories of the root (files/paths.py), or K's directory in each."""
    return [m if kver is None else f"{m}/{kver}" for m in module_dirs(root)]


def _first_file(root: Path, candidates: Iterable[str]) -> Path | None:
    for relative in candidates:
        found = _file(root, relative)
        if found is not None:
            return found
    return None


def _absolute(root: Path) -> Path:
    return Path(os.path.abspath(root))


def running_release() -> str:
    """The release of the kernel this process runs on (`uname -r`)."""
    return os.uname().release


def is_installed(root: Path, kver: str) -> bool:
    """Whether K has a modules directory with an image, symvers or modules.dep, or a
    boot/vmlinuz-K (SPEC §2)."""
    root = _absolute(root)
    for base in _module_trees(root, kver):
        if _dir(root, base) is None:
            continue
        names = ["vmlinuz", "modules.dep"] + [f"symvers{s}" for s in SYMVERS_SUFFIXES]
        if _first_file(root, (f"{base}/{n}" for n in names)) is not None:
            return True
    return _file(root, f"boot/vmlinuz-{kver}") is not None


def installed_kernels(root: Path) -> tuple[str, ...]:
    """Installed kernel releases under `root`, oldest first (rpm's ordering)."""
    root = _absolute(root)
    candidates: set[str] = set()
    for modules in _module_trees(root):
        directory = _dir(root, modules)
        if directory is not None:
            candidates.update(p.name for p in directory.iterdir())
    boot = _dir(root, "boot")
    if boot is not None:
        names = (p.name[len("vmlinuz-") :] for p in boot.glob("vmlinuz-?*"))
        # Fedora's dracut rescue image (vmlinuz-0-rescue-<machine-id>) is not a kernel release
        candidates.update(n for n in names if not n.startswith("0-rescue-"))
    found = [k for k in candidates if "/" not in k and is_installed(root, k)]
    return tuple(sorted(found, key=kernel_sort_key))


def find_kernel(
    root: Path, kver: str, *, running: str | None = None, require: bool = True
) -> KernelArtifacts:
    """Everything found for `kver`. `running` is the running kernel's release (None: ask uname;
    "" for none), which alone may use sys/kernel/btf/vmlinux. Raises KernelNotFound if `kver` is
    not installed and `require` is true."""
    root = _absolute(root)
    if "/" in kver or kver in ("", ".", ".."):
        raise KernelNotFound(f"not a kernel release: {kver!r}", hint=RELEASE_HINT)
    installed = is_installed(root, kver)
    is_running = kver == running_kernel(root, running=running)
    if require and not (installed or is_running):
        raise KernelNotFound(
            f"kernel {kver} is not installed under {root}",
            hint="'weak-bpf-progs kernels' lists the installed ones",
        )
    trees = _module_trees(root, kver)
    symvers = _first_file(
        root,
        [f"{t}/symvers{s}" for t in trees for s in SYMVERS_SUFFIXES]
        + [f"boot/symvers-{kver}{s}" for s in BOOT_SYMVERS_SUFFIXES]
        + [
            f"usr/src/kernels/{kver}/Module.symvers",
            f"usr/src/linux-headers-{kver}/Module.symvers",
        ],
    )

    def per_kernel(name: str) -> Path | None:
        return _first_file(root, [f"{t}/{name}" for t in trees] + [f"boot/{name}-{kver}"])

    image = per_kernel("vmlinuz")
    # the running kernel's own config, when CONFIG_IKCONFIG_PROC put it there
    config = per_kernel("config") or (_file(root, "proc/config.gz") if is_running else None)
    vmlinux_files = _vmlinux_files(root, kver, trees)
    btf, btf_kind = _find_btf(root, is_running, vmlinux_files, image)
    arch = arch_of(kver) or _arch_from_config(config)
    kabi = None
    if arch is not None:
        kabi = _first_file(
            root,
            [
                f"usr/lib/modules/kabi-current/kabi_stablelist_{arch}",
                f"usr/lib/modules/kabi-current/kabi_whitelist_{arch}",
            ],
        )
    return KernelArtifacts(
        kver=kver,
        root=root,
        symvers=symvers,
        image=image,
        system_map=per_kernel("System.map"),
        config=config,
        btf=btf,
        btf_source_kind=btf_kind,
        modules=tuple(_modules(root, trees)),
        modules_dep=_first_file(root, [f"{t}/modules.dep" for t in trees]),
        kabi_list=kabi,
        arch=arch,
        symbol_files=_symbol_files(root, kver, vmlinux_files),
        running=is_running,
        installed=installed,
        kallsyms=_file(root, "proc/kallsyms") if is_running else None,
    )


def find_kernels(root: Path, *, running: str | None = None) -> tuple[KernelArtifacts, ...]:
    """find_kernel for every kernel that can be judged, oldest first."""
    return tuple(
        find_kernel(root, k, running=running, require=False)
        for k in judged_kernels(root, running=running)
    )


def judged_kernels(root: Path, *, running: str | None = None) -> tuple[str, ...]:
    """The installed kernels, and the running kernel when the root shows it (its sysfs BTF),
    installed or not: a container or a microVM runs a kernel it does not have. Oldest first."""
    root = _absolute(root)
    found = set(installed_kernels(root))
    release = running_kernel(root, running=running)
    if release is not None:
        found.add(release)
    return tuple(sorted(found, key=kernel_sort_key))


def running_kernel(root: Path, *, running: str | None = None) -> str | None:
    """The release of the running kernel (`running`; None: ask uname, "" for none) when the root
    shows it, by its sysfs BTF (the root is this system, or has /sys bound in); else None."""
    release = running_release() if running is None else running
    if not release or "/" in release or _file(_absolute(root), SYSFS_BTF) is None:
        return None
    return release


def _vmlinux_files(root: Path, kver: str, trees: list[str]) -> list[tuple[Path, BtfSourceKind]]:
    """The vmlinux files of K, best first: next to its modules or in boot/, then debuginfo."""
    plain = [f"{t}/vmlinux" for t in trees] + [f"boot/vmlinux-{kver}"]
    debug = [f"usr/lib/debug/{t.removeprefix('usr/')}/vmlinux" for t in trees]
    debug += [f"usr/lib/debug/boot/vmlinux-{kver}"]
    found: list[tuple[Path, BtfSourceKind]] = []
    for candidates, kind in ((plain, BtfSourceKind.VMLINUX), (debug, BtfSourceKind.DEBUGINFO)):
        for relative in dict.fromkeys(candidates):
            path = _file(root, relative)
            if path is not None and all(path != p for p, _ in found):
                found.append((path, kind))
    return found


def _symbol_files(
    root: Path, kver: str, vmlinux_files: list[tuple[Path, BtfSourceKind]]
) -> tuple[Path, ...]:
    debug_map = _file(root, f"usr/lib/debug/boot/System.map-{kver}")  # Debian's -dbg
    return tuple([debug_map] if debug_map else []) + tuple(p for p, _ in vmlinux_files)


def _find_btf(
    root: Path,
    running: bool,
    vmlinux_files: list[tuple[Path, BtfSourceKind]],
    image: Path | None,
) -> tuple[Path | None, BtfSourceKind | None]:
    if running:
        return _file(root, SYSFS_BTF), BtfSourceKind.SYSFS
    if vmlinux_files:
        return vmlinux_files[0]
    if image is not None:
        return image, BtfSourceKind.VMLINUZ
    return None, None


def _modules(root: Path, trees: list[str]) -> Iterator[Path]:
    """Module files under K/kernel/, sorted; symlinks only when they stay inside the root."""
    seen: set[Path] = set()
    for tree in trees:
        relative_top = f"{tree}/kernel"
        top = _dir(root, relative_top)
        if top is None:
            continue
        found = []
        pending = [str(top)]
        while pending:  # does not descend into linked directories
            directory = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                if not entry.name.endswith(MODULE_SUFFIXES):
                    continue
                path = Path(entry.path)
                if entry.is_symlink():
                    inside = _file(root, str(path.relative_to(root)))
                    if inside is None:
                        continue
                    path = inside
                if path not in seen:
                    seen.add(path)
                    found.append(path)
        yield from sorted(found)


def arch_of(kver: str) -> str | None:
    """The RPM architecture named in a kernel release ("...el9.x86_64+rt", "...-cloud-amd64")."""
    for token in reversed(re.split(r"[.+-]", kver)):
        if token in _ARCH_ALIASES:
            return _ARCH_ALIASES[token]
    return None


def _arch_from_config(config: Path | None) -> str | None:
    """The architecture from a config's CONFIG_<ARCH> options, when the release is silent."""
    if config is None:
        return None
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    options = {line.strip() for line in text.splitlines() if line.endswith("=y")}
    if "CONFIG_X86_64=y" in options:
        return "x86_64"
    if "CONFIG_ARM64=y" in options:
        return "aarch64"
    if "CONFIG_PPC64=y" in options:
        return "ppc64le" if "CONFIG_CPU_LITTLE_ENDIAN=y" in options else "ppc64"
    if "CONFIG_S390=y" in options:
        return "s390x"
    if "CONFIG_RISCV=y" in options and "CONFIG_64BIT=y" in options:
        return "riscv64"
    return None
