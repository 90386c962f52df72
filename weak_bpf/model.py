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
    # loads, but some of its programs cannot attach on K (a kprobe or tracepoint target is
    # absent): an object with alternatives, whose loader turns those off
    COMPATIBLE_PARTIAL = "compatible-partial"
    INCOMPATIBLE = "incompatible"
    UNKNOWN = "unknown"
    NATIVE = "native"

    @property
    def usable(self) -> bool:
        """The program is expected to load on the kernel (linked or native)."""
        return self in (
            Verdict.COMPATIBLE,
            Verdict.COMPATIBLE_UNSTABLE,
            Verdict.COMPATIBLE_PARTIAL,
            Verdict.NATIVE,
        )


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
    ATTACH_PROTO = "attach-proto"
    VERIFIER = "verifier"  # only after `verify`: K's own verifier, booted in a VM, said no
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
    VERIFIER = "verifier"  # `verify`: each program loaded on K itself, in a VM


class Outcome(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"  # the program will not load: `code` says why
    UNDECIDED = "undecided"  # cannot be decided offline (missing data, undecidable reachability)
    UNSTABLE = "unstable"  # passes, but relies on a symbol outside the kABI stablelist
    # the program loads, but cannot attach on K: its kprobe or tracepoint target is absent
    CANNOT_ATTACH = "cannot-attach"
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


# value -> member, for reading results back fast (a KeyError for an unknown value)
_AREAS = {a.value: a for a in Area}
_OUTCOMES = {o.value: o for o in Outcome}
_CODES = {c.value: c for c in ReasonCode}
_VERDICTS = {v.value: v for v in Verdict}


@dataclasses.dataclass(frozen=True)
class Result:
    """The verdict on one program object for one kernel, with every check behind it."""

    verdict: Verdict
    checks: tuple[Check, ...] = ()
    modules: tuple[str, ...] = ()  # modules that must be loaded for the program to load
    verified: bool = False  # K's own verifier loaded the object in a VM (`verify`)

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return tuple(
            Reason(c.code, c.symbol, c.detail)
            for c in self.checks
            if c.outcome in (Outcome.FAIL, Outcome.UNDECIDED, Outcome.CANNOT_ATTACH)
            and c.code is not None
        )

    def linkable(self, *, link_unstable: bool = True, link_partial: bool = True) -> bool:
        """Whether the program gets a weak-updates link on the kernel (native ones stay put):
        compatible ones do; the configuration decides for compatible-unstable and
        compatible-partial ones (a partial one that is also unstable needs both)."""
        if self.verdict is Verdict.COMPATIBLE:
            return True
        if self.verdict is Verdict.COMPATIBLE_UNSTABLE:
            return link_unstable
        if self.verdict is Verdict.COMPATIBLE_PARTIAL:
            return link_partial and (link_unstable or not self.unstable_symbols)
        return False

    def to_json(self) -> dict[str, Any]:
        """Everything, for the results cache (from_json reads it back)."""
        return {
            "verdict": self.verdict.value,
            "modules": list(self.modules),
            "verified": self.verified,
            "checks": [
                [
                    c.area.value,
                    c.outcome.value,
                    c.subject,
                    c.detail,
                    c.code.value if c.code else None,
                    c.symbol,
                    c.program,
                ]
                for c in self.checks
            ],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Result:
        """Raises KeyError, ValueError or TypeError on a document to_json did not write."""
        checks = tuple(
            Check(
                _AREAS[a], _OUTCOMES[o], subject, detail, _CODES[code] if code else None, sym, prog
            )
            for a, o, subject, detail, code, sym, prog in doc["checks"]
        )
        verified = bool(doc.get("verified", False))
        return cls(_VERDICTS[doc["verdict"]], checks, tuple(doc["modules"]), verified)

    @property
    def unstable_symbols(self) -> tuple[str, ...]:
        return tuple(c.symbol or c.subject for c in self.checks if c.outcome is Outcome.UNSTABLE)


def verdict_of(checks: tuple[Check, ...]) -> Verdict:
    """A certain failure makes it incompatible; else anything undecided makes it unknown (never
    compatible); else a program that cannot attach makes it compatible-partial; else a symbol
    off the stablelist makes it compatible-unstable."""
    outcomes = {c.outcome for c in checks}
    if Outcome.FAIL in outcomes:
        return Verdict.INCOMPATIBLE
    if Outcome.UNDECIDED in outcomes:
        return Verdict.UNKNOWN
    if Outcome.CANNOT_ATTACH in outcomes:
        return Verdict.COMPATIBLE_PARTIAL
    if Outcome.UNSTABLE in outcomes:
        return Verdict.COMPATIBLE_UNSTABLE
    return Verdict.COMPATIBLE


@dataclasses.dataclass(frozen=True)
class ModuleKfunc:
    module: str
    path: str  # relative to the root
    flags: int  # KF_* bits from the module's kfunc set


class KernelFacts:
    """What one kernel provides to BPF programs. Facts that cost time to read (symvers, the kABI
    list, System.map or kallsyms, config) are read on first use, through `lazy` loaders: most
    programs need none of them."""

    def __init__(
        self,
        kver: str,
        artifacts: Any = None,  # weak_bpf.kernel.KernelArtifacts: where the facts were read
        *,
        vmlinux: BTF | None = None,
        problems: list[str] | None = None,
        lazy: dict[str, Callable[[], Any]] | None = None,
    ) -> None:
        self.kver = kver
        self.artifacts = artifacts
        self.problems = problems if problems is not None else []
        # set by the "vmlinux" loader, with the BTF they depend on
        self.module_kfuncs_found: dict[str, ModuleKfunc] = {}
        self.load_module_btf: Callable[[str], BTF | None] = lambda name: None
        self.find_module_symbol: Callable[[str], str | None] = lambda name: None
        self.find_module_type: Callable[[str, Kind], str | None] = lambda name, kind: None
        self._lazy = dict(lazy or {})
        self._values: dict[str, Any] = {}
        if vmlinux is not None:
            self.set_fact("vmlinux", vmlinux)

    def _fact(self, name: str) -> Any:
        if name not in self._values:
            loader = self._lazy.pop(name, None)
            self._values[name] = loader() if loader is not None else None
        return self._values[name]

    # read when a program needs them, never ahead: costly, and few programs do
    ON_DEMAND = frozenset({"error_injection"})

    def read_all(self) -> None:
        """Read every fact now (but ON_DEMAND ones), and make the modules' BTF ready to search:
        before worker processes fork, so that they share what was read instead of each reading
        it again."""
        for name in list(self._lazy):
            if name not in self.ON_DEMAND:
                self._fact(name)
        if self.vmlinux is not None:
            self.vmlinux.build_index()
            self.module_of_symbol("")  # no name: only takes the modules' BTF from pass or cache

    def defer(self, name: str, loader: Callable[[], Any]) -> None:
        """Read fact `name` with `loader` when it is first asked for."""
        self._values.pop(name, None)
        self._lazy[name] = loader

    def set_fact(self, name: str, value: Any) -> None:
        self._lazy.pop(name, None)
        self._values[name] = value

    @property
    def vmlinux(self) -> BTF | None:
        return self._fact("vmlinux")

    @property
    def vmlinux_btf_ids(self) -> frozenset[int] | None:
        """The ids in vmlinux's `.BTF_ids` section (kfunc sets and BTF_ID lists), when the BTF
        came from an ELF vmlinux; None when unknown (sysfs BTF)."""
        self._fact("vmlinux")
        return self._fact("vmlinux_btf_ids")

    @property
    def module_kfuncs(self) -> dict[str, ModuleKfunc]:
        """Kfuncs registered by modules: name -> where."""
        self._fact("vmlinux")
        return self.module_kfuncs_found

    def module_of_symbol(self, name: str) -> str | None:
        """The module whose BTF defines a FUNC or VAR called `name`; None for no name."""
        self._fact("vmlinux")
        return self.find_module_symbol(name)

    def module_of_type(self, name: str, kind: Kind) -> str | None:
        """The module whose BTF defines a type `name` of `kind` (a tracepoint's typedef, a
        struct_ops struct) that vmlinux lacks."""
        self._fact("vmlinux")
        return self.find_module_type(name, kind)

    @property
    def symvers(self) -> Symvers | None:
        return self._fact("symvers")

    @property
    def kabi(self) -> KabiList | None:
        return self._fact("kabi")

    @property
    def config(self) -> KernelConfig | None:
        return self._fact("config")

    @property
    def error_injection(self) -> frozenset[int] | None:
        """The addresses of the functions on K's error-injection list (ALLOW_ERROR_INJECTION),
        the only ones besides security_*() whose return value an fmod_ret program may change;
        empty when K is built without the list; None when unknown."""
        return self._fact("error_injection")

    @property
    def system_map(self) -> SystemMap | None:
        """System.map, or the running kernel's kallsyms; None when missing or a placeholder.
        The lazy fact "symbols" gives both, as (map, is_kallsyms)."""
        symbols = self._fact("symbols")
        return None if symbols is None else symbols[0]

    @property
    def system_map_is_kallsyms(self) -> bool:
        """The symbols are the running kernel's kallsyms: exactly what libbpf sees."""
        symbols = self._fact("symbols")
        return symbols is not None and symbols[0] is not None and symbols[1]

    @property
    def module_problems(self) -> bool:
        """Some module could not be read: a kfunc or symbol not found may be in it."""
        return any(p.startswith("module ") for p in self.problems)

    @property
    def has_kfunc_tags(self) -> bool:
        """pahole 1.27+ tags kfuncs in BTF; older BTF says nothing about which FUNCs are kfuncs."""
        return self.vmlinux is not None and bool(self.vmlinux.find("bpf_kfunc", Kind.DECL_TAG))

    def module_btf(self, module: str) -> BTF | None:
        self._fact("vmlinux")
        return self.load_module_btf(module)
