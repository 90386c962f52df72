"""What K's own loader said about an object (`verify`), and how that folds into the verdict.

Pure. `Verification` is what one boot of K reported for one object: each program loaded on its
own (libbpf and K's verifier) and, once loaded, attached as libbpf auto-attaches it. `fold` adds
it to the offline result:

- a program the verifier rejects is a failure (`verifier`, with the log's last lines), so an
  offline `compatible` becomes `incompatible`; a load that failed for want of memory says
  nothing about K (the VM is small), and stays undecided;
- a program K refused to attach cannot attach there (`attach-target`), whatever the offline
  checks found; one K attached has its target settled;
- a check the offline data could not decide is settled when the kernel decided it: kfuncs, ksyms,
  CO-RE and the kernel's data by the program loading; an attach target by the program attaching,
  or by its load where the kernel resolves the target at load (fentry, fexit, lsm, tp_btf, iter);
- a failure found offline stays a failure (greylists are policy, which no kernel checks), so
  verifying never makes a verdict better than `compatible`, and never hides an offline finding;
- a VM that did not boot or finish, a module that could not be inserted, a loader report that
  is not whole: the object's verdict is `unknown`, with the reason in the detail.
"""

from __future__ import annotations

import dataclasses
import errno
from typing import Any

from weak_bpf.engine.checks import nothing_attaches
from weak_bpf.model import Area, Check, Outcome, ReasonCode, Result, Verdict, verdict_of
from weak_bpf.parsers.sections import TargetKind, section_info

LOG_EXCERPT = 12  # lines of the verifier log in a reason's detail (explain shows them)

# undecided offline checks that a program's successful load settles
_SETTLED_BY_LOADING = (Area.KFUNC, Area.KSYM, Area.CORE, Area.KERNEL)
# targets the kernel resolves when the program loads (its attach_btf_id)
_LOAD_TIME_TARGETS = (TargetKind.BTF_FUNC, TargetKind.BTF_TYPEDEF, TargetKind.STRUCT_OPS)
_NOT_K = (errno.ENOMEM,)  # load errors that tell about the VM, not about K


@dataclasses.dataclass(frozen=True)
class ProgramLoad:
    """One program of the object, loaded alone: `error` 0 when it loaded, else the errno;
    `attach`: None when not tried (not loaded, or a kind libbpf does not auto-attach), 0 when K
    attached it, else the errno."""

    name: str
    section: str
    error: int
    log: str  # the tail of libbpf's messages, the verifier log among them
    attach: int | None = None

    @property
    def loaded(self) -> bool:
        return self.error == 0

    def excerpt(self, lines: int = LOG_EXCERPT) -> str:
        """The last lines of the log that say why, without libbpf's frame lines."""
        kept = [
            line
            for line in self.log.splitlines()
            if line.strip() and "-- BEGIN PROG LOAD LOG --" not in line
            and "-- END PROG LOAD LOG --" not in line
        ]  # fmt: skip
        return "\n".join(kept[-lines:])


@dataclasses.dataclass(frozen=True)
class Verification:
    """What one boot of K said about one object. `failure`: nothing is known (the VM did not
    boot or finish, a module was not inserted, the loader's report is not whole), and why;
    `open_error`: libbpf could not open the object at all."""

    programs: tuple[ProgramLoad, ...] = ()
    open_error: str | None = None
    failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "programs": [[p.name, p.section, p.error, p.log, p.attach] for p in self.programs],
            "open_error": self.open_error,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Verification:
        """Raises KeyError, ValueError or TypeError on a document to_json did not write."""
        programs = tuple(
            ProgramLoad(str(n), str(s), int(e), str(log), None if a is None else int(a))
            for n, s, e, log, a in doc["programs"]
        )
        open_error = doc["open_error"]
        if open_error is not None and not isinstance(open_error, str):
            raise TypeError("open_error")
        return cls(programs, open_error)


