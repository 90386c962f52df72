"""CO-RE checks: each relocation resolved on K by libbpf's rules; what it cannot resolve poisons
an instruction."""

from __future__ import annotations

from collections.abc import Iterable

from weak_bpf.engine.checks.base import MEMORY_CLASSES, CheckerBase
from weak_bpf.engine.corerelo import (
    ENUMVAL_KINDS,
    FIELD_KINDS,
    CoreResolver,
    CoreResult,
    target_index,
)
from weak_bpf.model import Area, Check, Outcome, ReasonCode


class CoreChecks(CheckerBase):
    def _core(self) -> Iterable[Check]:
        if not self.obj.core_relos or self.obj.btf is None:
            return
        assert self.k.vmlinux is not None
        resolver = CoreResolver(self.obj.btf, target_index(self.k.vmlinux), self.memo.local_specs)
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
        # type_exists and type_matches resolve to 0 when nothing matches, as enumval_exists and
        # field_exists do: only type sizes and ids are poisoned
        return f"{k} has no {result.wanted}", "bpf_core_type_exists()"

    def _size_change_poisons(self, section: str, index: int, result: CoreResult) -> bool:
        """libbpf poisons a memory access whose field changed size."""
        if not result.mem_size_change_fails:
            return False
        func = self.obj.function_at(section, index)
        if func is None:
            return False
        insn = func.instructions[index - func.insn_start]
        return insn.cls in MEMORY_CLASSES
