"""CO-RE access specs, by the rules of libbpf's src/relo_core.c (pure): a relocation's access string
walked through the local type into accessors (`parse_spec`), and matched against a candidate type
of the target kernel (`match_spec`) by field compatibility, or by the stricter type match of
TYPE_MATCHES (`types_match`)."""

from __future__ import annotations

import dataclasses

from weak_bpf.engine.btfcompat import essential_name, types_are_compat
from weak_bpf.errors import BTFError
from weak_bpf.parsers.btf import BTF, Kind, Type
from weak_bpf.parsers.btfext import CoreReloKind

SPEC_MAX_LEN = 64  # libbpf's BPF_CORE_SPEC_MAX_LEN


_MAX_DEPTH = 32  # recursion limit of the compatibility checks


INT_SIGNED = 1


FIELD_KINDS = frozenset(range(0, 6))


TYPE_KINDS = frozenset({6, 7, 8, 9, 12})


ENUMVAL_KINDS = frozenset({10, 11})


KIND_NAMES = {
    0: "byte_off",
    1: "byte_sz",
    2: "field_exists",
    3: "signed",
    4: "lshift_u64",
    5: "rshift_u64",
    6: "local_type_id",
    7: "target_type_id",
    8: "type_exists",
    9: "type_size",
    10: "enumval_exists",
    11: "enumval_value",
    12: "type_matches",
}


KIND_STR = {
    Kind.UNKN: "void",
    Kind.INT: "int",
    Kind.PTR: "ptr",
    Kind.ARRAY: "array",
    Kind.STRUCT: "struct",
    Kind.UNION: "union",
    Kind.ENUM: "enum",
    Kind.FWD: "fwd",
    Kind.TYPEDEF: "typedef",
    Kind.VOLATILE: "volatile",
    Kind.CONST: "const",
    Kind.RESTRICT: "restrict",
    Kind.FUNC: "func",
    Kind.FUNC_PROTO: "func_proto",
    Kind.VAR: "var",
    Kind.DATASEC: "datasec",
    Kind.FLOAT: "float",
    Kind.DECL_TAG: "decl_tag",
    Kind.TYPE_TAG: "type_tag",
    Kind.ENUM64: "enum64",
}


BTF_ENUMS = (Kind.ENUM, Kind.ENUM64)


_COMPOSITES = (Kind.STRUCT, Kind.UNION)


class LoadRefused(Exception):
    """libbpf returns a negative error: the object does not load."""


def _names_match(local: str, target: str) -> bool:
    if not target:
        return not local
    return essential_name(local) == essential_name(target)


def kinds_compat(a: Kind, b: Kind) -> bool:
    return a == b or (a in BTF_ENUMS and b in BTF_ENUMS)


