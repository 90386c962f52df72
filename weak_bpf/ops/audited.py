"""What an audit returns: each program's result and link state on each kernel."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from weak_bpf.model import Result, Verdict
from weak_bpf.parsers.greylist import Greylist
from weak_bpf.program.installed import InstalledProgram


@dataclasses.dataclass(frozen=True)
class ProgramAudit:
    program: InstalledProgram
    build_kernel: str | None
    results: dict[str, tuple[Result, bool]]  # kver -> (result, linked now)
    greylist: Greylist | None = None  # when the object was read in this run (not cached)


@dataclasses.dataclass(frozen=True)
class AuditReport:
    root: Path
    kernels: tuple[str, ...]
    programs: tuple[ProgramAudit, ...]

    @property
    def clean(self) -> bool:
        """Nothing incompatible or unknown (audit's exit status 0)."""
        return all(
            result.verdict not in (Verdict.INCOMPATIBLE, Verdict.UNKNOWN)
            for p in self.programs
            for result, _ in p.results.values()
        )
