"""Load BPF objects for real on another kernel, booted under qemu (TCG, no KVM needed).

The running kernel refuses some program types by host policy (fentry, fexit and lsm get EPERM here),
and a verdict about a Debian kernel is best checked on that kernel. load_on_kernel() boots the
kernel's vmlinuz once with a small initramfs that holds busybox (static), the host's bpftool and the
libraries it links, the objects and the kernel modules they need. Its /init runs
`bpftool prog loadall` on each object and prints the outcome between marker lines on the serial
console, which qemu writes to its stdout:

    @@MODULE <module> rc=<N>        then the base64 of insmod's output, then @@END
    @@RESULT <object> rc=<N>        then the base64 of the tail of bpftool's output, then @@END
    @@KPROBE k<i> rc=<N>            then the base64 of the error, then @@END: whether a kprobe
                                    can be placed on the i-th symbol asked for (kprobe_events)
    @@DONE

Results are cached by the content of everything that goes into the boot, so reruns are instant.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from weak_bpf.parsers.kmod import read_kernel_object

CACHE_DIR = Path(tempfile.gettempdir()) / f"weak-bpf-progs-qemuload-{os.getuid()}"
LOG_LINES = 300  # how much of bpftool's output is kept: the verifier's verdict is at the end
CACHE_FORMAT = b"qemuload 1"

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # object names go into paths and the script
_BASE64_LINE = re.compile(r"^[A-Za-z0-9+/=]+$")
_MARKER = re.compile(r"@@(MODULE|RESULT|KPROBE) (\S+) rc=(\d+)$")  # after any escape codes


def busybox() -> Path | None:
    """The host's busybox: Debian's busybox-static puts it in /bin, Fedora's busybox in /sbin."""
    found = shutil.which("busybox") or shutil.which("busybox", path="/bin:/usr/sbin:/sbin")
    return Path(found) if found else None


class QemuLoadError(RuntimeError):
    """The guest did not boot, did not finish, or could not set itself up."""


@dataclasses.dataclass(frozen=True)
class LoadResult:
    name: str
    loaded: bool
    rc: int  # bpftool's exit status
    log: str  # the tail of bpftool's stdout and stderr: libbpf's messages and the verifier log


@dataclasses.dataclass(frozen=True)
class BootReport:
    """What one boot printed: results per object and insmod outcomes per module."""

    results: tuple[LoadResult, ...]
    modules: tuple[tuple[str, int, str], ...]  # (module, insmod rc, insmod output)
    seconds: float  # wall time of the boot; 0 when served from the cache
    kprobes: tuple[tuple[str, bool], ...] = ()  # (symbol, a kprobe could be placed there)


def load_on_kernel(
    vmlinuz: Path,
    modules_dir: Path | None,
    objects: dict[str, Path],
    *,
    modules_to_load: Sequence[str] = ("nf_conntrack",),
    timeout: float = 180.0,
) -> dict[str, LoadResult]:
    """Boot `vmlinuz` once and `bpftool prog loadall` every object in it: {name: LoadResult}.

    `modules_dir` is the kernel's lib/modules/<kver> directory; `modules_to_load` are insmod-ed
    with their dependencies (from each .ko's modinfo `depends=`) before any object is loaded.
    With no `modules_dir`, no module is loaded. Raises QemuLoadError when the boot fails.
    """
    report = boot_and_load(
        vmlinuz, modules_dir, objects, modules_to_load=modules_to_load, timeout=timeout
    )
    return {result.name: result for result in report.results}


