"""ksym checks: typed `__ksym` variables against K's BTF, typeless ones against its symbols."""

from __future__ import annotations

from collections.abc import Iterable

from weak_bpf.engine.btfcompat import types_are_compat
from weak_bpf.engine.checks.base import TEXT_SYMBOL_TYPES, CheckerBase
from weak_bpf.engine.reachability import NONZERO
from weak_bpf.model import Area, Check, Outcome, ReasonCode
from weak_bpf.parsers.btf import Kind
from weak_bpf.parsers.objvalues import Extern, ExternKind


class KsymChecks(CheckerBase):
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
        data_symbol = symbol is not None and symbol.type not in TEXT_SYMBOL_TYPES
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
