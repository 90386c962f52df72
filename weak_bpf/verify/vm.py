"""One throwaway VM: qemu boots a kernel image with an initramfs, no disk and no network, and its
serial console comes back as text.

No VM outlives its run: qemu is killed at the time limit, on any exception (Ctrl-C included),
and by the kernel when this process dies (PR_SET_PDEATHSIG), so a killed weak-bpf-progs leaves no
qemu behind. The initrd is an anonymous memory file handed to qemu: nothing is written to disk,
so nothing is left there whatever ends the run.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

from weak_bpf.verify.guest import GuestError, tail

_PR_SET_PDEATHSIG = 1


def kvm_usable() -> bool:
    """/dev/kvm can be opened for reading and writing (qemu also falls back to TCG itself)."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def qemu_command(
    qemu: Path, image: Path, initrd: str, *, kvm: bool, memory: int = 1024
) -> list[str]:
    # TCG's default CPU (qemu64) lacks what distribution kernels need (RHEL 9: x86-64-v2)
    accel = ["-accel", "kvm", "-cpu", "host"] if kvm else ["-accel", "tcg", "-cpu", "max"]
    return [
        str(qemu),
        "-kernel", str(image),
        "-initrd", initrd,
        "-append", "console=ttyS0 panic=-1 quiet loglevel=1",
        "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-m", str(memory), "-smp", "1",
        *accel,
    ]  # fmt: skip


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills qemu when its parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def boot(qemu: Path, image: Path, initrd: bytes, *, timeout: float, kvm: bool) -> tuple[str, float]:
    """Run the guest to its end: (its console output, seconds). Raises GuestError at the time
    limit, with the console's tail, and QemuFailed when qemu itself fails."""
    fd = os.memfd_create("weak-bpf-progs-initrd", 0)  # inherited by qemu, never on disk
    try:
        with open(fd, "wb", closefd=False) as memory:
            memory.write(initrd)
        started = time.monotonic()
        proc = subprocess.Popen(
            qemu_command(qemu, image, f"/proc/self/fd/{fd}", kvm=kvm),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(fd,),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (single-threaded here)
            start_new_session=True,  # Ctrl-C reaches us, and we stop qemu ourselves
        )
    finally:
        os.close(fd)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise GuestError(
            f"{image.name} did not finish within {timeout:.0f} s; console tail:\n"
            + tail(output.decode(errors="replace"))
        ) from None
    finally:
        if proc.poll() is None:  # an exception, Ctrl-C: never leave a VM running
            proc.kill()
            proc.wait()
    console = output.decode(errors="replace")
    if proc.returncode != 0 and "@@" not in console:
        raise QemuFailed(f"qemu failed ({proc.returncode}) before the guest ran:\n" + tail(console))
    return console, time.monotonic() - started


class QemuFailed(GuestError):
    """qemu exited with an error before the guest reported anything (e.g. KVM refused the
    virtual CPU, as nested virtualisation sometimes does)."""
