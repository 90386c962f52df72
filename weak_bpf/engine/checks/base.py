"""What every check of one object on one kernel shares: the object, the kernel's facts, what
K resolves (for the reachability analysis), and the helpers that word a check."""

from __future__ import annotations

from weak_bpf.engine.checks.memo import ObjectMemo
from weak_bpf.engine.reachability import KnownValue, Slot
from weak_bpf.model import Area, Check, KernelFacts, Outcome, ReasonCode
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.greylist import Greylist
from weak_bpf.parsers.insn import InsnClass
from weak_bpf.parsers.objvalues import BpfObject, Extern, Function

MAX_KFUNC_ARGS = 5  # MAX_BPF_FUNC_REG_ARGS
UNDECIDED = "undecided"  # a marker: the kernel's data cannot tell
MEMORY_CLASSES = (InsnClass.LDX, InsnClass.ST, InsnClass.STX)
TEXT_SYMBOL_TYPES = frozenset("tTwW")


class CheckerBase:
    """The state one object's checks share; each kind of check is a mixin of it."""

    def __init__(
        self,
        obj: BpfObject,
        greylist: Greylist | None,
        kernel: KernelFacts,
        memo: ObjectMemo | None = None,
    ) -> None:
        self.obj = obj
        self.memo = memo if memo is not None and memo.obj is obj else ObjectMemo(obj)
        self.greylist = greylist
        self.k = kernel
        self.modules: set[str] = set()
        # what K resolves, for the reachability analysis: slot -> value, and poisoned slots
        self.known: dict[Slot, KnownValue] = {}
        # poisoned slots: (code, subject, why, the test that would skip the code, if any)
        self.poisoned: dict[Slot, tuple[ReasonCode, str, str, str | None]] = {}
        self.present_kfuncs: list[str] = []

    # --- helpers -----------------------------------------------------------------------------

    def _check(
        self,
        area: Area,
        outcome: Outcome,
        subject: str,
        detail: str,
        *,
        code: ReasonCode | None = None,
        symbol: str | None = None,
        program: str | None = None,
    ) -> Check:
        return Check(area, outcome, subject, detail, code, symbol, program)

    def _missing_data(
        self,
        area: Area,
        subject: str,
        detail: str,
        symbol: str | None = None,
        program: str | None = None,
    ) -> Check:
        return self._check(
            area,
            Outcome.UNDECIDED,
            subject,
            detail,
            code=ReasonCode.KERNEL_DATA_MISSING,
            symbol=symbol,
            program=program,
        )

    def _own_func(self, btf: BTF, name: str) -> int | None:
        """A FUNC called `name` defined by `btf` itself (not by its base)."""
        ids = [i for i in btf.find(name, Kind.FUNC) if i >= btf.start_id]
        return ids[0] if ids else None

    def _find_func(
        self, name: str, module: str | None = None, *, only: bool = False
    ) -> tuple[BTF, int, str | None] | None:
        """Where K defines FUNC `name`: (btf, id, module or None for vmlinux). `module` is
        searched first (with `only`, alone, as libbpf does for `module:func` targets), then
        vmlinux, then the modules."""
        vmlinux = self.k.vmlinux
        if vmlinux is None:
            return None
        candidates: list[str | None] = [module] if module else []
        if not (module and only):
            candidates.append(None)
            indexed = self.k.module_kfuncs.get(name)
            if indexed is not None:
                candidates.append(indexed.module)
            elif not self._own_func(vmlinux, name):
                candidates.append(self.k.module_of_symbol(name))
        for mod in dict.fromkeys(candidates):
            btf = vmlinux if mod is None else self.k.module_btf(mod)
            if btf is None:
                continue
            func_id = self._own_func(btf, name)
            if func_id is not None:
                return btf, func_id, mod
        return None

    def _problem(self, what: str) -> str:
        """What went wrong reading K's `what` ("symvers", "System.map", "module", ...)."""
        found = [p for p in self.k.problems if p.startswith((f"{what}: ", f"{what} "))]
        if not found:
            return "no details"
        more = f", and {len(found) - 1} more" if found[1:] else ""
        return found[0].removeprefix(f"{what}: ") + more

    def _btf_source(self) -> str:
        artifacts = self.k.artifacts
        if artifacts is None or artifacts.btf is None:
            return "a raw BTF file"
        return str(artifacts.relative(artifacts.btf))

    def _no_system_map(self) -> str:
        """Why K has no symbols to look typeless ksyms and kprobe targets up in, and what to do."""
        k = self.k.kver
        if any(p.startswith("System.map: ") for p in self.k.problems):
            return (
                f"{k}'s System.map could not be read ({self._problem('System.map')}): reinstall "
                "the package that owns it"
            )
        return (
            f"{k} has no usable System.map (missing, or Debian's placeholder) and no debuginfo "
            f"vmlinux: install linux-image-{k}-dbg (Debian) or kernel-debuginfo (RHEL, Fedora), "
            "whose symbols are read, or ask the vendor to give the symbol a type, which BTF can "
            "check"
        )

    def _functions(self) -> tuple[Function, ...]:
        return self.obj.programs + self.obj.subprograms

    def _set_extern(self, ext: Extern, value: KnownValue) -> None:
        """Record what libbpf writes into the ld_imm64 loads of an extern's address."""
        for func in self._functions():
            for ref in func.extern_refs:
                if ref.name == ext.name:
                    self.known[(ref.section, ref.insn_index)] = value

    def _poison_calls(self, name: str, why: str) -> None:
        for func in self._functions():
            for call in func.kfunc_calls:
                if call.name == name:
                    slot = (call.section, call.insn_index)
                    subject = f"kfunc {name}"
                    self.poisoned[slot] = (
                        ReasonCode.KFUNC_MISSING,
                        subject,
                        why,
                        "bpf_ksym_exists()",
                    )
