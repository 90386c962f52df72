"""CO-RE relocation resolution, by the rules of libbpf's src/relo_core.c (pure: no I/O).

For one relocation (kind, local root type, access string) of a BPF object and a target kernel's
BTF, this computes what libbpf would patch in:

1. candidates: target types of a compatible kind whose *essential* name (the name up to its last
   `X___Y` flavor separator) equals the local one; vmlinux first, module BTFs only when vmlinux
   has none;
2. the local spec: the access string walked through the local type (members, anonymous members,
   array indexes) into a bit offset and named accessors;
3. matching each candidate: field kinds by member names and field compatibility, enum-value kinds
   by enumerator name, type kinds by type compatibility (TYPE_MATCHES by the stricter "match");
4. the value of the kind, and agreement between candidates (else: ambiguity, a load error).

Outcomes: `resolved` (with a value; existence kinds and type-based kinds give 0 when nothing
matches), `poisoned` (nothing matches: libbpf replaces the instruction with an invalid call, fatal
only if the verifier reaches it), `ambiguous` and `error` (libbpf refuses the whole object).

libbpf prunes a local type's candidate list to the ones that matched, relocation after
relocation; `CoreResolver` keeps that state per object, so resolve relocations in .BTF.ext order.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from typing import Protocol

from weak_bpf.engine.btfcompat import essential_name, types_are_compat
from weak_bpf.errors import BTFError
from weak_bpf.parsers.btf import BTF, Kind, Type
from weak_bpf.parsers.btfext import CoreReloKind

SPEC_MAX_LEN = 64  # libbpf's BPF_CORE_SPEC_MAX_LEN
_MAX_DEPTH = 32  # recursion limit of the compatibility checks
_INT_SIGNED = 1
POISON_IMM = 0xBAD2310  # the imm of libbpf's poisoned call ("bad relo")

FIELD_KINDS = frozenset(range(0, 6))
TYPE_KINDS = frozenset({6, 7, 8, 9, 12})
ENUMVAL_KINDS = frozenset({10, 11})
EXISTENCE_KINDS = frozenset({2, 8, 10, 12})  # resolve to 0 when nothing matches

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

_KIND_STR = {
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

_ENUMS = (Kind.ENUM, Kind.ENUM64)
_COMPOSITES = (Kind.STRUCT, Kind.UNION)


class ReloLike(Protocol):
    """A btfext.CoreRelo or a bpfobject.CoreReloSite."""

    @property
    def kind(self) -> CoreReloKind | int: ...
    @property
    def type_id(self) -> int: ...
    @property
    def access(self) -> str: ...


class _Fail(Exception):
    """libbpf returns a negative error: the object does not load."""


# --- names -----------------------------------------------------------------------------------


def _names_match(local: str, target: str) -> bool:
    if not target:
        return not local
    return essential_name(local) == essential_name(target)


def _kind_compat(a: Kind, b: Kind) -> bool:
    return a == b or (a in _ENUMS and b in _ENUMS)


# --- specs -----------------------------------------------------------------------------------


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
        text = f"{_KIND_STR.get(root.kind, 'unknown')} {root.name or '<anon>'}"
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


def _size(btf: BTF, type_id: int) -> int:
    try:
        return btf.type_size(type_id)
    except BTFError as err:
        raise _Fail(f"cannot size type [{type_id}]: {err.message}") from None


def _is_flex_array(btf: BTF, prev: Accessor, array: Type) -> bool:
    """A zero-length array that is the last member of its struct."""
    if prev.name is None or array.nelems > 0:
        return False
    return prev.idx == btf.type(prev.type_id).vlen - 1


def parse_spec(btf: BTF, type_id: int, access: str, kind: int) -> Spec:
    """The local spec of a relocation (bpf_core_parse_spec). Raises _Fail where libbpf fails."""
    if not access or access.startswith(":"):
        raise _Fail(f"bad access string {access!r}")
    if kind in TYPE_KINDS:
        if access != "0":
            raise _Fail(f"type relocation with access string {access!r}")
        return Spec(btf, type_id, kind, (), (), 0)
    try:
        raw = tuple(int(part) for part in access.split(":"))
    except ValueError:
        raise _Fail(f"bad access string {access!r}") from None
    if any(i < 0 for i in raw):
        raise _Fail(f"negative index in access string {access!r}")
    if len(raw) > SPEC_MAX_LEN:
        raise _Fail("access string too long")
    tid = btf.resolve(type_id)
    t = btf.type(tid)
    if kind in ENUMVAL_KINDS:
        if t.kind not in _ENUMS or len(raw) > 1 or raw[0] >= t.vlen:
            raise _Fail(f"enum value relocation {access!r} on {_KIND_STR.get(t.kind)} [{tid}]")
        return Spec(btf, type_id, kind, (Accessor(tid, raw[0], t.values[raw[0]].name),), raw, 0)
    if kind not in FIELD_KINDS:
        raise _Fail(f"unknown relocation kind {kind}")
    accs = [Accessor(tid, raw[0], None)]
    bit_offset = raw[0] * _size(btf, tid) * 8
    for idx in raw[1:]:
        tid = btf.resolve(tid)
        t = btf.type(tid)
        if t.kind in _COMPOSITES:
            if idx >= t.vlen:
                raise _Fail(f"member #{idx} of [{tid}] does not exist")
            member = t.members[idx]
            bit_offset += member.bit_offset
            if member.name:
                accs.append(Accessor(tid, idx, member.name))
            tid = member.type
        elif t.kind == Kind.ARRAY:
            tid = btf.resolve(t.elem_type)
            if not _is_flex_array(btf, accs[-1], t) and idx >= t.nelems:
                raise _Fail(f"index {idx} out of bounds of array [{t.id}]")
            accs.append(Accessor(tid, idx, None))
            bit_offset += idx * _size(btf, tid) * 8
        else:
            raise _Fail(f"access {access!r} reaches type [{tid}] of kind {t.kind.name}")
    return Spec(btf, type_id, kind, tuple(accs), raw, bit_offset)


# --- compatibility ---------------------------------------------------------------------------


def _fields_are_compat(local: BTF, local_id: int, target: BTF, targ_id: int) -> bool:
    while True:
        lt = local.type(local.resolve(local_id))
        tt = target.type(target.resolve(targ_id))
        if lt.kind in _COMPOSITES and tt.kind in _COMPOSITES:
            return True
        if not _kind_compat(lt.kind, tt.kind):
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
        if lk in _ENUMS:
            return _enums_match(local, lt, target, tt) if tk in _ENUMS else 0
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
                and (lt.int_encoding & _INT_SIGNED) == (tt.int_encoding & _INT_SIGNED)
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


# --- matching a candidate --------------------------------------------------------------------


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
            raise _Fail("struct/union/array nesting too deep")
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
            raise _Fail(f"type [{targ_id}] nests too deep to compare")
        return spec.freeze() if res else None
    if kind in ENUMVAL_KINDS:
        targ_id = target.resolve(targ_id)
        tt = target.type(targ_id)
        if tt.kind not in _ENUMS:
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
            raise _Fail("struct/union/array nesting too deep")
        spec.accs.append(Accessor(targ_id, local_acc.idx, None))
        spec.raw.append(local_acc.idx)
        spec.bit_offset += local_acc.idx * _size(target, targ_id) * 8
    return spec.freeze()


# --- values ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Value:
    value: int
    mem_size: int = 0  # LDX/ST/STX access size this field wants (byte_off, non-bitfield)
    mem_type: int = 0  # the field's type id (mods skipped), for the size-change rule


def _elem_size(btf: BTF, type_id: int) -> int:
    tid = btf.resolve(type_id)
    while btf.kind(tid) == Kind.ARRAY:
        tid = btf.resolve(btf.type(tid).elem_type)
    return _size(btf, tid)


def _field_value(kind: int, spec: Spec, big_endian: bool) -> _Value:
    acc = spec.accessors[-1]
    btf = spec.btf
    if acc.name is None:  # the access ends on an array element
        if kind == CoreReloKind.FIELD_BYTE_OFFSET:
            return _Value(spec.bit_offset // 8, _elem_size(btf, acc.type_id), acc.type_id)
        if kind == CoreReloKind.FIELD_BYTE_SIZE:
            return _Value(_size(btf, acc.type_id))
        raise _Fail(f"{KIND_NAMES[kind]} cannot apply to an array element")
    member = btf.type(acc.type_id).members[acc.idx]
    field_id = btf.resolve(member.type)
    field = btf.type(field_id)
    bit_off = spec.bit_offset
    bit_sz = member.bitfield_size
    if bit_sz:
        byte_sz = field.size
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise _Fail("bitfield cannot be read with one 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = _size(btf, field_id)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    if kind == CoreReloKind.FIELD_BYTE_OFFSET:
        if not member.bitfield_size:
            return _Value(byte_off, _elem_size(btf, field_id), field_id)
        return _Value(byte_off)
    if kind == CoreReloKind.FIELD_BYTE_SIZE:
        return _Value(byte_sz)
    if kind == CoreReloKind.FIELD_SIGNED:
        signed = (field.kind in _ENUMS and field.kind_flag) or (
            field.kind == Kind.INT and bool(field.int_encoding & _INT_SIGNED)
        )
        return _Value(int(signed))
    if kind == CoreReloKind.FIELD_LSHIFT_U64:
        if big_endian:
            return _Value((8 - byte_sz) * 8 + (bit_off - byte_off * 8))
        return _Value(64 - (bit_off + bit_sz - byte_off * 8))
    if kind == CoreReloKind.FIELD_RSHIFT_U64:
        return _Value(64 - bit_sz)
    raise _Fail(f"unsupported field relocation kind {kind}")


def _value(kind: int, spec: Spec | None, big_endian: bool) -> _Value | None:
    """The relocated value for `spec` (None: no match). Returns None to request poisoning."""
    if kind in (CoreReloKind.FIELD_EXISTS, CoreReloKind.ENUMVAL_EXISTS):
        return _Value(int(spec is not None))
    if kind in TYPE_KINDS:
        if spec is None:
            return _Value(0)
        if kind == CoreReloKind.TYPE_ID_TARGET:
            return _Value(spec.root_type_id)
        if kind in (CoreReloKind.TYPE_EXISTS, CoreReloKind.TYPE_MATCHES):
            return _Value(1)
        if kind == CoreReloKind.TYPE_SIZE:
            return _Value(_size(spec.btf, spec.root_type_id))
        raise _Fail(f"unsupported type relocation kind {kind}")
    if spec is None:
        return None
    if kind == CoreReloKind.ENUMVAL_VALUE:
        acc = spec.accessors[0]
        enum = spec.btf.type(acc.type_id)
        value = enum.values[acc.idx].value
        if enum.kind == Kind.ENUM and value >= 1 << 31:
            value -= 1 << 32  # libbpf reads a 32-bit enumerator as signed, then widens it
        return _Value(value & 0xFFFFFFFFFFFFFFFF)
    return _field_value(kind, spec, big_endian)


def _size_change_fails(local: Spec, orig: _Value, target: Spec, new: _Value) -> bool:
    """libbpf's rule for a load/store whose field size changed: safe only for pointers and
    unsigned integers (zero extension); otherwise libbpf poisons the LDX/ST/STX."""
    if orig.mem_size == new.mem_size:
        return False
    lt = local.btf.type(orig.mem_type)
    tt = target.btf.type(new.mem_type)
    if lt.kind == Kind.PTR and tt.kind == Kind.PTR:
        return False
    if lt.kind == Kind.INT and tt.kind == Kind.INT:
        return _INT_SIGNED in (lt.int_encoding, tt.int_encoding)
    return True


# --- results ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Candidate:
    btf: BTF = dataclasses.field(compare=False, repr=False)
    type_id: int
    btf_name: str  # "vmlinux" or the module's name


@dataclasses.dataclass(frozen=True)
class CoreResult:
    """The outcome of one relocation on one target.

    status: "resolved" (value holds the patched value), "poisoned" (no candidate matched and
    the kind is not an existence or type kind: the instruction becomes an invalid call),
    "ambiguous" or "error" (libbpf fails the whole object load).
    """

    kind: int
    status: str
    value: int | None
    orig_value: int | None  # the value compiled in (from the local spec)
    found: bool  # a candidate matched
    name: str  # e.g. `task_struct___old.state (0:0)`
    local_spec: str  # libbpf's text, e.g. `<byte_off> [7] struct task_struct.__state (0:1 @ ...)`
    target_spec: str  # the first matching candidate's text, "" if none
    reason: str
    matches: tuple[Candidate, ...] = ()
    mem_size_change_fails: bool = False  # libbpf poisons it if the insn is LDX/ST/STX
    orig_mem_size: int = 0
    new_mem_size: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "resolved"

    @property
    def fatal(self) -> bool:
        """Fails the load whatever the program's control flow."""
        return self.status in ("ambiguous", "error")

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"kind {self.kind}")

    @property
    def wanted(self) -> str:
        """What the relocation asks of the kernel, in words: `field task_struct.__state`,
        `value CPUHP_X of enum cpuhp_state`, `struct foo`."""
        if self.kind in ENUMVAL_KINDS and "::" in self.name:
            enum, _, value = self.name.split(" = ")[0].partition("::")
            return f"value {value} of {enum}"
        if self.kind in FIELD_KINDS:
            return f"field {self.name.rsplit(' (', 1)[0]}"
        return self.name


