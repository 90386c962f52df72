"""kfunc checks: each `extern ... __ksym` function, in K's vmlinux or module BTF, registered as a
kfunc, with a prototype compatible by libbpf's rules."""

from __future__ import annotations

from collections.abc import Iterable

from weak_bpf.engine.btfcompat import essential_name, func_protos_compatible
from weak_bpf.engine.checks.base import MAX_KFUNC_ARGS, UNDECIDED, CheckerBase
from weak_bpf.engine.reachability import NONZERO
from weak_bpf.model import Area, Check, Outcome, ReasonCode
from weak_bpf.parsers.btf import BTF
from weak_bpf.parsers.objvalues import Extern, ExternKind


class KfuncChecks(CheckerBase):
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
        if problem is UNDECIDED:
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
        UNDECIDED where it cannot."""
        if self.k.has_kfunc_tags:
            tags = [t for t in btf.decl_tags(func_id) if t.name == "bpf_kfunc"]
            return None if tags else "its BTF does not tag it as a kfunc (bpf_kfunc)"
        if module is not None:
            if btf.name(func_id) not in self.k.module_kfuncs:
                return f"module {module} does not register it as a kfunc"
            return None
        ids = self.k.vmlinux_btf_ids
        if ids is None:
            return UNDECIDED
        if func_id not in ids:
            return (
                "it is in none of vmlinux's kfunc sets: it is a plain kernel function, which BPF "
                "programs may not call"
            )
        return None

    def _address_taken(self, ext: Extern) -> bool:
        return any(ref.name == ext.name for f in self._functions() for ref in f.extern_refs)
