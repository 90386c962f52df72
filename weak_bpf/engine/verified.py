"""What K's own loader said about an object (`verify`), and how that folds into the verdict.

Pure. `Verification` is what one boot of K reported for one object: each program loaded on its
own (libbpf and K's verifier), and whether K's kernel let a kprobe be placed on each kprobe
target. `fold` adds it to the offline result:

- a program the verifier rejects is a failure (`verifier`, with the log's last lines), so an
  offline `compatible` becomes `incompatible`;
- a check the offline data could not decide is settled when the kernel decided it: kfuncs, ksyms,
  CO-RE, the kernel's data and the arguments a tracing program reads, by the program loading;
  a kprobe target, by the kprobe being placed (or refused: the program cannot attach there);
- a failure found offline stays a failure (greylists are policy, which no kernel checks, and a
  kprobe or tracepoint program loads whatever its target), so verifying never makes a verdict
  better than `compatible`, and never hides an offline finding;
- a VM that did not boot or finish leaves the verdict `unknown` (console tail in the detail).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from weak_bpf.engine.checks import nothing_attaches
from weak_bpf.model import Area, Check, Outcome, ReasonCode, Result, Verdict, verdict_of

LOG_EXCERPT = 12  # lines of the verifier log in a reason's detail (explain shows them)

# undecided offline checks that a program's successful load settles
_SETTLED_BY_LOADING = (Area.KFUNC, Area.KSYM, Area.CORE, Area.KERNEL, Area.ATTACH)


@dataclasses.dataclass(frozen=True)
class ProgramLoad:
    """One program of the object, loaded alone: `error` 0 when it loaded, else the errno."""

    name: str
    section: str
    error: int
    log: str  # the tail of libbpf's messages, the verifier log among them

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
class Kprobe:
    program: str
    symbol: str
    placed: bool  # K's kernel accepted a kprobe there (tracefs kprobe_events)


@dataclasses.dataclass(frozen=True)
class Verification:
    """What one boot of K said about one object. `failure`: the VM did not boot or did not
    finish (the console's tail), and nothing else is known; `open_error`: libbpf could not open
    the object at all."""

    programs: tuple[ProgramLoad, ...] = ()
    kprobes: tuple[Kprobe, ...] = ()
    open_error: str | None = None
    failure: str | None = None

    @property
    def all_loaded(self) -> bool:
        return (
            self.open_error is None
            and self.failure is None
            and all(p.loaded for p in self.programs)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "programs": [[p.name, p.section, p.error, p.log] for p in self.programs],
            "kprobes": [[k.program, k.symbol, k.placed] for k in self.kprobes],
            "open_error": self.open_error,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Verification:
        """Raises KeyError, ValueError or TypeError on a document to_json did not write."""
        programs = tuple(
            ProgramLoad(str(n), str(s), int(e), str(log)) for n, s, e, log in doc["programs"]
        )
        kprobes = tuple(Kprobe(str(p), str(s), bool(ok)) for p, s, ok in doc["kprobes"])
        open_error = doc["open_error"]
        if open_error is not None and not isinstance(open_error, str):
            raise TypeError("open_error")
        return cls(programs, kprobes, open_error)


def fold(result: Result, verification: Verification, kver: str) -> Result:
    """`result` (the offline checks of one object on K) with what K's loader said."""
    if verification.failure is not None:
        check = Check(
            Area.VERIFIER,
            Outcome.UNDECIDED,
            f"{kver} in a VM",
            f"the VM did not report: {verification.failure}",
            ReasonCode.VERIFIER,
        )
        return _with(result, (*result.checks, check), verified=False)
    loaded = {p.name for p in verification.programs if p.loaded}
    kprobes = {k.symbol: k for k in verification.kprobes}
    checks = [_settled(c, verification, loaded, kprobes, kver) for c in result.checks]
    decided = {
        c.symbol for c in checks if c.area is Area.ATTACH and c.outcome is not Outcome.UNDECIDED
    }
    checks += [_kprobe_check(k, kver) for k in verification.kprobes if k.symbol not in decided]
    if verification.open_error is not None:
        checks.append(
            Check(
                Area.VERIFIER,
                Outcome.FAIL,
                "object",
                f"libbpf could not open it on {kver}: {verification.open_error}",
                ReasonCode.VERIFIER,
            )
        )
    checks += [_load_check(p, kver) for p in verification.programs]
    names = [p.name for p in verification.programs]
    folded = nothing_attaches(names, tuple(checks)) if names else tuple(checks)
    return _with(result, folded, verified=True)


def _with(result: Result, checks: tuple[Check, ...], *, verified: bool) -> Result:
    verdict = Verdict.NATIVE if result.verdict is Verdict.NATIVE else verdict_of(checks)
    return Result(verdict, checks, result.modules, verified)


def _settled(
    check: Check,
    verification: Verification,
    loaded: set[str],
    kprobes: dict[str, Kprobe],
    kver: str,
) -> Check:
    if check.outcome is not Outcome.UNDECIDED:
        return check
    if check.area is Area.ATTACH and check.symbol in kprobes:
        return _kprobe_check(kprobes[check.symbol], kver, check)
    if check.area not in _SETTLED_BY_LOADING:
        return check  # a greylist's CRCs: policy, which no kernel checks
    if check.program is not None:
        settled = check.program in loaded
    else:
        settled = bool(verification.programs) and verification.all_loaded
    if not settled or check.code is ReasonCode.ATTACH_TARGET:
        return check
    if check.area is Area.ATTACH and check.symbol is not None and not check.program:
        return check  # a kprobe target that was not tried: loading does not decide it
    return dataclasses.replace(
        check,
        outcome=Outcome.PASS,
        detail=f"{check.detail}; settled by {kver}'s own verifier: the program loads there",
        code=None,
    )


def _kprobe_check(kprobe: Kprobe, kver: str, was: Check | None = None) -> Check:
    subject = was.subject if was is not None else f"kprobe target {kprobe.symbol}"
    if kprobe.placed:
        return Check(
            Area.ATTACH,
            Outcome.PASS,
            subject,
            f"{kver}'s kernel placed a kprobe on {kprobe.symbol} (verified in a VM)",
            None,
            kprobe.symbol,
            kprobe.program,
        )
    return Check(
        Area.ATTACH,
        Outcome.CANNOT_ATTACH,
        subject,
        f"{kver}'s kernel refused a kprobe on {kprobe.symbol} (verified in a VM): the program "
        "loads, but cannot attach",
        ReasonCode.ATTACH_TARGET,
        kprobe.symbol,
        kprobe.program,
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
    return Check(
        Area.VERIFIER,
        Outcome.FAIL,
        f"program {load.name}",
        f"{kver} refused to load it (error {load.error}); the log ends:\n{load.excerpt()}",
        ReasonCode.VERIFIER,
        program=load.name,
    )
