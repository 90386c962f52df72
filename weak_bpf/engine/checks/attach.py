"""Attach checks: each program's target on K, and the arguments a tracing program reads from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from weak_bpf.engine.btfcompat import describe, essential_name
from weak_bpf.engine.checks.errinject import ErrorInjectionChecks
from weak_bpf.engine.corerelo import FIELD_KINDS
from weak_bpf.engine.reachability import Slot
from weak_bpf.model import Area, Check, Outcome, ReasonCode
from weak_bpf.parsers.btf import BTF, Kind, Param, Type
from weak_bpf.parsers.objvalues import Function
from weak_bpf.parsers.sections import AttachType, TargetKind


class AttachChecks(ErrorInjectionChecks):
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

        def tracepoint(event: str, what: str) -> Check:
            """`what` K defines as btf_trace_<event>, in vmlinux or in a module."""
            found = self._find_tracepoint(event)
            module = found[2] if found is not None else None
            if module is not None:
                self.modules.add(module)
                return result(True, f"is a {what} of module {module} (must be loaded)")
            return result(found is not None, f"is a {what}")

        config = self.k.config
        if attach_only and config is not None and config.get("BPF_EVENTS") == "n":
            return self._check(
                Area.ATTACH,
                Outcome.FAIL,
                subject,
                f"{self.k.kver} is built without CONFIG_BPF_EVENTS: it has no kprobe or "
                "tracepoint programs, so the program cannot load",
                code=ReasonCode.ATTACH_TARGET,
                symbol=name,
                program=program.name,
            )
        if kind is TargetKind.BTF_FUNC:
            found = self._find_func(name, info.module, only=True)
            if found is not None and found[2]:
                self.modules.add(found[2])
            if found is not None and self._needs_error_injection(program):
                refused = self._error_injection(program, subject, found[2])
                if refused is not None:
                    return refused
                what = "sleepable programs" if info.sleepable else "fmod_ret programs"
                where = f"is a function in the kernel's BTF, where {self.k.kver} lets {what} attach"
                return result(True, where)
            return result(found is not None, "is a function in the kernel's BTF")
        if kind in (TargetKind.BTF_TYPEDEF, TargetKind.RAW_TP):
            return tracepoint(name, "BTF tracepoint")
        if kind is TargetKind.TRACEPOINT:
            event = name.split("/")[-1]
            if name.startswith("syscalls/"):
                syscall = (
                    event.split("_", 2)[-1]
                    if event.startswith(("sys_enter_", "sys_exit_"))
                    else event
                )
                funcs = (*self._syscall_symbols(syscall), f"__do_sys_{syscall}")
                return result(
                    any(vmlinux.find(f, Kind.FUNC) for f in funcs), "is a syscall with tracepoints"
                )
            return tracepoint(event, "tracepoint")
        if kind in (TargetKind.KSYM, TargetKind.SYSCALL):
            symbols = [name] if kind is TargetKind.KSYM else self._syscall_symbols(name)
            if config is not None and config.get("KPROBES") == "n":
                why = f"{self.k.kver} is built without kprobes (CONFIG_KPROBES is not set)"
                return result(False, "", why)
            system_map = self.k.system_map
            if system_map is not None:  # where kprobes look: a BTF FUNC may be a clone's name
                if any(s in system_map for s in symbols):
                    return result(True, f"is in {self.k.kver}'s symbols")
                # System.map lists vmlinux alone: a module's function is found in its BTF (the
                # index of every module's functions is built once, on this first need)
                in_module = next((f for f in map(self._find_func, symbols) if f and f[2]), None)
                if in_module is not None:
                    self.modules.add(str(in_module[2]))
                    return result(True, f"is a function of module {in_module[2]} (must be loaded)")
                return result(False, "")
            if any(vmlinux.find(s, Kind.FUNC) for s in symbols):
                return result(True, "is a function in the kernel's BTF")
            return self._missing_data(
                Area.ATTACH,
                subject,
                f"{name} is not a BTF function of {self.k.kver}, and whether kprobes can attach "
                f"there is unknown: {self._no_system_map()}",
                name,
                program.name,
            )
        return None

    def _find_tracepoint(self, name: str) -> tuple[BTF, int, str | None] | None:
        """Where K defines BTF tracepoint `name` (its typedef btf_trace_<name>)."""
        return self._find_type(_tp_typedef(name), Kind.TYPEDEF)

    def _find_type(self, name: str, kind: Kind) -> tuple[BTF, int, str | None] | None:
        """Where K defines a type `name` of `kind`: (btf, id, module or None for vmlinux).
        libbpf looks in vmlinux, then in the modules."""
        vmlinux = self.k.vmlinux
        assert vmlinux is not None
        ids = vmlinux.find(name, kind)
        if ids:
            return vmlinux, ids[0], None
        module = self.k.module_of_type(name, kind)
        btf = self.k.module_btf(module) if module is not None else None
        own = [i for i in btf.find(name, kind) if i >= btf.start_id] if btf else []
        return (btf, own[0], module) if btf is not None and own else None

    def _syscall_symbols(self, syscall: str) -> list[str]:
        """The kernel symbols of a syscall: the arch's wrapper (as libbpf names it for
        ksyscall), then the generic one. An unknown arch tries every wrapper."""
        arch = getattr(self.k.artifacts, "arch", None)
        prefix = _SYSCALL_PREFIXES.get(arch or "")
        prefixes = (prefix,) if prefix else tuple(_SYSCALL_PREFIXES.values())
        return [f"__{p}_sys_{syscall}" for p in prefixes] + [f"__se_sys_{syscall}"]

    # --- tracing prototypes ------------------------------------------------------------------

    def _attach_protos(self) -> Iterable[Check]:
        for program in self.obj.programs:
            found = self._target_proto(program)
            if found is not None:
                yield from self._attach_proto(program, found)

    def _target_proto(self, program: Function) -> TargetProto | None:
        """K's prototype of a BTF tracing program's target; None for other programs or an
        absent target."""
        info = program.info
        name = info.lookup_name
        vmlinux = self.k.vmlinux
        assert vmlinux is not None
        if (
            info.attach_type is AttachType.TRACE_RAW_TP
            and info.target_kind is TargetKind.BTF_TYPEDEF
        ):
            tracepoint = self._find_tracepoint(name)
            if tracepoint is None:
                return None
            btf, typedef_id, _module = tracepoint
            proto = _func_proto(btf, typedef_id)
            if proto is None or not proto.params:
                return None
            params = proto.params[1:]  # the first is the tracepoint's `void *__data`
            return TargetProto.of(btf, _tp_typedef(name)[len("btf_trace_") :], params, None)
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
        returns = info.attach_type is not AttachType.TRACE_FENTRY
        ret = Param("the return value", proto.type) if returns else None
        return TargetProto.of(btf, name, proto.params, ret)

    def _attach_proto(
        self, program: Function, proto: TargetProto, symbol: str | None = None
    ) -> Iterable[Check]:
        """Hold the program's reads of its context against K's prototype of its target
        (`symbol`, by default the program's target)."""
        symbol = symbol or program.info.lookup_name
        subject = f"arguments of {program.info.section}"
        reach = self.memo.reachability(program, self.known)
        reachable = None
        if reach.decided:
            reachable = {i for s, i in reach.reachable if s == program.section}
        use = self.memo.context_use(program, reachable)
        k = self.k.kver
        problems = []
        for slot, index in use.reads:
            if proto.holds(slot) is None:
                problems.append(
                    f"it reads argument slot {slot} (context offset {slot * 8}) at instruction "
                    f"{index}, but {k}'s prototype has {proto.count()}: {proto.shown}"
                )
        for slot, index in use.derefs:
            param = proto.holds(slot)
            if param is not None:
                problem = self._deref_problem(proto, param, slot, (program.section, index))
                if problem is not None:
                    problems.append(f"{problem}; {k}'s prototype: {proto.shown}")
        if not problems:
            if use.reads:
                slots = sorted({s for s, _ in use.reads})
                ret = len(proto.slots) if proto.ret is not None else None
                yield self._check(
                    Area.ATTACH,
                    Outcome.PASS,
                    subject,
                    f"reads argument slots {', '.join(map(str, slots))}, which {k}'s "
                    f"prototype has: {proto.shown}"
                    + (f" (slot {ret} is its return value)" if ret in slots else ""),
                    symbol=symbol,
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
                symbol=symbol,
                program=program.name,
            )

    def _deref_problem(
        self, proto: TargetProto, param: Param, slot: int, where: Slot
    ) -> str | None:
        """Why dereferencing what slot `slot` holds (`param`) at `where` fails on K, or None."""
        btf, index = proto.btf, where[1]
        target_id = btf.resolve(param.type) if param.type else 0
        named = param.name if param.name == "the return value" else f"argument slot {slot}"
        if param.name and param.name != "the return value":
            named += f" ({param.name})"
        kernel_type = describe(btf, param.type)
        if target_id == 0 or btf.kind(target_id) is not Kind.PTR:
            return (
                f"it dereferences {named} at instruction {index}, which is {kernel_type} on "
                f"{self.k.kver}: a scalar, not a pointer"
            )
        pointee = btf.resolve(btf.type(target_id).type)
        if pointee == 0 or btf.kind(pointee) not in (Kind.STRUCT, Kind.UNION):
            # the verifier gives tracing programs pointers to structs only: a pointer to void
            # or to an integer is a scalar, any other is refused
            return (
                f"it dereferences {named} at instruction {index}, which is {kernel_type} on "
                f"{self.k.kver}: not a pointer to a struct, which the verifier does not let a "
                "tracing program dereference"
            )
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


# the syscall wrappers' prefixes by RPM architecture (libbpf's arch_specific_syscall_pfx)
_SYSCALL_PREFIXES = {
    "x86_64": "x64",
    "aarch64": "arm64",
    "s390x": "s390x",
    "ppc64le": "powerpc",
    "riscv64": "riscv",
}


@dataclasses.dataclass(frozen=True)
class TargetProto:
    """K's prototype of a tracing program's target, as the program's context lays it out: one
    8-byte slot per argument, two for a struct of 9 to 16 bytes passed by value, then (fexit,
    fmod_ret) the return value."""

    btf: BTF
    shown: str  # in C, for messages
    slots: tuple[Param, ...]  # the argument each slot holds
    params: int
    ret: Param | None

    @classmethod
    def of(cls, btf: BTF, name: str, params: tuple[Param, ...], ret: Param | None) -> TargetProto:
        slots: list[Param] = []
        for param in params:
            resolved = btf.resolve(param.type) if param.type else 0
            wide = resolved and btf.kind(resolved) in (Kind.STRUCT, Kind.UNION)
            slots += [param] * (2 if wide and btf.type_size(resolved) > 8 else 1)
        return cls(btf, _proto_text(btf, name, params), tuple(slots), len(params), ret)

    def holds(self, slot: int) -> Param | None:
        """What the context holds at `slot`; None past the end (the verifier refuses it)."""
        if 0 <= slot < len(self.slots):
            return self.slots[slot]
        return self.ret if slot == len(self.slots) else None

    def count(self) -> str:
        n = self.params
        text = f"{n} argument{'s' if n != 1 else ''}"
        if len(self.slots) != n:
            text += f" in {len(self.slots)} slots"
        return text + (" and a return value" if self.ret is not None else "")


def _tp_typedef(name: str) -> str:
    """The BTF typedef of a raw tracepoint: btf_trace_<name>."""
    return name if name.startswith("btf_trace_") else f"btf_trace_{name}"


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