def _short_name(btf: BTF, type_id: int, access: str, kind: int, spec: Spec | None) -> str:
    if spec is not None:
        text = spec.describe(with_id=False, with_offset=False)
        return text.split(" ", 1)[1] if kind in FIELD_KINDS else text
    name = btf.name(type_id) if 0 <= type_id < btf.nr_types else ""
    return f"{name or '<anon>'} ({access})"


class TargetIndex:
    """A target kernel's BTF (vmlinux, optional module split BTFs) with a cache of candidate
    lists per (essential name, kind family). Keep one per kernel and share it across objects."""

    def __init__(self, vmlinux: BTF, modules: Sequence[tuple[str, BTF]] = ()) -> None:
        self.vmlinux = vmlinux
        self.modules = tuple(modules)
        self._cache: dict[tuple[str, int], tuple[Candidate, ...]] = {}
        self._flavored: dict[int, dict[str, list[str]]] = {}

    def _flavored_names(self, btf: BTF) -> dict[str, list[str]]:
        """Essential name -> flavored names (`x___y`) in the target: rare, found once."""
        result: dict[str, list[str]] = {}
        strings = (raw.decode("utf-8", "replace") for raw in btf.own_strings() if b"___" in raw)
        for text in set(strings):
            base = essential_name(text)
            if base != text:
                result.setdefault(base, []).append(text)
        return result

    def _candidates_in(
        self, btf: BTF, btf_name: str, essential: str, kind: Kind
    ) -> list[Candidate]:
        names = [essential]
        # a split BTF's type may take its name from the base's strings
        for blob in (btf, btf.base) if btf.base is not None else (btf,):
            flavored = self._flavored.get(id(blob))
            if flavored is None:
                flavored = self._flavored[id(blob)] = self._flavored_names(blob)
            names += flavored.get(essential, [])
        own_start = btf.start_id
        ids: set[int] = set()
        for name in names:
            for tid in btf.find(name):
                if tid >= own_start and _kind_compat(btf.kind(tid), kind):
                    ids.add(tid)
        return [Candidate(btf, tid, btf_name) for tid in sorted(ids)]

    def candidates(self, local_name: str, local_kind: Kind) -> tuple[Candidate, ...]:
        essential = essential_name(local_name)
        family = Kind.ENUM if local_kind in _ENUMS else local_kind
        key = (essential, int(family))
        found = self._cache.get(key)
        if found is None:
            cands = self._candidates_in(self.vmlinux, "vmlinux", essential, local_kind)
            if not cands:
                for mod_name, mod_btf in self.modules:
                    cands += self._candidates_in(mod_btf, mod_name, essential, local_kind)
            found = tuple(cands)
            self._cache[key] = found
        return found


