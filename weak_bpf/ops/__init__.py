"""The use cases behind the commands. They work under an explicit root and return values; they
never print. Writing goes through weak_bpf.apply.writer.

- `kernels`: the kernels and their artifacts;
- `objects`: one object before any kernel (`inspect`), and what a packager ships with it;
- `verdicts`: every program on every kernel (`audit`, `explain`), with the results cache;
- `links`: resolving the links of kernels, under the lock, and their reports.
"""

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
from weak_bpf.ops.verdicts import AuditReport, ProgramAudit, audit, explain, kernel_facts, settings
from weak_bpf.program.installed import greylist_beside, object_path

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
