"""The use cases behind the commands. They work under an explicit root and return values; they
never print. Writing goes through weak_bpf.apply.writer.

- `kernels`: the kernels and their artifacts;
- `objects`: one object before any kernel (`inspect`), and what a packager ships with it;
- `verdicts`: every program on every kernel (`audit`, `explain`), with the results cache;
- `links`: resolving the links of kernels, under the lock, and their reports.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weak_bpf.ops.audited import AuditReport, ProgramAudit
    from weak_bpf.ops.kernels import KernelSummary, list_kernels
    from weak_bpf.ops.links import (
        KernelRun,
        KernelsFailed,
        add_kernel,
        add_progs,
        remove_kernel,
        remove_progs,
        resolve,
    )
    from weak_bpf.ops.objects import GreylistResult, bpf_symvers, greylist, inspect_object
    from weak_bpf.ops.verdicts import audit, explain, kernel_facts, settings
    from weak_bpf.program.installed import greylist_beside, object_path

# where each name lives: a command imports only the modules it uses (start-up time is most of a
# run served by the cache)
_HOME = {
    **dict.fromkeys(("KernelSummary", "list_kernels"), "weak_bpf.ops.kernels"),
    **dict.fromkeys(
        (
            "KernelRun",
            "KernelsFailed",
            "add_kernel",
            "add_progs",
            "remove_kernel",
            "remove_progs",
            "resolve",
        ),
        "weak_bpf.ops.links",
    ),
    **dict.fromkeys(
        ("GreylistResult", "bpf_symvers", "greylist", "inspect_object"), "weak_bpf.ops.objects"
    ),
    **dict.fromkeys(("AuditReport", "ProgramAudit"), "weak_bpf.ops.audited"),
    **dict.fromkeys(("audit", "explain", "kernel_facts", "settings"), "weak_bpf.ops.verdicts"),
    **dict.fromkeys(("greylist_beside", "object_path"), "weak_bpf.program.installed"),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "AuditReport",
    "GreylistResult",
    "KernelRun",
    "KernelSummary",
    "KernelsFailed",
    "ProgramAudit",
    "add_kernel",
    "add_progs",
    "audit",
    "bpf_symvers",
    "explain",
    "greylist",
    "greylist_beside",
    "inspect_object",
    "kernel_facts",
    "list_kernels",
    "object_path",
    "remove_kernel",
    "remove_progs",
    "resolve",
    "settings",
]