_INDEXES: weakref.WeakKeyDictionary[BTF, TargetIndex] = weakref.WeakKeyDictionary()


def target_index(vmlinux: BTF, modules: Sequence[tuple[str, BTF]] = ()) -> TargetIndex:
    """The shared TargetIndex of `vmlinux` (modules are taken from the first call)."""
    index = _INDEXES.get(vmlinux)
    if index is None:
        index = TargetIndex(vmlinux, modules)
        _INDEXES[vmlinux] = index
    return index


class CoreResolver:
    """Resolves one object's relocations against one target, in order, keeping libbpf's pruned
    candidate list per local type."""

    def __init__(self, local: BTF, target: TargetIndex | BTF) -> None:
        self.local = local
        self.target = target if isinstance(target, TargetIndex) else target_index(target)
        self._cands: dict[int, tuple[Candidate, ...]] = {}

    def resolve(self, kind: int, type_id: int, access: str) -> CoreResult:
        try:
            return self._resolve(int(kind), type_id, access)
        except _Fail as err:
            return self._failed(int(kind), type_id, access, "error", str(err))
        except BTFError as err:
            return self._failed(int(kind), type_id, access, "error", f"bad BTF: {err.message}")

    def resolve_relo(self, relo: ReloLike) -> CoreResult:
        """For a btfext.CoreRelo or a bpfobject.CoreReloSite."""
        return self.resolve(int(relo.kind), relo.type_id, relo.access)

    def _failed(self, kind: int, type_id: int, access: str, status: str, why: str) -> CoreResult:
        name = _short_name(self.local, type_id, access, kind, None)
        return CoreResult(kind, status, None, None, False, name, "", "", why)

    def _resolve(self, kind: int, type_id: int, access: str) -> CoreResult:
        local = self.local
        if kind not in KIND_NAMES:
            raise _Fail(f"unknown CO-RE relocation kind {kind}")
        if not 0 < type_id < local.nr_types:
            raise _Fail(f"local type id {type_id} is out of range")
        local_spec = parse_spec(local, type_id, access, kind)
        name = _short_name(local, type_id, access, kind, local_spec)
        local_text = local_spec.format()
        big_endian = self.target.vmlinux.byteorder == "big"
        if kind == CoreReloKind.TYPE_ID_LOCAL:
            return CoreResult(
                kind, "resolved", type_id, type_id, True, name, local_text, "", "local id"
            )
        local_type = local.type(type_id)
        if not local_type.name:
            raise _Fail("CO-RE relocations on anonymous types are not supported")
        cands = self._cands.get(type_id)
        if cands is None:
            cands = self.target.candidates(local_type.name, local_type.kind)
        orig = _value(kind, local_spec, big_endian)
        matched: list[tuple[Candidate, Spec, _Value | None]] = []
        for cand in cands:
            spec = match_spec(local_spec, cand.btf, cand.type_id)
            if spec is None:
                continue
            new = _value(kind, spec, big_endian)
            if matched:
                first_spec, first_new = matched[0][1], matched[0][2]
                if spec.bit_offset != first_spec.bit_offset:
                    return self._ambiguous(
                        kind,
                        name,
                        local_text,
                        matched=matched,
                        cand=cand,
                        why=f"field offset ambiguity: {spec.bit_offset} != {first_spec.bit_offset}"
                        f" ({spec.describe()} vs {first_spec.describe()})",
                    )
                if (new is None) != (first_new is None) or (
                    new is not None and first_new is not None and new.value != first_new.value
                ):
                    return self._ambiguous(
                        kind,
                        name,
                        local_text,
                        matched=matched,
                        cand=cand,
                        why=f"relocation decision ambiguity: {spec.describe()} gives "
                        f"{new.value if new else 'failure'}, {first_spec.describe()} gives "
                        f"{first_new.value if first_new else 'failure'}",
                    )
            matched.append((cand, spec, new))
        orig_value = orig.value if orig is not None else None
        if matched:
            self._cands[type_id] = tuple(m[0] for m in matched)
            cand, spec, new = matched[0]
            assert new is not None
            fails = False
            if kind in FIELD_KINDS and orig is not None:
                fails = _size_change_fails(local_spec, orig, spec, new)
            where = "vmlinux" if cand.btf_name == "vmlinux" else f"module {cand.btf_name}"
            return CoreResult(
                kind,
                "resolved",
                new.value,
                orig_value,
                True,
                name,
                local_text,
                spec.format(),
                f"matches {spec.describe()} in {where}",
                tuple(m[0] for m in matched),
                fails,
                orig.mem_size if orig else 0,
                new.mem_size,
            )
        self._cands[type_id] = cands
        new = _value(kind, None, big_endian)
        why = (
            f"no candidate for {_KIND_STR.get(local_type.kind)} {essential_name(local_type.name)}"
            if not cands
            else f"no matching field in {len(cands)} candidate(s)"
            if kind in FIELD_KINDS
            else f"no match in {len(cands)} candidate(s)"
        )
        if new is None:
            return CoreResult(kind, "poisoned", None, orig_value, False, name, local_text, "", why)
        return CoreResult(kind, "resolved", new.value, orig_value, False, name, local_text, "", why)

    def _ambiguous(
        self,
        kind: int,
        name: str,
        local_text: str,
        *,
        matched: list[tuple[Candidate, Spec, _Value | None]],
        cand: Candidate,
        why: str,
    ) -> CoreResult:
        """Candidates disagree: libbpf stops at the first one that differs from the first."""
        seen = (*(m[0] for m in matched), cand)
        first = matched[0][1].format()
        return CoreResult(kind, "ambiguous", None, None, True, name, local_text, first, why, seen)


def resolve_all(
    local: BTF, relos: Sequence[ReloLike], target: TargetIndex | BTF
) -> tuple[CoreResult, ...]:
    """Every relocation of one object (in .BTF.ext order) against one target."""
    resolver = CoreResolver(local, target)
    return tuple(resolver.resolve_relo(relo) for relo in relos)


__all__ = [
    "POISON_IMM",
    "Accessor",
    "Candidate",
    "CoreResolver",
    "CoreResult",
    "Spec",
    "TargetIndex",
    "essential_name",
    "match_spec",
    "parse_spec",
    "resolve_all",
    "target_index",
    "types_match",
]
