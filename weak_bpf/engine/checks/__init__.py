"""The compatibility checks of SPEC §4: one BPF object against one kernel, every check in words.

Pure: the object, its greylist and the kernel's facts come in as values (KernelFacts may read a
module's BTF on first use, through the loader it carries); a Result comes out.

The question asked is always the loader's: will libbpf and the verifier accept this object on K?
libbpf loads every program of an object together, so one failing program fails the object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from weak_bpf.engine.bpf_helpers import helper_name, is_gpl_only, license_is_gpl_compatible
from weak_bpf.engine.btfcompat import (
    describe,
    essential_name,
    func_protos_compatible,
    types_are_compat,
)
from weak_bpf.engine.corerelo import (
    ENUMVAL_KINDS,
    FIELD_KINDS,
    CoreResolver,
    CoreResult,
    target_index,
)
from weak_bpf.engine.ctxaccess import context_use
from weak_bpf.engine.reachability import NONZERO, KnownValue, Slot, reachability
from weak_bpf.engine.signature import format_crc, signature_crc
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
from weak_bpf.parsers.bpfobject import BpfObject, Extern, ExternKind, Function
from weak_bpf.parsers.btf import BTF, Kind, Param, Type
from weak_bpf.parsers.btfext import CoreReloKind
from weak_bpf.parsers.greylist import Greylist
from weak_bpf.parsers.insn import InsnClass
from weak_bpf.parsers.sections import AttachType, TargetKind
from weak_bpf.parsers.symvers import SymvEntry

MAX_KFUNC_ARGS = 5  # MAX_BPF_FUNC_REG_ARGS
_UNDECIDED = "undecided"  # a marker: the kernel's data cannot tell
_MEMORY_CLASSES = (InsnClass.LDX, InsnClass.ST, InsnClass.STX)
_TEXT_SYMBOL_TYPES = frozenset("tTwW")


def malformed(detail: str) -> Result:
    """The result for an object (or greylist) that cannot be read."""
    check = Check(Area.OBJECT, Outcome.FAIL, "object", detail, ReasonCode.MALFORMED)
    return Result(Verdict.INCOMPATIBLE, (check,))


def check_object(
    obj: BpfObject, greylist: Greylist | None, kernel: KernelFacts, *, native: bool = False
) -> Result:
    """Every check of `obj` on `kernel`; `native` when the object was built for this kernel."""
    checker = _Checker(obj, greylist, kernel)
    checks = _nothing_attaches(obj, tuple(checker.run()))
    modules = tuple(sorted(checker.modules))
    verdict = Verdict.NATIVE if native else verdict_of(checks)
    return Result(verdict, checks, modules)


def _nothing_attaches(obj: BpfObject, checks: tuple[Check, ...]) -> tuple[Check, ...]:
    """An object whose programs can attach nowhere on K is no object with alternatives: it loads,
    but it can do nothing there. Its cannot-attach checks become failures."""
    cannot = {c.program for c in checks if c.outcome is Outcome.CANNOT_ATTACH}
    if not cannot or any(p.name not in cannot for p in obj.programs):
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


class _Checker:
    def __init__(self, obj: BpfObject, greylist: Greylist | None, kernel: KernelFacts) -> None:
        self.obj = obj
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
        self, area: Area, subject: str, detail: str, symbol: str | None = None
    ) -> Check:
        return self._check(
            area,
            Outcome.UNDECIDED,
            subject,
            detail,
            code=ReasonCode.KERNEL_DATA_MISSING,
            symbol=symbol,
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

    # --- the checks --------------------------------------------------------------------------

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
        yield from self._poisoned_code()

    def _license(self) -> Iterable[Check]:
        license = self.obj.license
        if license is not None and license_is_gpl_compatible(license):
            yield self._check(
                Area.LICENSE, Outcome.PASS, "license", f'"{license}" is GPL-compatible'
            )
            return
        shown = f'"{license}"' if license is not None else "no license section"
        gpl_uses = [f"kfunc {e.name}" for e in self.obj.ksyms if e.kind is ExternKind.FUNC]
        helpers = sorted({h for f in self._functions() for h in f.helper_ids if is_gpl_only(h)})
        gpl_uses += [f"GPL-only helper {helper_name(h)}" for h in helpers]
        if self.greylist is not None:
            gpl_uses += [
                f"{e.symbol} ({e.export_type.value})"
                for e in self.greylist.entries
                if e.export_type.gpl_only
            ]
        if not gpl_uses:
            yield self._check(
                Area.LICENSE,
                Outcome.PASS,
                "license",
                f"{shown} is not GPL-compatible, but the program uses nothing GPL-only",
            )
            return
        yield self._check(
            Area.LICENSE,
            Outcome.FAIL,
            "license",
            f"{shown} is not GPL-compatible, and the program uses {', '.join(gpl_uses)}, which "
            "only GPL-compatible programs may use: the kernel refuses to load it",
            code=ReasonCode.LICENSE,
        )

    def _functions(self) -> tuple[Function, ...]:
        return self.obj.programs + self.obj.subprograms

    def _greylist(self) -> Iterable[Check]:
        if self.greylist is None:
            return
        for entry in self.greylist.entries:
            yield from self._greylist_entry(entry)

    def _greylist_entry(self, entry: SymvEntry) -> Iterable[Check]:
        subject = f"greylist symbol {entry.symbol}"
        if entry.export_type.flagged:
            yield self._check(
                Area.GREYLIST,
                Outcome.NOTE,
                subject,
                f"export type {entry.export_type.value} is obsolete: rebuild the greylist",
                symbol=entry.symbol,
            )
        if self.k.symvers is None and self.k.artifacts is not None and self.k.artifacts.symvers:
            yield self._missing_data(
                Area.GREYLIST,
                subject,
                f"{self.k.kver}'s symvers could not be read ({self._problem('symvers')}): "
                "reinstall the package that owns it",
                entry.symbol,
            )
            return
        provided = self.k.symvers.get(entry.symbol) if self.k.symvers is not None else None
        if provided is not None:
            crc, where = provided.crc, f"{self.k.kver}'s symvers ({provided.module})"
        else:
            found = self._find_func(
                entry.symbol, None if entry.module == "vmlinux" else entry.module
            )
            if found is None:
                if self.k.vmlinux is None or self.k.module_problems:
                    what = "has no BTF" if self.k.vmlinux is None else "has unreadable modules"
                    yield self._missing_data(
                        Area.GREYLIST,
                        subject,
                        f"not in {self.k.kver}'s symvers, and {self.k.kver} {what}: "
                        "whether it provides the symbol is unknown",
                        entry.symbol,
                    )
                else:
                    yield self._check(
                        Area.GREYLIST,
                        Outcome.FAIL,
                        subject,
                        f"{entry.symbol} is provided neither by {self.k.kver}'s symvers "
                        "nor by its BTF",
                        code=ReasonCode.SYMBOL_MISSING,
                        symbol=entry.symbol,
                    )
                return
            btf, func_id, module = found
            crc = signature_crc(btf, func_id)
            where = f"the BTF signature in {module or 'vmlinux'}"
        if crc != entry.crc:
            yield self._check(
                Area.GREYLIST,
                Outcome.FAIL,
                subject,
                f"CRC {format_crc(entry.crc)} in the greylist, {format_crc(crc)} in {where}: "
                "the interface the program was built against changed",
                code=ReasonCode.CRC_MISMATCH,
                symbol=entry.symbol,
            )
            return
        if self.k.kabi is not None and entry.symbol in self.k.kabi.symbols:
            yield self._check(
                Area.GREYLIST,
                Outcome.PASS,
                subject,
                f"CRC matches {where} (the interface is unchanged), and it is on "
                f"{self.k.kver}'s kABI stablelist",
                symbol=entry.symbol,
            )
        else:
            stablelist = (
                f"it is not on {self.k.kver}'s kABI stablelist"
                if self.k.kabi is not None
                else f"{self.k.kver} has no kABI stablelist to keep it stable"
            )
            yield self._check(
                Area.GREYLIST,
                Outcome.UNSTABLE,
                subject,
                f"CRC matches {where} (the interface is unchanged), but {stablelist}: "
                "a kernel update may change it",
                symbol=entry.symbol,
            )

    def _kfuncs(self) -> Iterable[Check]:
        for ext in self.obj.ksyms:
            if ext.kind is ExternKind.FUNC:
                yield from self._kfunc(ext)

    def _kfunc(self, ext: Extern) -> Iterable[Check]:
        subject = f"kfunc {ext.name}"
        name = essential_name(ext.name)
        listed = self.greylist.get(name) if self.greylist is not None else None
        hint = listed.module if listed is not None and listed.module != "vmlinux" else None
        found = self._find_func(name, hint)
        if found is None and self.k.module_problems:
            yield self._missing_data(
                Area.KFUNC,
                subject,
                f"not in {self.k.kver}'s vmlinux BTF, and some of its modules could not be read "
                f"({self._problem('module')})",
                ext.name,
            )
            return
        if found is None:
            self._set_extern(ext, 0)
            if ext.weak:
                self._poison_calls(ext.name, f"weak kfunc {ext.name} is absent from {self.k.kver}")
                yield self._check(
                    Area.KFUNC,
                    Outcome.PASS,
                    subject,
                    "absent, but weak: its calls must be unreachable (bpf_ksym_exists guards)",
                    symbol=ext.name,
                )
            else:
                yield self._check(
                    Area.KFUNC,
                    Outcome.FAIL,
                    subject,
                    f"{self.k.kver} provides no such function, neither in vmlinux nor in a module",
                    code=ReasonCode.KFUNC_MISSING,
                    symbol=ext.name,
                )
            return
        btf, func_id, module = found
        self._set_extern(ext, NONZERO)
        where = f"found in module {module} (must be loaded)" if module else "found in vmlinux"
        if module:
            self.modules.add(module)
        problem = self._not_a_kfunc(btf, func_id, module)
        if problem is _UNDECIDED:
            yield self._missing_data(
                Area.KFUNC,
                subject,
                f"{where}, but whether it is a kfunc is unknown: {self.k.kver}'s BTF has no "
                f"bpf_kfunc tags, and {self._btf_source()} does not list kfunc sets: they are "
                "read from the .BTF_ids of a vmlinux or vmlinuz with the same BTF, and none "
                f"was found (install the kernel image); loading the program on {self.k.kver} "
                "tells",
                ext.name,
            )
            return
        if problem:
            yield self._check(
                Area.KFUNC,
                Outcome.FAIL,
                subject,
                f"{where}, but {problem}",
                code=ReasonCode.KFUNC_MISSING,
                symbol=ext.name,
            )
            return
        proto = btf.type(btf.type(func_id).type)
        if len(proto.params) > MAX_KFUNC_ARGS:
            yield self._check(
                Area.KFUNC,
                Outcome.FAIL,
                subject,
                f"{where}, but it takes {len(proto.params)} arguments; BPF passes at most 5",
                code=ReasonCode.KFUNC_PROTO,
                symbol=ext.name,
            )
            return
        compat = func_protos_compatible(self.obj.btf, ext.btf_id, btf, func_id)  # type: ignore[arg-type]
        if not compat.compatible:
            yield self._check(
                Area.KFUNC,
                Outcome.FAIL,
                subject,
                f"{where}, but the prototype is incompatible: {compat.reason}",
                code=ReasonCode.KFUNC_PROTO,
                symbol=ext.name,
            )
            return
        self.present_kfuncs.append(ext.name)
        if self._address_taken(ext) and not self.k.has_kfunc_tags:
            # libbpf turns the load into a BTF id of a FUNC; verifiers before about 6.4 take
            # only VARs there. Only the set8 kfunc flag (6.8+), which pahole's tags need, shows
            # a verifier new enough.
            yield self._missing_data(
                Area.KFUNC,
                subject,
                f"{where}; the program takes its address (bpf_ksym_exists()), which verifiers "
                f"before about Linux 6.4 refuse, and nothing in {self.k.kver}'s BTF shows a newer "
                "verifier (bpf_kfunc tags, from about 6.11, would): loading the program on "
                f"{self.k.kver} tells",
                ext.name,
            )
            return
        yield self._check(
            Area.KFUNC,
            Outcome.NOTE if module else Outcome.PASS,
            subject,
            f"{where}; prototype compatible",
            symbol=ext.name,
        )

    def _not_a_kfunc(self, btf: BTF, func_id: int, module: str | None) -> str | None:
        """Why a FUNC that exists is not callable as a kfunc, where K's data can tell;
        _UNDECIDED where it cannot."""
        if self.k.has_kfunc_tags:
            tags = [t for t in btf.decl_tags(func_id) if t.name == "bpf_kfunc"]
            return None if tags else "its BTF does not tag it as a kfunc (bpf_kfunc)"
        if module is not None:
            if btf.name(func_id) not in self.k.module_kfuncs:
                return f"module {module} does not register it as a kfunc"
            return None
        ids = self.k.vmlinux_btf_ids
        if ids is None:
            return _UNDECIDED
        if func_id not in ids:
            return (
                "it is in none of vmlinux's kfunc sets: it is a plain kernel function, which BPF "
                "programs may not call"
            )
        return None

    def _address_taken(self, ext: Extern) -> bool:
        return any(ref.name == ext.name for f in self._functions() for ref in f.extern_refs)

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

    def _ksyms(self) -> Iterable[Check]:
        for ext in self.obj.ksyms:
            if ext.kind is ExternKind.VAR:
                yield from self._typed_ksym(ext) if ext.typed else self._typeless_ksym(ext)

    def _typed_ksym(self, ext: Extern) -> Iterable[Check]:
        subject = f"ksym {ext.name}"
        vmlinux = self.k.vmlinux
        assert vmlinux is not None and self.obj.btf is not None
        btf, var_ids, module = vmlinux, list(vmlinux.find(ext.name, Kind.VAR)), None
        if not var_ids:
            module = self.k.module_of_symbol(ext.name)
            module_btf = self.k.module_btf(module) if module else None
            if module_btf is not None:
                btf = module_btf
                var_ids = [i for i in btf.find(ext.name, Kind.VAR) if i >= btf.start_id]
        if not var_ids:
            yield self._absent_ksym(
                ext,
                subject,
                "absent, but weak: its address reads as 0",
                f"no variable {ext.name} in {self.k.kver}'s BTF",
            )
            return
        self._set_extern(ext, NONZERO)
        if module:
            self.modules.add(module)
        target_type = btf.resolve(btf.type(var_ids[0]).type)
        # libbpf compares the types with modifiers and typedefs skipped on both sides
        local_type = self.obj.btf.resolve(ext.btf_type)
        if types_are_compat(self.obj.btf, local_type, btf, target_type) <= 0:
            yield self._check(
                Area.KSYM,
                Outcome.FAIL,
                subject,
                f"present in {self.k.kver}, but its type is incompatible with the program's",
                code=ReasonCode.KSYM_MISSING,
                symbol=ext.name,
            )
            return
        where = f"in module {module} (must be loaded)" if module else "in vmlinux"
        yield self._check(
            Area.KSYM,
            Outcome.PASS,
            subject,
            f"present {where}, with a compatible type",
            symbol=ext.name,
        )

    def _absent_ksym(self, ext: Extern, subject: str, if_weak: str, if_not: str) -> Check:
        """A ksym the kernel lacks: its address is 0, which only a weak one may be."""
        self._set_extern(ext, 0)
        if ext.weak:
            return self._check(Area.KSYM, Outcome.PASS, subject, if_weak, symbol=ext.name)
        return self._check(
            Area.KSYM,
            Outcome.FAIL,
            subject,
            if_not,
            code=ReasonCode.KSYM_MISSING,
            symbol=ext.name,
        )

    def _typeless_ksym(self, ext: Extern) -> Iterable[Check]:
        subject = f"ksym {ext.name} (typeless)"
        system_map = self.k.system_map
        if system_map is None:
            self._set_extern(ext, NONZERO if ext.weak else 0)
            yield self._missing_data(Area.KSYM, subject, self._no_system_map(), ext.name)
            return
        symbol = system_map.get(ext.name)
        data_symbol = symbol is not None and symbol.type not in _TEXT_SYMBOL_TYPES
        if data_symbol and not self.k.system_map_is_kallsyms:
            kallsyms_all = self.k.config.get("KALLSYMS_ALL") if self.k.config else None
            if kallsyms_all is None:
                yield self._missing_data(
                    Area.KSYM,
                    subject,
                    f"a data symbol; without {self.k.kver}'s config, whether kallsyms lists it "
                    f"(CONFIG_KALLSYMS_ALL) is unknown: install the config as /boot/config-"
                    f"{self.k.kver}",
                    ext.name,
                )
                return
            if kallsyms_all != "y":
                symbol = None  # data symbols are not in kallsyms, where libbpf looks
        if symbol is None:
            yield self._absent_ksym(
                ext,
                subject,
                "absent, but weak",
                f"not in {self.k.kver}'s kallsyms (System.map and CONFIG_KALLSYMS_ALL)",
            )
            return
        self._set_extern(ext, NONZERO)
        yield self._check(
            Area.KSYM, Outcome.PASS, subject, "present in System.map", symbol=ext.name
        )

    def _core(self) -> Iterable[Check]:
        if not self.obj.core_relos or self.obj.btf is None:
            return
        assert self.k.vmlinux is not None
        resolver = CoreResolver(self.obj.btf, target_index(self.k.vmlinux))
        for site in self.obj.core_relos:
            result = resolver.resolve_relo(site)
            slot = (site.section, site.insn_index)
            if result.fatal:
                yield self._check(
                    Area.CORE,
                    Outcome.FAIL,
                    f"relocation {result.name}",
                    f"libbpf cannot relocate it on {self.k.kver} ({result.status}: "
                    f"{result.reason}), so it refuses to load the object",
                    code=ReasonCode.CORE_RELO,
                    symbol=result.name,
                    program=site.program,
                )
            elif result.ok and not self._size_change_poisons(site.section, site.insn_index, result):
                self.known[slot] = result.value if result.value is not None else 0
            else:
                why, guard = self._core_gap(result)
                subject = f"relocation {result.name}"
                self.poisoned[slot] = (ReasonCode.CORE_RELO, subject, why, guard)
        if not any(code is ReasonCode.CORE_RELO for code, *_ in self.poisoned.values()):
            yield self._check(
                Area.CORE,
                Outcome.PASS,
                "CO-RE relocations",
                f"all {len(self.obj.core_relos)} resolve on {self.k.kver}",
            )

    def _core_gap(self, result: CoreResult) -> tuple[str, str | None]:
        """Why libbpf poisons a relocation's instruction, in words, and the test that would
        let the program skip it."""
        k = self.k.kver
        if result.ok:  # it matched, but a load or store of the field changed size
            return (
                f"{result.wanted} changed size on {k} ({result.orig_mem_size} to "
                f"{result.new_mem_size} bytes), which libbpf accepts only for pointers and "
                "unsigned integers",
                None,
            )
        if result.kind in ENUMVAL_KINDS:
            return f"{k} has no {result.wanted}", "bpf_core_enum_value_exists()"
        if result.kind in FIELD_KINDS:
            return f"{k} has no {result.wanted} of a compatible type", "bpf_core_field_exists()"
        if result.kind is CoreReloKind.TYPE_MATCHES:
            return f"{k} has no {result.wanted}", "bpf_core_type_matches()"
        return f"{k} has no {result.wanted}", "bpf_core_type_exists()"

    def _size_change_poisons(self, section: str, index: int, result: CoreResult) -> bool:
        """libbpf poisons a memory access whose field changed size."""
        if not result.mem_size_change_fails:
            return False
        func = self.obj.function_at(section, index)
        if func is None:
            return False
        insn = func.instructions[index - func.insn_start]
        return insn.cls in _MEMORY_CLASSES

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
            reach = reachability(self.obj, program, self.known)
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

    def _attach_targets(self) -> Iterable[Check]:
        for program in self.obj.programs:
            check = self._attach_target(program)
            if check is not None:
                yield check

    def _attach_target(self, program: Function) -> Check | None:
        info = program.info
        if not info.needs_kernel_target or not info.lookup_name:
            return None
        vmlinux = self.k.vmlinux
        assert vmlinux is not None
        name = info.lookup_name
        subject = f"attach target {info.section}"

        kind = info.target_kind
        # kprobes and (raw) tracepoints load whatever their target: only attaching fails
        attach_only = kind not in (TargetKind.BTF_FUNC, TargetKind.BTF_TYPEDEF)

        def result(found: bool, where: str, why: str | None = None) -> Check:
            """`why`: why it cannot attach, when that is not the target's absence."""
            if found:
                return self._check(
                    Area.ATTACH,
                    Outcome.PASS,
                    subject,
                    f"{name} {where}",
                    symbol=name,
                    program=program.name,
                )
            detail = why or f"{name} is absent from {self.k.kver}"
            return self._check(
                Area.ATTACH,
                Outcome.CANNOT_ATTACH if attach_only else Outcome.FAIL,
                subject,
                f"{detail}: the program loads, but cannot attach" if attach_only else detail,
                code=ReasonCode.ATTACH_TARGET,
                symbol=name,
                program=program.name,
            )

        if kind is TargetKind.BTF_FUNC:
            found = self._find_func(name, info.module, only=True)
            if found is not None and found[2]:
                self.modules.add(found[2])
            return result(found is not None, "is a function in the kernel's BTF")
        if kind in (TargetKind.BTF_TYPEDEF, TargetKind.RAW_TP):
            typedef = name if name.startswith("btf_trace_") else f"btf_trace_{name}"
            return result(bool(vmlinux.find(typedef, Kind.TYPEDEF)), "is a BTF tracepoint")
        if kind is TargetKind.TRACEPOINT:
            event = name.split("/")[-1]
            if name.startswith("syscalls/"):
                syscall = (
                    event.split("_", 2)[-1]
                    if event.startswith(("sys_enter_", "sys_exit_"))
                    else event
                )
                funcs = (f"__x64_sys_{syscall}", f"__se_sys_{syscall}", f"__do_sys_{syscall}")
                return result(
                    any(vmlinux.find(f, Kind.FUNC) for f in funcs), "is a syscall with tracepoints"
                )
            return result(bool(vmlinux.find(f"btf_trace_{event}", Kind.TYPEDEF)), "is a tracepoint")
        if kind in (TargetKind.KSYM, TargetKind.SYSCALL):
            symbols = (
                [name] if kind is TargetKind.KSYM else [f"__x64_sys_{name}", f"__se_sys_{name}"]
            )
            config = self.k.config
            if config is not None and config.get("KPROBES") == "n":
                why = f"{self.k.kver} is built without kprobes (CONFIG_KPROBES is not set)"
                return result(False, "", why)
            system_map = self.k.system_map
            if system_map is not None and any(s in system_map for s in symbols):
                return result(True, f"is in {self.k.kver}'s symbols")
            if any(vmlinux.find(s, Kind.FUNC) for s in symbols):
                return result(True, "is a function in the kernel's BTF")
            # System.map lists vmlinux alone: a module's function is found in its BTF
            in_module = next((f for f in map(self._find_func, symbols) if f and f[2]), None)
            if in_module is not None:
                self.modules.add(str(in_module[2]))
                return result(True, f"is a function of module {in_module[2]} (must be loaded)")
            if system_map is not None:
                return result(False, "")
            return self._missing_data(
                Area.ATTACH,
                subject,
                f"{name} is not a BTF function of {self.k.kver}, and whether kprobes can attach "
                f"there is unknown: {self._no_system_map()}",
                name,
            )
        return None

    # --- tracing prototypes ------------------------------------------------------------------

    def _attach_protos(self) -> Iterable[Check]:
        for program in self.obj.programs:
            found = self._target_proto(program)
            if found is not None:
                yield from self._attach_proto(program, *found)

    def _target_proto(self, program: Function) -> tuple[BTF, str, tuple[Param, ...], int] | None:
        """K's prototype of a BTF tracing program's target: (btf, C text, arguments, the last
        slot the context may be read at); None for other programs or an absent target."""
        info = program.info
        name = info.lookup_name
        vmlinux = self.k.vmlinux
        assert vmlinux is not None
        if (
            info.attach_type is AttachType.TRACE_RAW_TP
            and info.target_kind is TargetKind.BTF_TYPEDEF
        ):
            typedef = name if name.startswith("btf_trace_") else f"btf_trace_{name}"
            ids = vmlinux.find(typedef, Kind.TYPEDEF)
            proto = _func_proto(vmlinux, ids[0]) if ids else None
            if proto is None or not proto.params:
                return None
            params = proto.params[1:]  # the first is the tracepoint's `void *__data`
            shown = typedef[len("btf_trace_") :]
            return vmlinux, _proto_text(vmlinux, shown, params), params, len(params) - 1
        tracing = (AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN)
        if info.attach_type not in tracing or info.target_kind is not TargetKind.BTF_FUNC:
            return None
        found = self._find_func(name, info.module, only=bool(info.module))
        if found is None:
            return None
        btf, func_id, _module = found
        proto = _func_proto(btf, func_id)
        if proto is None:
            return None
        # fexit and fmod_ret read the return value in the slot after the last argument
        last = len(proto.params) - (info.attach_type is AttachType.TRACE_FENTRY)
        return btf, _proto_text(btf, name, proto.params), proto.params, last

    def _attach_proto(
        self, program: Function, btf: BTF, shown: str, params: tuple[Param, ...], last: int
    ) -> Iterable[Check]:
        subject = f"arguments of {program.info.section}"
        reach = reachability(self.obj, program, self.known)
        reachable = None
        if reach.decided:
            reachable = {i for s, i in reach.reachable if s == program.section}
        use = context_use(program, reachable)
        problems = []
        for slot, index in use.reads:
            if slot > last:
                problems.append(
                    f"it reads argument slot {slot} (context offset {slot * 8}) at instruction "
                    f"{index}, but {self.k.kver}'s prototype has {len(params)} argument"
                    f"{'s' if len(params) != 1 else ''}: {shown}"
                )
        for slot, index in use.derefs:
            if slot >= len(params):
                continue  # reported above, or the return value of fexit
            problem = self._deref_problem(btf, params[slot], slot, (program.section, index))
            if problem is not None:
                problems.append(f"{problem}; {self.k.kver}'s prototype: {shown}")
        if not problems:
            if use.reads:
                slots = sorted({s for s, _ in use.reads})
                yield self._check(
                    Area.ATTACH,
                    Outcome.PASS,
                    subject,
                    f"reads argument slots {', '.join(map(str, slots))}, which {self.k.kver}'s "
                    f"prototype has: {shown}",
                    symbol=program.info.lookup_name,
                    program=program.name,
                )
            return
        undecided = not reach.decided
        for problem in problems:
            detail = problem + ": the kernel's verifier would reject the program"
            if undecided:
                detail = f"{problem}; whether that code can run is unknown: " + "; ".join(
                    reach.undecidable
                )
            yield self._check(
                Area.ATTACH,
                Outcome.UNDECIDED if undecided else Outcome.FAIL,
                subject,
                detail,
                code=ReasonCode.ATTACH_PROTO,
                symbol=program.info.lookup_name,
                program=program.name,
            )

    def _deref_problem(self, btf: BTF, param: Param, slot: int, where: Slot) -> str | None:
        """Why dereferencing argument `slot` at `where` fails on K, or None."""
        index = where[1]
        target_id = btf.resolve(param.type) if param.type else 0
        named = f"argument {slot}" + (f" ({param.name})" if param.name else "")
        kernel_type = describe(btf, param.type)
        if target_id == 0 or btf.kind(target_id) is not Kind.PTR:
            return (
                f"it dereferences {named} at instruction {index}, which is {kernel_type} on "
                f"{self.k.kver}: a scalar, not a pointer"
            )
        pointee = btf.resolve(btf.type(target_id).type)
        if pointee == 0 or btf.kind(pointee) not in (Kind.STRUCT, Kind.UNION):
            return None
        expected = self._relo_root(where)
        actual = essential_name(btf.name(pointee))
        if expected is not None and expected != actual:
            return (
                f"it reads {named} as struct {expected} at instruction {index}, but "
                f"{self.k.kver} passes {kernel_type}"
            )
        return None

    def _relo_root(self, where: Slot) -> str | None:
        """The struct a CO-RE field relocation at an instruction starts from, if there is one."""
        own = self.obj.btf
        for relo in self.obj.core_relos:
            at = (relo.section, relo.insn_index)
            if at == where and relo.kind in FIELD_KINDS and own is not None:
                root = own.resolve(relo.type_id)
                if own.kind(root) in (Kind.STRUCT, Kind.UNION):
                    return essential_name(own.name(root))
        return None


def _func_proto(btf: BTF, type_id: int) -> Type | None:
    """The FUNC_PROTO a FUNC, or a typedef of a pointer to one, stands for."""
    seen = 0
    while type_id and seen < 16:
        t = btf.type(type_id)
        if t.kind is Kind.FUNC_PROTO:
            return t
        if t.kind not in (Kind.FUNC, Kind.TYPEDEF, Kind.PTR, Kind.CONST, Kind.VOLATILE):
            return None
        type_id, seen = t.type, seen + 1
    return None


def _proto_text(btf: BTF, name: str, params: tuple[Param, ...]) -> str:
    args = ", ".join(describe(btf, p.type) + (f" {p.name}" if p.name else "") for p in params)
    return f"{name}({args or 'void'})"