def fold(result: Result, verification: Verification, kver: str) -> Result:
    """`result` (the offline checks of one object on K) with what K's loader said."""
    if verification.failure is not None or verification.open_error is not None:
        why = verification.failure or f"libbpf could not open it: {verification.open_error}"
        check = Check(
            Area.VERIFIER,
            Outcome.UNDECIDED,
            f"{kver} in a VM",
            f"the VM did not settle it: {why}",
            ReasonCode.VERIFIER,
        )
        return _with(result, (*result.checks, check), verified=False)
    loads = {p.name: p for p in verification.programs}
    all_loaded = bool(loads) and all(p.loaded for p in loads.values())
    checks = [_settled(c, loads, all_loaded, kver) for c in result.checks]
    target_checked = {c.program for c in checks if c.area is Area.ATTACH and c.symbol is not None}
    for load in verification.programs:
        checks.append(_load_check(load, kver))
        if load.attach is not None and load.name not in target_checked:
            checks.append(_attach_check(load, kver, None))
    folded = nothing_attaches(list(loads), tuple(checks))
    return _with(result, folded, verified=True)


def _with(result: Result, checks: tuple[Check, ...], *, verified: bool) -> Result:
    verdict = verdict_of(checks)
    if result.verdict is Verdict.NATIVE and verdict.usable:
        verdict = Verdict.NATIVE
    return Result(verdict, checks, result.modules, verified)


def _settled(check: Check, loads: dict[str, ProgramLoad], all_loaded: bool, kver: str) -> Check:
    load = loads.get(check.program or "")
    if check.area is Area.ATTACH and check.symbol is not None and load is not None:
        return _target(check, load, kver)
    if check.outcome is not Outcome.UNDECIDED or check.area not in _SETTLED_BY_LOADING:
        return check  # a greylist's CRCs: policy, which no kernel checks
    settled = load.loaded if load is not None else check.program is None and all_loaded
    if not settled:
        return check
    return _passed(check, f"settled by {kver}'s own verifier: the program loads there")


def _target(check: Check, load: ProgramLoad, kver: str) -> Check:
    """An attach target check of a program K loaded and tried to attach."""
    if check.outcome not in (Outcome.PASS, Outcome.UNDECIDED):
        return check  # an offline failure stays
    if load.attach is not None:
        return _attach_check(load, kver, check)
    if (
        check.outcome is Outcome.UNDECIDED
        and load.loaded
        and section_info(load.section).target_kind in _LOAD_TIME_TARGETS
    ):
        return _passed(check, f"settled by {kver}: the program loads there, which needs its target")
    return check


def _passed(check: Check, why: str) -> Check:
    return dataclasses.replace(
        check, outcome=Outcome.PASS, detail=f"{check.detail}; {why}", code=None
    )


def _attach_check(load: ProgramLoad, kver: str, was: Check | None) -> Check:
    subject = was.subject if was is not None else f"attach target {load.section}"
    symbol = was.symbol if was is not None else None
    if load.attach == 0:
        return Check(
            Area.ATTACH,
            Outcome.PASS,
            subject,
            f"{kver} attached it (in a VM)",
            None,
            symbol,
            load.name,
        )
    return Check(
        Area.ATTACH,
        Outcome.CANNOT_ATTACH,
        subject,
        f"{kver} loads it but refused to attach it (error {load.attach}, in a VM); the log "
        f"ends:\n{load.excerpt(4)}",
        ReasonCode.ATTACH_TARGET,
        symbol,
        load.name,
    )


def _load_check(load: ProgramLoad, kver: str) -> Check:
    if load.loaded:
        return Check(
            Area.VERIFIER,
            Outcome.PASS,
            f"program {load.name}",
            f"{kver}'s verifier accepted it (loaded alone, in a VM)",
            program=load.name,
        )
    if load.error in _NOT_K:
        return Check(
            Area.VERIFIER,
            Outcome.UNDECIDED,
            f"program {load.name}",
            f"it did not load in the VM for want of memory (error {load.error}), which says "
            f"nothing about {kver}; the log ends:\n{load.excerpt()}",
            ReasonCode.VERIFIER,
            program=load.name,
        )
    return Check(
        Area.VERIFIER,
        Outcome.FAIL,
        f"program {load.name}",
        f"{kver} refused to load it (error {load.error}); the log ends:\n{load.excerpt()}",
        ReasonCode.VERIFIER,
        program=load.name,
    )
