"""Real loads with bpftool on another kernel, booted under qemu: the tests' yardstick.

A thin wrapper of the product's VM (weak_bpf.verify: initramfs, guest script, qemu), that loads
each object whole with `bpftool prog loadall`, as an administrator would, rather than with the
product's own per-program loader: the tests compare `verify` with these independent loads.
Results are cached by the content of everything that goes into the boot, so reruns are instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from weak_bpf.verify import guest, initramfs, run_guest
from weak_bpf.verify.guest import GuestError, GuestReport
from weak_bpf.verify.tools import MissingTool, find_busybox, find_qemu

CACHE_DIR = Path(tempfile.gettempdir()) / f"weak-bpf-progs-qemuload-{os.getuid()}"
CACHE_FORMAT = b"qemuload 3"
LOG_LINES = 300  # bpftool's output kept: the verifier's verdict is at the end

QemuLoadError = GuestError


def busybox() -> Path | None:
    try:
        return find_busybox()
    except MissingTool:
        return None


@dataclasses.dataclass(frozen=True)
class LoadResult:
    name: str
    loaded: bool
    rc: int  # bpftool's exit status
    log: str  # the tail of bpftool's output: libbpf's messages and the verifier log


@dataclasses.dataclass(frozen=True)
class BootReport:
    results: tuple[LoadResult, ...]
    modules: tuple[tuple[str, int, str], ...]  # (module, insmod rc, insmod output)
    seconds: float  # 0 when served from the cache
    kprobes: tuple[tuple[str, bool], ...] = ()


def module_files(modules_dir: Path, wanted: Sequence[str]) -> list[tuple[str, Path]]:
    """[(module, .ko)] for `wanted` and their dependencies, dependencies first (modules.dep)."""
    dep = modules_dir / "modules.dep"
    kos = sorted((modules_dir / "kernel").rglob("*.ko*"))
    return initramfs.module_order(kos, dep if dep.exists() else None, wanted)


def load_on_kernel(
    vmlinuz: Path,
    modules_dir: Path | None,
    objects: dict[str, Path],
    *,
    modules_to_load: Sequence[str] = ("nf_conntrack",),
    timeout: float = 180.0,
) -> dict[str, LoadResult]:
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
    """Boot `vmlinuz` once and `bpftool prog loadall` every object; insmod `modules_to_load`
    (with their dependencies) first; try a kprobe on each of `kprobes`."""
    bpftool = shutil.which("bpftool") or shutil.which("bpftool", path="/usr/sbin:/sbin")
    if bpftool is None:
        raise GuestError("bpftool is not installed")
    modules = module_files(modules_dir, modules_to_load) if modules_dir is not None else []
    runs = [
        (
            name,
            f"bpftool prog loadall /objects/{name}.o /sys/fs/bpf/{name}; "
            f"rc=$?; rm -rf /sys/fs/bpf/{name}; (exit $rc)",
        )
        for name in objects
    ]
    # a kprobe placed through tracefs, apart from any BPF program
    events = "/sys/kernel/tracing/kprobe_events"
    runs += [(f"k{i}", f"echo 'p:wbp/k{i} {s}' >> {events}") for i, s in enumerate(kprobes)]
    config = vmlinuz.with_name(vmlinuz.name.replace("vmlinuz-", "config-", 1))
    data = {name: path.read_bytes() for name, path in objects.items()}
    files = [vmlinuz, Path(bpftool), *(ko for _, ko in modules)]
    key = _cache_key(files, data, [runs, list(kprobes), [m for m, _ in modules]])
    cached = _cache_read(key)
    if cached is not None:
        return cached
    report, seconds, _ = run_guest(
        find_qemu(),
        vmlinuz,
        programs={"bin/busybox": find_busybox(), "usr/sbin/bpftool": Path(bpftool)},
        runs=runs,
        objects=data,
        modules=modules,
        config=config if config.exists() else None,
        timeout=timeout,
        kvm=False,  # the yardstick stays on TCG, as it always was
    )
    result = _report(report, list(objects), seconds, kprobes)
    _cache_write(key, result)
    return result


def _report(
    report: GuestReport, names: list[str], seconds: float, kprobes: Sequence[str]
) -> BootReport:
    failed = [(m, rc, out) for m, rc, out in report.modules if rc != 0]
    if failed:
        raise GuestError(f"insmod {failed[0][0]} failed with {failed[0][1]}: {failed[0][2]}")
    results = tuple(
        LoadResult(n, report.results[n][0] == 0, report.results[n][0], _tail(report.results[n][1]))
        for n in names
    )
    placed = tuple((s, report.results[f"k{i}"][0] == 0) for i, s in enumerate(kprobes))
    return BootReport(results, report.modules, seconds, placed)


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-LOG_LINES:])


parse_console = guest.parse_console
cpio_newc = initramfs.cpio_newc


def _cache_key(files: list[Path], objects: dict[str, bytes], words: object) -> str:
    h = hashlib.sha256(CACHE_FORMAT)
    parts = [f.read_bytes() for f in files]
    parts += [n.encode() + b"\0" + d for n, d in sorted(objects.items())]
    for part in [*parts, json.dumps(words).encode()]:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:24]


def _cache_read(key: str) -> BootReport | None:
    try:
        data = json.loads((CACHE_DIR / f"{key}.json").read_text())
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
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = CACHE_DIR / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, CACHE_DIR / f"{key}.json")