def boot_and_load(
    vmlinuz: Path,
    modules_dir: Path | None,
    objects: dict[str, Path],
    *,
    modules_to_load: Sequence[str] = ("nf_conntrack",),
    timeout: float = 180.0,
    kprobes: Sequence[str] = (),
) -> BootReport:
    """load_on_kernel(), with the insmod outcomes and the boot time; `kprobes`: symbols to try a
    kprobe on (through tracefs' kprobe_events, the kernel's own check of an attach point)."""
    for name in objects:
        if not _NAME.match(name):
            raise ValueError(f"object name {name!r} is not a plain file name")
    modules = module_files(modules_dir, modules_to_load) if modules_dir is not None else []
    script = init_script(list(objects), [m for m, _ in modules], kprobes)
    files = _initramfs_files(objects, modules, script, kernel_config(vmlinuz))
    key = _cache_key(vmlinuz, files)
    cached = _cache_read(key)
    if cached is not None:
        return cached
    initrd = gzip.compress(cpio_newc(files), compresslevel=1, mtime=0)
    with tempfile.TemporaryDirectory(prefix="qemuload-") as tmp:
        initrd_path = Path(tmp) / "initrd.gz"
        initrd_path.write_bytes(initrd)
        started = time.monotonic()
        console = _boot(vmlinuz, initrd_path, timeout)
        seconds = time.monotonic() - started
    report = parse_console(console, list(objects), [m for m, _ in modules], seconds, kprobes)
    _cache_write(key, report)
    return report


# --- what goes into the initramfs -------------------------------------------------------------


def module_files(modules_dir: Path, wanted: Iterable[str]) -> list[tuple[str, Path]]:
    """[(module name, .ko)] for `wanted` and their dependencies, dependencies first."""
    index = {_module_name(ko.name): ko for ko in sorted((modules_dir / "kernel").rglob("*.ko"))}
    ordered: list[tuple[str, Path]] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        name = _module_name(name)
        if name in visiting or any(done == name for done, _ in ordered):
            return  # a cycle cannot load anyway; insmod will say so
        ko = index.get(name)
        if ko is None:
            raise QemuLoadError(f"module {name} not found under {modules_dir}/kernel")
        visiting.add(name)
        depends = read_kernel_object(ko.read_bytes(), str(ko)).modinfo_value("depends") or ""
        for dep in filter(None, depends.split(",")):
            visit(dep)
        ordered.append((name, ko))

    for name in wanted:
        visit(name)
    return ordered


def _module_name(file_or_name: str) -> str:
    """nf_conntrack.ko -> nf_conntrack; dashes and underscores are the same to the kernel."""
    stem = file_or_name[: -len(".ko")] if file_or_name.endswith(".ko") else file_or_name
    return stem.replace("-", "_")


def init_script(objects: Sequence[str], modules: Sequence[str], kprobes: Sequence[str] = ()) -> str:
    """The guest's /init: set up, insmod, load each object, report, power off."""
    lines = [
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "export PATH=/bin:/usr/sbin",
        "mount -t proc proc /proc",
        "mount -t sysfs sysfs /sys",
        "mount -t devtmpfs devtmpfs /dev",
        "mount -t bpf bpf /sys/fs/bpf",
        "mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null",
        "mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null",
        'report() { echo "@@$1 $2 rc=$3"; tail -n ' + str(LOG_LINES) + ' "$4" | base64; '
        'echo "@@END $2"; }',
    ]
    for module in modules:
        lines.append(f"insmod /modules/{module}.ko >/tmp/{module}.insmod 2>&1")
        lines.append(f"report MODULE {module} $? /tmp/{module}.insmod")
    for name in objects:
        lines.append(
            f"bpftool prog loadall /objects/{name}.o /sys/fs/bpf/{name} >/tmp/{name}.log 2>&1"
        )
        lines.append(f"report RESULT {name} $? /tmp/{name}.log")
        lines.append(f"rm -rf /sys/fs/bpf/{name}")
    for i, symbol in enumerate(kprobes):
        if not _NAME.match(symbol):
            raise ValueError(f"symbol {symbol!r} is not a plain name")
        events = "/sys/kernel/tracing/kprobe_events"
        lines.append(f"echo 'p:wbp/k{i} {symbol}' >> {events} 2>/tmp/k{i}.log")
        lines.append(f"report KPROBE k{i} $? /tmp/k{i}.log")
    lines += ["echo @@DONE", "poweroff -f", ""]
    return "\n".join(lines)


