"""struct_ops checks: the kernel struct an object fills with its programs (tcp_congestion_ops,
sched_ext_ops, ...). libbpf registers it only where K has the struct and its value type
`bpf_struct_ops_<name>`, and has every member the object sets, as large as the object makes it;
each program gets the arguments of its member's prototype on K, and must not read past them."""

from __future__ import annotations

from collections.abc import Iterable

from weak_bpf.engine.btfcompat import essential_name
from weak_bpf.engine.checks.attach import AttachChecks, TargetProto
from weak_bpf.model import Area, Check, Outcome, ReasonCode
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.objstructops import pointed_func_proto
from weak_bpf.parsers.objvalues import Function, StructOps
from weak_bpf.parsers.sections import TargetKind

VALUE_PREFIX = "bpf_struct_ops_"  # the kernel's wrapper of each struct_ops struct


class StructOpsChecks(AttachChecks):
    def _struct_ops(self) -> Iterable[Check]:
        yield from self._unbound_programs()
        for ops in self.obj.struct_ops:
            if not ops.optional:
                yield from self._one_struct_ops(ops)

    def _unbound_programs(self) -> Iterable[Check]:
        """A struct_ops program no map's member is set to has nothing to attach to: libbpf 1.5
        and the kernel refuse it. libbpf refuses one set to two different members (the same
        member of the same struct in two maps is one)."""
        referenced: dict[str, str] = {}  # program -> a member set to it, in any map
        created: dict[str, dict[tuple[str, str], str]] = {}  # in maps created by default
        for ops in self.obj.struct_ops:
            for member in ops.members:
                if member.program is None:
                    continue
                where = f"{ops.name}.{member.name}"
                referenced.setdefault(member.program, where)
                if not ops.optional:
                    key = (essential_name(ops.type_name), member.name)
                    created.setdefault(member.program, {}).setdefault(key, where)
        for program in self.obj.programs:
            if program.info.target_kind is not TargetKind.STRUCT_OPS:
                continue
            bound = created.get(program.name, {})
            if program.name in referenced and len(bound) <= 1:
                if program.info.sleepable:
                    yield from self._sleepable(program, referenced[program.name])
                continue
            why = (
                "no struct_ops map sets a member to it: libbpf and the kernel refuse a "
                "struct_ops program with nothing to attach to"
                if program.name not in referenced
                else f"it is set to {' and '.join(bound.values())}: libbpf refuses a program set "
                "to two members"
            )
            yield self._check(
                Area.ATTACH,
                Outcome.FAIL,
                f"struct_ops program {program.name}",
                why,
                code=ReasonCode.ATTACH_TARGET,
                symbol=program.name,
                program=program.name,
            )

    def _sleepable(self, program: Function, member: str) -> Iterable[Check]:
        """Kernels before 6.4 let no struct_ops program sleep, and each struct says which of its
        callbacks may: not told by BTF."""
        yield self._check(
            Area.ATTACH,
            Outcome.UNDECIDED,
            f"struct_ops program {program.name}",
            f"it is sleepable (struct_ops.s), set to {member}: whether {self.k.kver} lets that "
            "callback sleep is not told by its BTF (kernels before 6.4 let none sleep)",
            code=ReasonCode.ATTACH_TARGET,
            symbol=program.name,
            program=program.name,
        )

    def _one_struct_ops(self, ops: StructOps) -> Iterable[Check]:
        k = self.k.kver
        name = essential_name(ops.type_name)
        subject = f"struct_ops {ops.name}"
        # as libbpf 1.7 does: the value type first, then the struct in the same BTF
        value = self._find_type(VALUE_PREFIX + name, Kind.STRUCT)
        struct_ids = value[0].find(name, Kind.STRUCT) if value is not None else []
        if value is None or not struct_ids:
            missing = VALUE_PREFIX + name if value is None else name
            yield self._fail(
                subject,
                f"{k} has no struct_ops {name} (struct {missing} is not in its BTF): libbpf "
                "cannot register the map",
                name,
            )
            return
        btf, _, module = value
        vmlinux = self.k.vmlinux
        assert vmlinux is not None
        if ops.link and not vmlinux.find("bpf_struct_ops_link_create", Kind.FUNC):
            yield self._fail(
                subject,
                f'the map is registered through a BPF link (SEC(".struct_ops.link")), which '
                f"{k} does not have (kernels before 6.4)",
                name,
            )
            return
        # What only newer libbpf accepts, the loader's libbpf decides: unknown. What the object
        # needed on its build kernel too (a .struct_ops.link map, a flavored struct name) its
        # own loader does.
        newer_libbpf: list[str] = []
        # a flavored struct name needs libbpf 1.4, which looks in modules and passes over unset
        # members a kernel lacks
        has_newer = ops.type_name != name
        if module is not None:
            self.modules.add(module)
            if not has_newer:
                newer_libbpf.append(
                    f"{k} has it in module {module}, where libbpf 1.4 and later look"
                )
        problems, unset_gone, set_gone, protos = self._members(ops, name, btf, struct_ids[0])
        for member_name, why in problems:
            yield self._fail(
                subject, f"{why}: libbpf cannot register the map", f"{name}.{member_name}"
            )
        if unset_gone and not has_newer:
            newer_libbpf.append(
                f"{k}'s {name} lacks {', '.join(unset_gone)}, which the object leaves unset and "
                "libbpf 1.4 and later pass over"
            )
        undecided = []
        if newer_libbpf:
            undecided.append(
                "; ".join(newer_libbpf) + ": older libbpf refuses the map, so whether it loads "
                "depends on the libbpf of its loader"
            )
        if set_gone:
            # a loader may clear them before loading: sched_ext's do for what a kernel lacks
            undecided.append(
                f"the object sets {', '.join(set_gone)}, which {k}'s {name} lacks: libbpf "
                "refuses the map unless its loader clears them first, as sched_ext schedulers "
                "do for the callbacks a kernel lacks"
            )
        if undecided and not problems:
            yield self._check(
                Area.ATTACH,
                Outcome.UNDECIDED,
                subject,
                "; and ".join(undecided),
                code=ReasonCode.ATTACH_TARGET,
                symbol=f"{name}.{set_gone[0]}" if set_gone else name,
            )
        elif not problems:
            detail = (
                f"{k}'s {name} has every member the object sets, of the same kind and size, as "
                f"libbpf wants; not checked: what {k}'s {name} itself takes (which data members, "
                "which callbacks it needs)"
            )
            yield self._check(Area.ATTACH, Outcome.PASS, subject, detail, symbol=name)
        for program, target, label in protos:
            yield from self._attach_proto(program, target, label)

    def _members(
        self, ops: StructOps, name: str, btf: BTF, struct_id: int
    ) -> tuple[
        list[tuple[str, str]], list[str], list[str], list[tuple[Function, TargetProto, str]]
    ]:
        """libbpf's rules for each member K has: no bitfield on either side, the same kind, the
        same size for a non-pointer (set or not), a function pointer for a program. Returns the
        (member, why) refused, the members K lacks that the object leaves unset and that it
        sets, and the programs' prototypes on K."""
        k = self.k.kver
        on_k = {m.name: m for m in btf.type(struct_id).members}
        problems: list[tuple[str, str]] = []
        unset_gone: list[str] = []
        set_gone: list[str] = []
        protos: list[tuple[Function, TargetProto, str]] = []
        local = self.obj.btf
        assert local is not None  # a struct_ops map is read from the object's BTF
        for member in ops.members:
            theirs = on_k.get(member.name)
            label = f"{name}.{member.name}"
            if theirs is None:
                if member.zero:
                    unset_gone.append(member.name)
                else:
                    set_gone.append(member.name)
                continue
            if member.bitfield or theirs.bitfield_size:
                problems.append((member.name, f"{label} is a bitfield, which libbpf cannot fill"))
                continue
            ours_kind, theirs_kind = _kind(local, member.type_id), _kind(btf, theirs.type)
            if ours_kind is not theirs_kind:
                problems.append(
                    (
                        member.name,
                        f"{label} is a {ours_kind.name.lower()} in the object and a "
                        f"{theirs_kind.name.lower()} on {k}",
                    )
                )
                continue
            if ours_kind is Kind.PTR:
                if member.program is None:
                    continue
                proto = pointed_func_proto(btf, theirs.type)
                program = next((p for p in self.obj.programs if p.name == member.program), None)
                if proto is None:
                    problems.append((member.name, f"{label} is no function pointer on {k}"))
                elif program is None or program.info.target_kind is not TargetKind.STRUCT_OPS:
                    problems.append(
                        (
                            member.name,
                            f"{label} is set to {member.program}, which is no struct_ops program",
                        )
                    )
                else:
                    protos.append((program, TargetProto.of(btf, label, proto.params, None), label))
                continue
            size = btf.type_size(theirs.type)
            if size != member.size:
                problems.append(
                    (member.name, f"{label} is {member.size} bytes in the object and {size} on {k}")
                )
        return problems, unset_gone, set_gone, protos

    def _fail(self, subject: str, detail: str, symbol: str) -> Check:
        return self._check(
            Area.ATTACH, Outcome.FAIL, subject, detail, code=ReasonCode.ATTACH_TARGET, symbol=symbol
        )


def _kind(btf: BTF, type_id: int) -> Kind:
    """A member's kind, past modifiers and typedefs."""
    resolved = btf.resolve(type_id)
    return btf.kind(resolved) if resolved else Kind.UNKN
