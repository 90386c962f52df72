"""What one object's checks compute that depends on the object alone, or on the object and
values that kernels of one series mostly share: kept across the kernels it is judged on."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from weak_bpf.engine.corerelo import LocalKey, LocalSpec
from weak_bpf.engine.ctxaccess import ContextUse, context_use
from weak_bpf.engine.reachability import KnownValue, Reachability, Slot, reachability
from weak_bpf.parsers.objvalues import BpfObject, Function


class ObjectMemo:
    """Answers for one object, reused from kernel to kernel; the answers are pure functions of
    their keys, so a memo never changes a verdict. Use one per object."""

    def __init__(self, obj: BpfObject) -> None:
        self.obj = obj
        self._reach: dict[tuple[str, str, frozenset[tuple[Slot, KnownValue]]], Reachability] = {}
        self._use: dict[tuple[str, str, frozenset[int] | None], ContextUse] = {}
        self.local_specs: dict[LocalKey, LocalSpec] = {}  # for CoreResolver

    def reachability(self, program: Function, known: Mapping[Slot, KnownValue]) -> Reachability:
        key = (program.section, program.name, frozenset(known.items()))
        found = self._reach.get(key)
        if found is None:
            found = self._reach[key] = reachability(self.obj, program, known)
        return found

    def context_use(self, program: Function, reachable: Collection[int] | None) -> ContextUse:
        key = (program.section, program.name, None if reachable is None else frozenset(reachable))
        found = self._use.get(key)
        if found is None:
            found = self._use[key] = context_use(program, reachable)
        return found
