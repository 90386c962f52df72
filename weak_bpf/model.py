"""Values shared across layers: verdicts, reasons, and the result of checking a program on K."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.kabi import KabiList
from weak_bpf.parsers.kconfig import KernelConfig
from weak_bpf.parsers.symvers import Symvers
from weak_bpf.parsers.sysmap import SystemMap


class Verdict(str, enum.Enum):
    COMPATIBLE = "compatible"
    COMPATIBLE_UNSTABLE = "compatible-unstable"
    INCOMPATIBLE = "incompatible"
    UNKNOWN = "unknown"
    NATIVE = "native"

    def linkable(self, *, link_unstable: bool) -> bool:
        """Whether a program with this verdict gets a weak-updates link (native ones stay put)."""
        if self is Verdict.COMPATIBLE:
            return True
        return self is Verdict.COMPATIBLE_UNSTABLE and link_unstable

    @property
    def usable(self) -> bool:
        """The program is expected to load on the kernel (linked or native)."""
        return self in (Verdict.COMPATIBLE, Verdict.COMPATIBLE_UNSTABLE, Verdict.NATIVE)


class ReasonCode(str, enum.Enum):
    """The stable failure codes of SPEC §4, used by JSON, the journal and the tests."""

    MALFORMED = "malformed"
    SYMBOL_MISSING = "symbol-missing"
    CRC_MISMATCH = "crc-mismatch"
    LICENSE = "license"
    KFUNC_MISSING = "kfunc-missing"
    KFUNC_PROTO = "kfunc-proto"
    KSYM_MISSING = "ksym-missing"
    CORE_RELO = "core-relo"
    ATTACH_TARGET = "attach-target"
    KERNEL_DATA_MISSING = "kernel-data-missing"


class Area(str, enum.Enum):
    """What a check is about; `explain` groups checks by area, in this order."""

    OBJECT = "object"
    LICENSE = "license"
    GREYLIST = "greylist"
    KFUNC = "kfuncs"
    KSYM = "ksyms"
    CORE = "CO-RE relocations"
    ATTACH = "attach targets"
    KERNEL = "kernel data"


class Outcome(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"  # the program will not load: `code` says why
    UNDECIDED = "undecided"  # cannot be decided offline (missing data, undecidable reachability)
    UNSTABLE = "unstable"  # passes, but relies on a symbol outside the kABI stablelist
    NOTE = "note"  # worth knowing (a module to load, an obsolete export type); changes nothing


@dataclasses.dataclass(frozen=True)
class Check:
    """One fact checked about a program on a kernel, in words a sysadmin can act on."""

    area: Area
    outcome: Outcome
    subject: str  # e.g. "kfunc bpf_xdp_ct_lookup"
    detail: str  # e.g. "found in module nf_conntrack (must be loaded); prototype compatible"
    code: ReasonCode | None = None  # set when outcome is FAIL or UNDECIDED
    symbol: str | None = None
    program: str | None = None  # the program (entry point) concerned, if one


@dataclasses.dataclass(frozen=True)
class Reason:
    """A failure as the JSON schema and the journal carry it."""

    code: ReasonCode
    symbol: str | None
    detail: str

    def to_json(self) -> dict[str, str | None]:
        return {"code": self.code.value, "symbol": self.symbol, "detail": self.detail}


@dataclasses.dataclass(frozen=True)
class Result:
    """The verdict on one program object for one kernel, with every check behind it."""

    verdict: Verdict
    checks: tuple[Check, ...] = ()
    modules: tuple[str, ...] = ()  # modules that must be loaded for the program to load

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return tuple(
            Reason(c.code, c.symbol, c.detail)
            for c in self.checks
            if c.outcome in (Outcome.FAIL, Outcome.UNDECIDED) and c.code is not None
        )

    @property
    def unstable_symbols(self) -> tuple[str, ...]:
        return tuple(c.symbol or c.subject for c in self.checks if c.outcome is Outcome.UNSTABLE)


def verdict_of(checks: tuple[Check, ...]) -> Verdict:
    """A certain failure makes it incompatible; else anything undecided makes it unknown (never
    compatible); else a symbol off the stablelist makes it compatible-unstable."""
    outcomes = {c.outcome for c in checks}
    if Outcome.FAIL in outcomes:
        return Verdict.INCOMPATIBLE
    if Outcome.UNDECIDED in outcomes:
        return Verdict.UNKNOWN
    if Outcome.UNSTABLE in outcomes:
        return Verdict.COMPATIBLE_UNSTABLE
    return Verdict.COMPATIBLE


@dataclasses.dataclass(frozen=True)
class ModuleKfunc:
    module: str
    path: str  # relative to the root
    flags: int  # KF_* bits from the module's kfunc set


@dataclasses.dataclass
class KernelFacts:
    kver: str
    artifacts: Any  # weak_bpf.kernel.KernelArtifacts: where each fact was read from
    vmlinux: BTF | None = None
    symvers: Symvers | None = None
    kabi: KabiList | None = None
    system_map: SystemMap | None = None  # None when missing or a placeholder
    system_map_is_kallsyms: bool = False  # the running kernel's kallsyms: exactly what libbpf sees
    config: KernelConfig | None = None
    module_kfuncs: dict[str, ModuleKfunc] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    load_module_btf: Callable[[str], BTF | None] = lambda name: None
    # the module whose BTF defines a FUNC or VAR of this name (all modules, scanned on first use)
    module_of_symbol: Callable[[str], str | None] = lambda name: None

    @property
    def has_kfunc_tags(self) -> bool:
        """pahole 1.27+ tags kfuncs in BTF; older BTF says nothing about which FUNCs are kfuncs."""
        return self.vmlinux is not None and bool(self.vmlinux.find("bpf_kfunc", Kind.DECL_TAG))

    def module_btf(self, module: str) -> BTF | None:
        return self.load_module_btf(module)