@dataclasses.dataclass(frozen=True)
class Accessor:
    type_id: int  # the composite (named access) or element type (index access), mods skipped
    idx: int
    name: str | None  # member or enumerator name; None for an index access


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed access: high-level accessors, the raw access indexes and the bit offset."""

    btf: BTF
    root_type_id: int
    kind: int
    accessors: tuple[Accessor, ...]
    raw: tuple[int, ...]
    bit_offset: int

    def format(self) -> str:
        """As libbpf's bpf_core_format_spec prints it, e.g.
        `<byte_off> [7] struct task_struct.__state (0:1 @ offset 24)`."""
        return f"<{KIND_NAMES.get(self.kind, 'unknown')}> {self.describe(with_id=True)}"

    def describe(self, *, with_id: bool = True, with_offset: bool = True) -> str:
        root = self.btf.type(self.root_type_id)
        text = f"{KIND_STR.get(root.kind, 'unknown')} {root.name or '<anon>'}"
        if with_id:
            text = f"[{self.root_type_id}] {text}"
        if self.kind in TYPE_KINDS:
            return text
        if self.kind in ENUMVAL_KINDS:
            enum = self.btf.type(self.btf.resolve(self.root_type_id))
            value = enum.values[self.raw[0]]
            return f"{text}::{value.name} = {value.value}"
        for i, acc in enumerate(self.accessors):
            if acc.name is not None:
                text += f".{acc.name}"
            elif i > 0 or acc.idx > 0:
                text += f"[{acc.idx}]"
        raw = ":".join(str(i) for i in self.raw)
        if not with_offset:
            return f"{text} ({raw})"
        byte, bit = divmod(self.bit_offset, 8)
        at = f"{byte}.{bit}" if bit else f"{byte}"
        return f"{text} ({raw} @ offset {at})"


def type_size(btf: BTF, type_id: int) -> int:
    try:
        return btf.type_size(type_id)
    except BTFError as err:
        raise LoadRefused(f"cannot size type [{type_id}]: {err.message}") from None


def _is_flex_array(btf: BTF, prev: Accessor, array: Type) -> bool:
    """A zero-length array that is the last member of its struct."""
    if prev.name is None or array.nelems > 0:
        return False
    return prev.idx == btf.type(prev.type_id).vlen - 1


def parse_spec(btf: BTF, type_id: int, access: str, kind: int) -> Spec:
    """The local spec of a relocation (bpf_core_parse_spec). Raises LoadRefused where libbpf
    fails."""
    if not access or access.startswith(":"):
        raise LoadRefused(f"bad access string {access!r}")
    if kind in TYPE_KINDS:
        if access != "0":
            raise LoadRefused(f"type relocation with access string {access!r}")
        return Spec(btf, type_id, kind, (), (), 0)
    try:
        raw = tuple(int(part) for part in access.split(":"))
    except ValueError:
        raise LoadRefused(f"bad access string {access!r}") from None
    if any(i < 0 for i in raw):
        raise LoadRefused(f"negative index in access string {access!r}")
    if len(raw) > SPEC_MAX_LEN:
        raise LoadRefused("access string too long")
    tid = btf.resolve(type_id)
    t = btf.type(tid)
    if kind in ENUMVAL_KINDS:
        if t.kind not in BTF_ENUMS or len(raw) > 1 or raw[0] >= t.vlen:
            raise LoadRefused(f"enum value relocation {access!r} on {KIND_STR.get(t.kind)} [{tid}]")
        return Spec(btf, type_id, kind, (Accessor(tid, raw[0], t.values[raw[0]].name),), raw, 0)
    if kind not in FIELD_KINDS:
        raise LoadRefused(f"unknown relocation kind {kind}")
    accs = [Accessor(tid, raw[0], None)]
    bit_offset = raw[0] * type_size(btf, tid) * 8
    for idx in raw[1:]:
        tid = btf.resolve(tid)
        t = btf.type(tid)
        if t.kind in _COMPOSITES:
            if idx >= t.vlen:
                raise LoadRefused(f"member #{idx} of [{tid}] does not exist")
            member = t.members[idx]
            bit_offset += member.bit_offset
            if member.name:
                accs.append(Accessor(tid, idx, member.name))
            tid = member.type
        elif t.kind == Kind.ARRAY:
            tid = btf.resolve(t.elem_type)
            if not _is_flex_array(btf, accs[-1], t) and idx >= t.nelems:
                raise LoadRefused(f"index {idx} out of bounds of array [{t.id}]")
            accs.append(Accessor(tid, idx, None))
            bit_offset += idx * type_size(btf, tid) * 8
        else:
            raise LoadRefused(f"access {access!r} reaches type [{tid}] of kind {t.kind.name}")
    return Spec(btf, type_id, kind, tuple(accs), raw, bit_offset)


def _fields_are_compat(local: BTF, local_id: int, target: BTF, targ_id: int) -> bool:
    while True:
        lt = local.type(local.resolve(local_id))
        tt = target.type(target.resolve(targ_id))
        if lt.kind in _COMPOSITES and tt.kind in _COMPOSITES:
            return True
        if not kinds_compat(lt.kind, tt.kind):
            return False
        if lt.kind in (Kind.PTR, Kind.FLOAT):
            return True
        if lt.kind in (Kind.FWD, Kind.ENUM, Kind.ENUM64):
            ln, tn = essential_name(lt.name), essential_name(tt.name)
            return not ln or not tn or ln == tn
        if lt.kind == Kind.INT:
            return lt.int_offset == 0 and tt.int_offset == 0
        if lt.kind != Kind.ARRAY:
            return False
        local_id, targ_id = lt.elem_type, tt.elem_type


def _enums_match(local: BTF, lt: Type, target: BTF, tt: Type) -> int:
    if lt.size != tt.size or lt.vlen > tt.vlen:
        return 0
    for value in lt.values:
        if not any(_names_match(value.name, tv.name) for tv in tt.values):
            return 0
    return 1


def types_match(
    local: BTF,
    local_id: int,
    target: BTF,
    targ_id: int,
    *,
    behind_ptr: bool = False,
    level: int = 32,
) -> int:
    """bpf_core_types_match (TYPE_MATCHES): 1 match, 0 not, <0 error (too deep)."""
    if level <= 0:
        return -1
    for _ in range(_MAX_DEPTH):
        lt = local.type(local.resolve(local_id))
        tt = target.type(target.resolve(targ_id))
        if not _names_match(lt.name, tt.name):
            return 0
        lk, tk = lt.kind, tt.kind
        if lk == Kind.UNKN:
            return int(lk == tk)
        if lk == Kind.FWD:
            if behind_ptr and lk != tk:
                return int(
                    (tk == Kind.STRUCT and not lt.kind_flag) or (tk == Kind.UNION and lt.kind_flag)
                )
            return int(lk == tk and lt.kind_flag == tt.kind_flag)
        if lk in BTF_ENUMS:
            return _enums_match(local, lt, target, tt) if tk in BTF_ENUMS else 0
        if lk in _COMPOSITES:
            if behind_ptr:
                if lk == tk:
                    return 1
                return int(tk == Kind.FWD and (lk == Kind.UNION) == tt.kind_flag)
            if lk != tk:
                return 0
            return _composites_match(local, lt, target, tt, behind_ptr=behind_ptr, level=level)
        if lk == Kind.INT:
            return int(
                lk == tk
                and lt.size == tt.size
                and (lt.int_encoding & INT_SIGNED) == (tt.int_encoding & INT_SIGNED)
            )
        if lk != tk:
            return 0
        if lk == Kind.PTR:
            behind_ptr = True
            local_id, targ_id = lt.type, tt.type
        elif lk == Kind.ARRAY:
            if lt.nelems != tt.nelems:
                return 0
            local_id, targ_id = lt.elem_type, tt.elem_type
        elif lk == Kind.FUNC_PROTO:
            if lt.vlen != tt.vlen:
                return 0
            for lp, tp in zip(lt.params, tt.params):
                res = types_match(
                    local, lp.type, target, tp.type, behind_ptr=behind_ptr, level=level - 1
                )
                if res <= 0:
                    return res
            local_id, targ_id = lt.type, tt.type
        else:
            return 0
    return -1


def _composites_match(
    local: BTF, lt: Type, target: BTF, tt: Type, *, behind_ptr: bool, level: int
) -> int:
    if lt.vlen > tt.vlen:
        return 0
    for lm in lt.members:
        for tm in tt.members:
            if not _names_match(lm.name, tm.name):
                continue
            res = types_match(
                local, lm.type, target, tm.type, behind_ptr=behind_ptr, level=level - 1
            )
            if res < 0:
                return res
            if res > 0:
                break
        else:
            return 0
    return 1


class _TargetSpec:
    """A target spec under construction (mutable, as libbpf's speculative matching needs)."""

    def __init__(self, btf: BTF, root: int, kind: int) -> None:
        self.btf, self.root, self.kind = btf, root, kind
        self.accs: list[Accessor] = []
        self.raw: list[int] = []
        self.bit_offset = 0

    def freeze(self) -> Spec:
        return Spec(
            self.btf, self.root, self.kind, tuple(self.accs), tuple(self.raw), self.bit_offset
        )


def _match_member(
    local: BTF, local_acc: Accessor, target: BTF, targ_id: int, spec: _TargetSpec
) -> tuple[bool, int]:
    """Find the local accessor's member in target composite `targ_id`, descending into
    anonymous members. Returns (found, the member's type id)."""
    targ_id = target.resolve(targ_id)
    tt = target.type(targ_id)
    if tt.kind not in _COMPOSITES:
        return False, 0
    local_member = local.type(local_acc.type_id).members[local_acc.idx]
    for i, member in enumerate(tt.members):
        if len(spec.raw) >= SPEC_MAX_LEN:
            raise LoadRefused("struct/union/array nesting too deep")
        spec.bit_offset += member.bit_offset
        spec.raw.append(i)
        if not member.name:
            found, next_id = _match_member(local, local_acc, target, member.type, spec)
            if found:
                return True, next_id
        elif member.name == local_member.name:
            if not _fields_are_compat(local, local_member.type, target, member.type):
                return False, 0
            spec.accs.append(Accessor(targ_id, i, member.name))
            return True, member.type
        spec.bit_offset -= member.bit_offset
        spec.raw.pop()
    return False, 0


def match_spec(local_spec: Spec, target: BTF, targ_id: int) -> Spec | None:
    """bpf_core_spec_match: the target spec if candidate `targ_id` matches, else None."""
    kind = local_spec.kind
    spec = _TargetSpec(target, targ_id, kind)
    if kind in TYPE_KINDS:
        if kind == CoreReloKind.TYPE_MATCHES:
            res = types_match(local_spec.btf, local_spec.root_type_id, target, targ_id)
        else:
            res = types_are_compat(local_spec.btf, local_spec.root_type_id, target, targ_id)
        if res < 0:
            raise LoadRefused(f"type [{targ_id}] nests too deep to compare")
        return spec.freeze() if res else None
    if kind in ENUMVAL_KINDS:
        targ_id = target.resolve(targ_id)
        tt = target.type(targ_id)
        if tt.kind not in BTF_ENUMS:
            return None
        wanted = essential_name(local_spec.accessors[0].name or "")
        for i, value in enumerate(tt.values):
            if essential_name(value.name) == wanted:
                spec.accs.append(Accessor(targ_id, i, value.name))
                spec.raw.append(i)
                return spec.freeze()
        return None
    for i, local_acc in enumerate(local_spec.accessors):
        targ_id = target.resolve(targ_id)
        tt = target.type(targ_id)
        if local_acc.name is not None:
            found, targ_id = _match_member(local_spec.btf, local_acc, target, targ_id, spec)
            if not found:
                return None
            continue
        if i > 0:
            if tt.kind != Kind.ARRAY:
                return None
            flex = _is_flex_array(target, spec.accs[-1], tt)
            if not flex and local_acc.idx >= tt.nelems:
                return None
            targ_id = target.resolve(tt.elem_type)
        if len(spec.raw) >= SPEC_MAX_LEN:
            raise LoadRefused("struct/union/array nesting too deep")
        spec.accs.append(Accessor(targ_id, local_acc.idx, None))
        spec.raw.append(local_acc.idx)
        spec.bit_offset += local_acc.idx * type_size(target, targ_id) * 8
    return spec.freeze()
