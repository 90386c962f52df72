"""Shared pieces of the hardening campaigns: the real seeds, example roots, the CLI runner,
link-set snapshots and the hook wrapper."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))  # dbus_bus: the private bus of the daemon's tests

OLD = "6.1.0-47-cloud-amd64"
NEW = "6.1.0-56-cloud-amd64"
HOOKS = {
    "postinst": REPO / "etc/kernel/postinst.d/weak-bpf-progs",
    "prerm": REPO / "etc/kernel/prerm.d/weak-bpf-progs",
    "kernel-install": REPO / "usr/lib/kernel/install.d/60-weak-bpf-progs.install",
}


@dataclasses.dataclass
class Figure:
    """One printed figure: its value, its bound, and whether it holds."""

    campaign: str
    name: str
    value: object
    bound: str
    ok: bool

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"[{mark}] {self.campaign}: {self.name} = {self.value}  (bound: {self.bound})"


def debian_kernels() -> dict[str, Path]:
    """{kver: unpacked dir} of the two real Debian kernels (downloaded once, then cached)."""
    proc = subprocess.run(
        [str(REPO / "scripts/fetch-debian-kernels")], capture_output=True, text=True, check=True
    )
    kernels = {}
    for line in proc.stdout.splitlines():
        kver, path = line.split("\t")
        kernels[kver] = Path(path)
    return kernels


def env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: this checkout first on PYTHONPATH, no fault. (No journal:
    every run passes --no-journal, the hooks through wrapper_bin.)"""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WEAK_BPF_")}
    base["PYTHONPATH"] = str(REPO)
    base["PYTHONIOENCODING"] = "utf-8:strict"  # stdio as under en_US.UTF-8 on Fedora and RHEL
    base.update(extra)
    return base


def cli(
    root: Path, *args: str, stdin: str = "", fault: int = 0, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "weak_bpf", "--root", str(root), "--no-journal", *args],
        input=stdin,
        cwd=REPO,
        env=env(WEAK_BPF_FAULT_STEP=str(fault)),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def clone(src: Path, dst: Path) -> Path:
    import exampleroot

    if dst.exists():
        shutil.rmtree(dst)
    return exampleroot.copy_root(src, dst)


def example_root(work: Path) -> Path:
    """An example root (two real kernels, the example programs) with both kernels' links made
    and the warm cache: built once per work directory."""
    root = work / "base-root"
    done = work / "base-root.done"
    if done.exists():
        return root
    import exampleroot

    exampleroot.build_example_root(root, debian_kernels())
    for kver in (OLD, NEW):
        proc = cli(root, "add-kernel", kver)
        if proc.returncode != 0:
            raise RuntimeError(f"add-kernel {kver} on the example root: {proc.stderr}")
    done.write_text("")
    return root


def link_sets(root: Path) -> dict[str, dict[str, str] | None]:
    """Every kernel's managed links (None when the set cannot be read)."""
    from weak_bpf.apply.writer import current_links
    from weak_bpf.errors import WeakBpfError

    sets: dict[str, dict[str, str] | None] = {}
    for kver in (OLD, NEW):
        try:
            sets[kver] = current_links(root, kver)
        except (WeakBpfError, OSError):
            sets[kver] = None
    return sets


def wrapper_bin(work: Path) -> Path:
    """A directory holding a `weak-bpf-progs` that runs this checkout, for the hooks' PATH;
    with --no-journal, so that nothing reaches the host's journal."""
    bindir = work / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / "weak-bpf-progs"
    text = f'#!/bin/sh\nPYTHONPATH={REPO} exec {PYTHON} -m weak_bpf --no-journal "$@"\n'
    if not script.exists() or script.read_text(encoding="utf-8") != text:
        # written aside and renamed: concurrent hooks may be running the old one (ETXTBSY)
        tmp = bindir / f".weak-bpf-progs.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o755)
        os.replace(tmp, script)
    return bindir


def run_hook(
    hook: str, root: Path, args: list[str], work: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    bindir = wrapper_bin(work)
    environment = env(WEAK_BPF_ROOT=str(root), **extra)
    environment["PATH"] = f"{bindir}:{environment.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run(
        [str(HOOKS[hook]), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class Daemon:
    """weak-bpf-progsd on `root`, on a private system-like bus (tests/dbus_bus.py), called with
    busctl as root."""

    def __init__(self, root: Path, work: Path) -> None:
        import dbus_bus

        self._bus_module = dbus_bus
        self.directory = work / f"bus-{root.name}"
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.bus = dbus_bus.PrivateBus(self.directory)
        self.bus.start()
        self.process = dbus_bus.start_daemon(
            self.bus, root, ["--idle-timeout", "0"], log=self.directory / "daemon.log"
        )

    def call(self, method: str, kver: str) -> subprocess.CompletedProcess[str]:
        """AddKernel or RemoveKernel; busctl exits non-zero with the D-Bus error on stderr."""
        from weak_bpf.daemon.service import BUS_NAME, INTERFACE, OBJECT_PATH

        return subprocess.run(
            ["busctl", f"--address={self.bus.address}", "--timeout=180", "call", BUS_NAME,
             OBJECT_PATH, INTERFACE, method, "sb", kver, "false"],
            capture_output=True, text=True, timeout=200, check=False,
        )  # fmt: skip

    def log(self) -> str:
        return (self.directory / "daemon.log").read_text(errors="replace")

    def stop(self) -> None:
        self._bus_module.stop(self.process)
        self.bus.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self.start