def shared_objects(binary: Path) -> list[Path]:
    """The libraries `binary` links and the dynamic loader, as ldd lists them."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return []
        raise QemuLoadError(f"ldd {binary} failed: {proc.stderr.strip()}")
    paths = []
    for line in proc.stdout.splitlines():
        found = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if found:
            paths.append(Path(found.group(1)))
    return paths


# A cpio entry: (path in the archive, mode with its file type bits, content, rdev major:minor).
CpioEntry = tuple[str, int, bytes, tuple[int, int]]


def kernel_config(vmlinuz: Path) -> tuple[str, Path] | None:
    """(path in the guest, host file) of the config next to boot/vmlinuz-K, as on a real system.

    libbpf reads /boot/config-$(uname -r) to resolve `__kconfig` externs; without it, such
    objects fail to open (Debian kernels have no /proc/config.gz).
    """
    if not vmlinuz.name.startswith("vmlinuz-"):
        return None
    kver = vmlinuz.name[len("vmlinuz-") :]
    config = vmlinuz.with_name(f"config-{kver}")
    return (f"boot/config-{kver}", config) if config.exists() else None


def _initramfs_files(
    objects: dict[str, Path],
    modules: list[tuple[str, Path]],
    script: str,
    config: tuple[str, Path] | None,
) -> list[CpioEntry]:
    bpftool = shutil.which("bpftool") or shutil.which("bpftool", path="/usr/sbin:/sbin")
    if bpftool is None:
        raise QemuLoadError("bpftool is not installed")
    box = busybox()
    if box is None:
        raise QemuLoadError("busybox is missing (Debian: busybox-static)")
    files: dict[str, tuple[int, bytes]] = {
        "init": (0o755, script.encode()),
        "bin/busybox": (0o755, box.read_bytes()),
        "usr/sbin/bpftool": (0o755, Path(bpftool).read_bytes()),
    }
    for lib in shared_objects(Path(bpftool)) + shared_objects(box):  # none for a static busybox
        files[str(lib).lstrip("/")] = (0o755, lib.read_bytes())  # read_bytes follows symlinks
    for name, obj in objects.items():
        files[f"objects/{name}.o"] = (0o644, obj.read_bytes())
    for module, ko in modules:
        files[f"modules/{module}.ko"] = (0o644, ko.read_bytes())
    if config is not None:
        files[config[0]] = (0o644, config[1].read_bytes())

    dirs = {"proc", "sys", "dev", "tmp", "usr/sbin", "bin"}
    for member in files:
        parent = Path(member).parent
        while str(parent) != ".":
            dirs.add(str(parent))
            parent = parent.parent
    entries: list[CpioEntry] = []
    # parents sort before their children; the kernel needs /dev/console before /init runs
    for directory in sorted(dirs):
        entries.append((directory, stat.S_IFDIR | 0o755, b"", (0, 0)))
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    for member, (mode, data) in sorted(files.items()):
        entries.append((member, stat.S_IFREG | mode, data, (0, 0)))
    return entries


def cpio_newc(entries: Sequence[CpioEntry]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks, owned by root, mtime 0."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, rdev: tuple[int, int], ino: int) -> None:
        name_bytes = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_bytes), 0)
        out.extend(b"070701" + b"".join(b"%08X" % field for field in fields))
        out.extend(name_bytes)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        add(name, mode, data, rdev, ino)
    add("TRAILER!!!", 0, b"", (0, 0), 0)
    return bytes(out)


# --- the boot ---------------------------------------------------------------------------------


def qemu_command(vmlinuz: Path, initrd: Path) -> list[str]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise QemuLoadError("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")
    return [
        qemu,
        "-kernel", str(vmlinuz),
        "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 quiet",
        "-nographic", "-no-reboot",
        "-m", "1024", "-smp", "1",
        "-accel", "tcg",
        "-nic", "none",  # no network, so no iPXE option ROM to wait for
    ]  # fmt: skip


def _boot(vmlinuz: Path, initrd: Path, timeout: float) -> str:
    """Run the guest to its end; its serial console output."""
    proc = subprocess.Popen(
        qemu_command(vmlinuz, initrd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise QemuLoadError(
            f"the guest did not finish within {timeout:.0f} s; console tail:\n"
            + _tail(output.decode(errors="replace"))
        ) from None
    return output.decode(errors="replace")


def parse_console(
    console: str,
    objects: Sequence[str],
    modules: Sequence[str],
    seconds: float,
    kprobes: Sequence[str] = (),
) -> BootReport:
    """The markers of init_script() in the console output, checked to be complete."""
    blocks: dict[tuple[str, str], tuple[int, str]] = {}
    current: tuple[str, str, int] | None = None
    chunks: list[str] = []
    done = False
    for raw in console.splitlines():
        line = raw.strip("\r\n ")
        marker = _MARKER.search(line)
        if marker:
            current = (marker.group(1), marker.group(2), int(marker.group(3)))
            chunks = []
        elif current is not None and line.endswith(f"@@END {current[1]}"):
            blocks[(current[0], current[1])] = (current[2], _decode("".join(chunks)))
            current = None
        elif current is not None and _BASE64_LINE.match(line):
            chunks.append(line)  # anything else is a kernel message in between
        elif line.endswith("@@DONE"):
            done = True
    missing = [n for n in objects if ("RESULT", n) not in blocks]
    missing += [m for m in modules if ("MODULE", m) not in blocks]
    missing += [s for i, s in enumerate(kprobes) if ("KPROBE", f"k{i}") not in blocks]
    if missing or not done:
        raise QemuLoadError(
            f"the guest did not report {', '.join(missing) or '@@DONE'}; console tail:\n"
            + _tail(console)
        )
    failed = [(m, blocks[("MODULE", m)]) for m in modules if blocks[("MODULE", m)][0] != 0]
    if failed:
        module, (rc, log) = failed[0]
        raise QemuLoadError(f"insmod {module} failed with {rc}: {log.strip()}")
    results = tuple(
        LoadResult(name, blocks[("RESULT", name)][0] == 0, *blocks[("RESULT", name)])
        for name in objects
    )
    module_info = tuple((m, *blocks[("MODULE", m)]) for m in modules)
    placed = tuple((s, blocks[("KPROBE", f"k{i}")][0] == 0) for i, s in enumerate(kprobes))
    return BootReport(results, module_info, seconds, placed)


def _decode(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode(errors="replace")
    except (binascii.Error, ValueError):
        return "(log garbled on the console)\n"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --- the cache --------------------------------------------------------------------------------


def _cache_key(vmlinuz: Path, files: Sequence[CpioEntry]) -> str:
    h = hashlib.sha256(CACHE_FORMAT)
    for part in [vmlinuz.read_bytes(), *(p.encode() + b"\0" + d for p, _, d, _ in files)]:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:24]


def _cache_read(key: str) -> BootReport | None:
    path = CACHE_DIR / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        return BootReport(
            tuple(LoadResult(**r) for r in data["results"]),
            tuple((m, rc, log) for m, rc, log in data["modules"]),
            0.0,
            tuple((s, bool(ok)) for s, ok in data.get("kprobes", [])),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cache_write(key: str, report: BootReport) -> None:
    data = {
        "results": [dataclasses.asdict(r) for r in report.results],
        "modules": [list(m) for m in report.modules],
        "kprobes": [list(k) for k in report.kprobes],
        "seconds": report.seconds,
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = CACHE_DIR / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, CACHE_DIR / f"{key}.json")
