"""struct_ops checks: the kernel struct an object fills with its programs (tcp_congestion_ops,
sched_ext_ops, ...). libbpf registers it only where K has the struct and its value type
`bpf_struct_ops_<name>`, and has every member the object sets, as large as the object makes it;
each program gets the arguments of its member's prototype on K, and must not read past them."""

from __future__ import annotations

from collections.abc import Iterable

from weak_bpf.engine.btfcompat import essential_name
from weak_bpf.engine.checks.attach import AttachChecks, TargetProto
from weak_bpf.model import Area, Check, Outcome, ReasonCode
from weak_bpf.parsers.btf import BTF, Kind, Type
from weak_bpf.parsers.objvalues import Function, StructOps

VALUE_PREFIX = "bpf_struct_ops_"  # the kernel's wrapper of each struct_ops struct


class StructOpsChecks(AttachChecks):
    def _struct_ops(self) -> Iterable[Check]:
        for ops in self.obj.struct_ops:
            yield from self._one_struct_ops(ops)

    def _one_struct_ops(self, ops: StructOps) -> Iterable[Check]:
        k = self.k.kver
        name = essential_name(ops.type_name)
        subject = f"struct_ops {ops.name}"
        found = self._find_type(name, Kind.STRUCT)
        value = self._find_type(VALUE_PREFIX + name, Kind.STRUCT)
        if found is None or value is None:
            missing = name if found is None else VALUE_PREFIX + name
            yield self._check(
                Area.ATTACH,
                Outcome.FAIL,
                subject,
                f"{k} has no struct_ops {name} (struct {missing} is not in its BTF): libbpf "
                "cannot register the map",
                code=ReasonCode.ATTACH_TARGET,
                symbol=name,
            )
            return
        btf, struct_id, module = found
        # what only newer libbpf accepts: the loader's libbpf decides
        newer_libbpf: list[str] = []
        if ops.type_name != name:
            newer_libbpf.append(
                f"the object names it {ops.type_name}, which libbpf 1.4 and later take for {name}"
            )
        if module is not None:
            self.modules.add(module)
            newer_libbpf.append(f"{k} has it in module {module}, where libbpf 1.4 and later look")
        on_k = {m.name: m for m in btf.type(struct_id).members}
        problems: list[tuple[str, str]] = []  # (member, why)
        unset_gone: list[str] = []
        protos: list[tuple[Function, TargetProto, str]] = []
        for member in ops.members:
            theirs = on_k.get(member.name)
            if theirs is None:
                if member.zero:
                    unset_gone.append(member.name)
                else:
                    problems.append((member.name, f"{k}'s {name} has no member {member.name}"))
                continue
            proto = _pointed_proto(btf, theirs.type)
            if member.program is not None:
                if proto is None:
                    problems.append(
                        (member.name, f"{name}.{member.name} is no function pointer on {k}")
                    )
                    continue
                program = next((p for p in self.obj.programs if p.name == member.program), None)
                if program is not None:
                    label = f"{name}.{member.name}"
                    protos.append((program, TargetProto.of(btf, label, proto.params, None), label))
            elif not member.zero and btf.type_size(theirs.type) != member.size:
                size = btf.type_size(theirs.type)
                problems.append(
                    (
                        member.name,
                        f"it sets {name}.{member.name} as {member.size} bytes, and {k} makes it "
                        f"{size}",
                    )
                )
        for member_name, why in problems:
            yield self._check(
                Area.ATTACH,
                Outcome.FAIL,
                subject,
                f"{why}: libbpf cannot register the map",
                code=ReasonCode.ATTACH_TARGET,
                symbol=f"{name}.{member_name}",
            )
        if unset_gone:
            newer_libbpf.append(
                f"{k}'s {name} lacks {', '.join(unset_gone)}, which the object leaves unset and "
                "libbpf 1.3 and later pass over"
            )
        if newer_libbpf and not problems:
            yield self._check(
                Area.ATTACH,
                Outcome.UNDECIDED,
                subject,
                "; ".join(newer_libbpf)
                + ": older libbpf refuses the map, so whether it loads depends on the libbpf of "
                "its loader",
                code=ReasonCode.ATTACH_TARGET,
                symbol=name,
            )
        elif not problems:
            detail = f"{k}'s {name} has every member the object sets"
            yield self._check(Area.ATTACH, Outcome.PASS, subject, detail, symbol=name)
        for program, target, label in protos:
            yield from self._attach_proto(program, target, label)


def _pointed_proto(btf: BTF, type_id: int) -> Type | None:
    """The FUNC_PROTO a member of pointer-to-function type points to; None for other members."""
    resolved = btf.resolve(type_id)
    if not resolved or btf.kind(resolved) is not Kind.PTR:
        return None
    target = btf.resolve(btf.type(resolved).type)
    return btf.type(target) if target and btf.kind(target) is Kind.FUNC_PROTO else None
