"""The answers of weak-bpf-progsd's methods: arguments checked, weak_bpf.ops called, the result
rendered as the CLI's JSON, every failure turned into an error the caller is sent. No D-Bus here:
these run in the workers (workers.py), and manager.py sends what they return.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from weak_bpf import ops, report
from weak_bpf.apply import writer as actions
from weak_bpf.daemon.interface import ERROR_PREFIX
from weak_bpf.errors import KernelNotFound, WeakBpfError
from weak_bpf.kernel import find as kernel
from weak_bpf.program import installed as programs

log = logging.getLogger("weak-bpf-progsd")


# --- errors: each class is a D-Bus error name under org.weakbpf.Manager1.Error ------------------


class ServiceError(Exception):
    """An error answered to the caller; `kind` names it on the bus (ERROR_PREFIX + kind)."""

    kind = "Failed"

    @property
    def dbus_name(self) -> str:
        return ERROR_PREFIX + self.kind


class InvalidArgument(ServiceError):
    kind = "InvalidArgument"


class AccessDenied(ServiceError):
    kind = "AccessDenied"


class Failed(ServiceError):
    kind = "Failed"


class Busy(ServiceError):
    """Too many calls at once: the caller may try again."""

    kind = "Busy"


STOPPING = "weak-bpf-progsd is stopping: nothing was done; call again"

ERRORS: dict[str, type[ServiceError]] = {
    cls.kind: cls for cls in (InvalidArgument, AccessDenied, Failed, Busy)
}


# --- argument validation -------------------------------------------------------------------------


def plain_name(kver: str) -> None:
    """Refuse what cannot be a kernel release (no file system access: the main loop calls it)."""
    if not kver or "\0" in kver or "/" in kver or kver in (".", ".."):
        raise InvalidArgument(f"not a kernel release: {kver!r}")


def check_kernel(root: Path, kver: str, *, removing: bool = False) -> str:
    """An installed kernel's release (or, to remove, one with links left under the root)."""
    plain_name(kver)
    if kver in kernel.installed_kernels(root):
        return kver
    if removing and actions.bpf_dir(root, kver).is_dir():
        return kver
    raise InvalidArgument(f"{kver}: not an installed kernel (the Kernels property lists them)")


def check_program(root: Path, path: str) -> str:
    """An installed program's root-relative path, from a path relative to the root, absolute
    inside the root, or absolute in the system the root holds."""
    if "\0" in path:
        raise InvalidArgument("a NUL byte in the object path")
    parts = path.split("/")
    if ".." in parts:
        raise InvalidArgument(f"{path!r}: '..' is not allowed in an object path")
    absolute_root = str(root.absolute()).rstrip("/") + "/"
    relative = path[len(absolute_root) :] if path.startswith(absolute_root) else path
    relative = "/".join(p for p in relative.split("/") if p not in ("", "."))
    installed = {p.path for p in programs.installed_programs(root)}
    if relative not in installed:
        raise InvalidArgument(
            f"{path}: not an installed BPF program under {root} (the Programs property lists them)"
        )
    return relative


# --- the answers: ops and renderers, nothing more ------------------------------------------------


def audit_answer(root: Path, kvers: Sequence[str]) -> str:
    for kver in kvers:
        check_kernel(root, kver)
    return json.dumps(report.audit_json(ops.audit(root, kvers)), indent=2)


def explain_answer(root: Path, path: str, kver: str) -> str:
    """Explain one installed program on one kernel ("": every installed kernel)."""
    kvers = [check_kernel(root, kver)] if kver else []
    relative = check_program(root, path)
    return json.dumps(report.explain_json(ops.explain(root, Path(relative), kvers)), indent=2)


def add_kernel_answer(root: Path, kver: str, *, dry_run: bool, journal: bool) -> str:
    check_kernel(root, kver)
    runs = ops.add_kernel(root, kver, dry_run=dry_run, journal=journal)
    return json.dumps([run.resolution.to_json() for run in runs], indent=2)


def remove_kernel_answer(root: Path, kver: str, *, dry_run: bool, journal: bool) -> str:
    check_kernel(root, kver, removing=True)
    runs = ops.remove_kernel(root, kver, dry_run=dry_run, journal=journal)
    return json.dumps([run.resolution.to_json() for run in runs], indent=2)


def verify_answer(root: Path, kvers: Sequence[str], progress: Callable[[str], None]) -> str:
    """`verify --json` of `kvers` (none: every installed kernel with an image)."""
    from weak_bpf.ops import verify  # the VM code, imported by the worker that boots

    for kver in kvers:
        check_kernel(root, kver)
    return json.dumps(report.verify_json(verify.verify(root, kvers, progress=progress)), indent=2)


def guarded(method: str, work: Callable[[], str]) -> str:
    """`work()`, its failures turned into ServiceErrors."""
    try:
        return work()
    except ServiceError:
        raise
    except KernelNotFound as e:
        raise InvalidArgument(str(e)) from None
    except WeakBpfError as e:
        log.warning("%s failed: %s", method, e)
        raise Failed(f"{e}" + (f" (hint: {e.hint})" if e.hint else "")) from None
    except OSError as e:
        log.warning("%s failed: %s", method, e)
        raise Failed(str(e)) from None
    except Exception as e:  # a bug: answer it, log it, keep serving
        log.exception("%s: internal error", method)
        raise Failed(f"internal error: {type(e).__name__}: {e}") from None


def summary_json(resolution_doc: dict[str, Any]) -> str:
    """Resolved's payload: the report of a kernel without its per-program list."""
    return json.dumps({k: v for k, v in resolution_doc.items() if k != "programs"})
