"""The compatibility checks of SPEC §4: one BPF object against one kernel, every check in words.

Pure: the object, its greylist and the kernel's facts come in as values (KernelFacts may read a
module's BTF on first use, through the loader it carries); a Result comes out.

The question asked is always the loader's: will libbpf and the verifier accept this object on K?
libbpf loads every program of an object together, so one failing program fails the object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from weak_bpf.engine.checks.core import CoreChecks
from weak_bpf.engine.checks.greylist import GreylistChecks
from weak_bpf.engine.checks.kfuncs import KfuncChecks
from weak_bpf.engine.checks.ksyms import KsymChecks
from weak_bpf.engine.checks.license import LicenseChecks
from weak_bpf.engine.checks.memo import ObjectMemo
from weak_bpf.engine.checks.structops import StructOpsChecks
from weak_bpf.model import (
    Area,
    Check,
    KernelFacts,
    Outcome,
    ReasonCode,
    Result,
    Verdict,
    verdict_of,
)
from weak_bpf.parsers.greylist import Greylist
from weak_bpf.parsers.objvalues import BpfObject

__all__ = ["ObjectMemo", "check_object", "malformed", "nothing_attaches"]


def malformed(detail: str) -> Result:
    """The result for an object (or greylist) that cannot be read."""
    check = Check(Area.OBJECT, Outcome.FAIL, "object", detail, ReasonCode.MALFORMED)
    return Result(Verdict.INCOMPATIBLE, (check,))


def check_object(
    obj: BpfObject,
    greylist: Greylist | None,
    kernel: KernelFacts,
    *,
    native: bool = False,
    memo: ObjectMemo | None = None,
) -> Result:
    """Every check of `obj` on `kernel`; `native` when the object was built for this kernel.
    Give the same `memo` when judging one object on several kernels: it keeps what they share."""
    checker = _Checker(obj, greylist, kernel, memo)
    checks = nothing_attaches([p.name for p in obj.programs], tuple(checker.run()))
    modules = tuple(sorted(checker.modules))
    verdict = Verdict.NATIVE if native else verdict_of(checks)
    return Result(verdict, checks, modules)


def nothing_attaches(programs: Iterable[str], checks: tuple[Check, ...]) -> tuple[Check, ...]:
    """An object whose programs can attach nowhere on K is no object with alternatives: it loads,
    but it can do nothing there. Its cannot-attach checks become failures."""
    cannot = {c.program for c in checks if c.outcome is Outcome.CANNOT_ATTACH}
    if not cannot or any(name not in cannot for name in programs):
        return checks
    return tuple(
        dataclasses.replace(
            c,
            outcome=Outcome.FAIL,
            detail=f"{c.detail}, and no other program of the object can attach there",
        )
        if c.outcome is Outcome.CANNOT_ATTACH
        else c
        for c in checks
    )


class _Checker(LicenseChecks, GreylistChecks, KfuncChecks, KsymChecks, CoreChecks, StructOpsChecks):
    """Every kind of check, in the order `explain` shows them; poisoned code is judged last,
    once every check has said what K resolves."""

    def run(self) -> Iterable[Check]:
        if self.k.vmlinux is None:
            why = "; ".join(self.k.problems) or "no vmlinux, vmlinuz or sysfs BTF was found"
            yield self._missing_data(
                Area.KERNEL,
                f"BTF of {self.k.kver}",
                f"no BTF ({why}): kfuncs, ksyms, CO-RE relocations and attach targets "
                "cannot be checked",
            )
        yield from self._license()
        yield from self._greylist()
        if self.k.vmlinux is None:
            return
        yield from self._kfuncs()
        yield from self._ksyms()
        yield from self._core()
        yield from self._attach_targets()
        yield from self._attach_protos()
        yield from self._struct_ops()
        yield from self._poisoned_code()

    def _poisoned_code(self) -> Iterable[Check]:
        """Poisoned instructions fail the load only if the verifier can reach them."""
        if not self.poisoned:
            return
        for program in self.obj.programs:
            in_program = {
                slot: why
                for slot, why in self.poisoned.items()
                if any(f.contains(*slot) for f in self.obj.reachable_functions(program))
            }
            if not in_program:
                continue
            reach = self.memo.reachability(program, self.known)
            for slot, (code, subject, why, guard) in sorted(in_program.items()):
                area = Area.CORE if code is ReasonCode.CORE_RELO else Area.KFUNC
                symbol = subject.split(" ", 1)[-1]
                where = f"instruction {slot[1]} of {slot[0]}, in program {program.name}"
                if reach.undecidable:
                    outcome, detail = (
                        Outcome.UNDECIDED,
                        (
                            f"{why}; whether the code that uses it ({where}) can run is "
                            f"unknown: {'; '.join(reach.undecidable)}"
                        ),
                    )
                elif slot in reach.reachable:
                    unguarded = f"; no {guard} test skips it" if guard else ""
                    outcome, detail = (
                        Outcome.FAIL,
                        (
                            f"{why}, and the code that uses it can run ({where}{unguarded}): "
                            "the kernel's verifier would reject the program"
                        ),
                    )
                else:
                    outcome = Outcome.PASS
                    detail = (
                        f"{why}, but the code that uses it ({where}) cannot run on "
                        f"{self.k.kver}: a test skips it"
                    )
                failed = outcome is not Outcome.PASS
                yield self._check(
                    area,
                    outcome,
                    subject,
                    detail,
                    code=code if failed else None,
                    symbol=symbol,
                    program=program.name,
                )
