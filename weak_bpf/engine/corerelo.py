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

Steps 2 and 3 are in `corespec.py`; this module finds the candidates and computes the values.

libbpf prunes a local type's candidate list to the ones that matched, relocation after
relocation; `CoreResolver` keeps that state per object, so resolve relocations in .BTF.ext order.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from typing import Protocol

from weak_bpf.engine.btfcompat import essential_name
from weak_bpf.engine.corespec import (
    BTF_ENUMS,
    ENUMVAL_KINDS,
    FIELD_KINDS,
    INT_SIGNED,
    KIND_NAMES,
    KIND_STR,
    TYPE_KINDS,
    Accessor,
    LoadRefused,
    Spec,
    kinds_compat,
    match_spec,
    parse_spec,
    type_size,
    types_match,
)
from weak_bpf.errors import BTFError
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.btfext import CoreReloKind

POISON_IMM = 0xBAD2310  # the imm of libbpf's poisoned call ("bad relo")

EXISTENCE_KINDS = frozenset({2, 8, 10, 12})  # resolve to 0 when nothing matches


class ReloLike(Protocol):
    """A btfext.CoreRelo or a bpfobject.CoreReloSite."""

    @property
    def kind(self) -> CoreReloKind | int: ...
    @property
    def type_id(self) -> int: ...
    @property
    def access(self) -> str: ...


# --- names -----------------------------------------------------------------------------------


# --- specs -----------------------------------------------------------------------------------


# --- compatibility ---------------------------------------------------------------------------


# --- matching a candidate --------------------------------------------------------------------


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
    return type_size(btf, tid)


def _field_value(kind: int, spec: Spec, big_endian: bool) -> _Value:
    acc = spec.accessors[-1]
    btf = spec.btf
    if acc.name is None:  # the access ends on an array element
        if kind == CoreReloKind.FIELD_BYTE_OFFSET:
            return _Value(spec.bit_offset // 8, _elem_size(btf, acc.type_id), acc.type_id)
        if kind == CoreReloKind.FIELD_BYTE_SIZE:
            return _Value(type_size(btf, acc.type_id))
        raise LoadRefused(f"{KIND_NAMES[kind]} cannot apply to an array element")
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
                raise LoadRefused("bitfield cannot be read with one 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = type_size(btf, field_id)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    if kind == CoreReloKind.FIELD_BYTE_OFFSET:
        if not member.bitfield_size:
            return _Value(byte_off, _elem_size(btf, field_id), field_id)
        return _Value(byte_off)
    if kind == CoreReloKind.FIELD_BYTE_SIZE:
        return _Value(byte_sz)
    if kind == CoreReloKind.FIELD_SIGNED:
        signed = (field.kind in BTF_ENUMS and field.kind_flag) or (
            field.kind == Kind.INT and bool(field.int_encoding & INT_SIGNED)
        )
        return _Value(int(signed))
    if kind == CoreReloKind.FIELD_LSHIFT_U64:
        if big_endian:
            return _Value((8 - byte_sz) * 8 + (bit_off - byte_off * 8))
        return _Value(64 - (bit_off + bit_sz - byte_off * 8))
    if kind == CoreReloKind.FIELD_RSHIFT_U64:
        return _Value(64 - bit_sz)
    raise LoadRefused(f"unsupported field relocation kind {kind}")


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
            return _Value(type_size(spec.btf, spec.root_type_id))
        raise LoadRefused(f"unsupported type relocation kind {kind}")
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
        return INT_SIGNED in (lt.int_encoding, tt.int_encoding)
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
                if tid >= own_start and kinds_compat(btf.kind(tid), kind):
                    ids.add(tid)
        return [Candidate(btf, tid, btf_name) for tid in sorted(ids)]

    def candidates(self, local_name: str, local_kind: Kind) -> tuple[Candidate, ...]:
        essential = essential_name(local_name)
        family = Kind.ENUM if local_kind in BTF_ENUMS else local_kind
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


LocalKey = tuple[int, str, int]  # (local type id, access string, relocation kind)
LocalSpec = tuple[Spec, str, str]  # the parsed access, its short name, its text


class CoreResolver:
    """Resolves one object's relocations against one target, in order, keeping libbpf's pruned
    candidate list per local type."""

    def __init__(
        self,
        local: BTF,
        target: TargetIndex | BTF,
        local_specs: dict[LocalKey, LocalSpec] | None = None,
    ) -> None:
        self.local = local
        self.target = target if isinstance(target, TargetIndex) else target_index(target)
        self._cands: dict[int, tuple[Candidate, ...]] = {}
        # parsed local accesses, which depend on the object alone: share them between kernels
        self._local_specs = local_specs if local_specs is not None else {}

    def resolve(self, kind: int, type_id: int, access: str) -> CoreResult:
        try:
            return self._resolve(int(kind), type_id, access)
        except LoadRefused as err:
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
            raise LoadRefused(f"unknown CO-RE relocation kind {kind}")
        if not 0 < type_id < local.nr_types:
            raise LoadRefused(f"local type id {type_id} is out of range")
        parsed = self._local_specs.get((type_id, access, kind))
        if parsed is None:
            ls = parse_spec(local, type_id, access, kind)
            parsed = (ls, _short_name(local, type_id, access, kind, ls), ls.format())
            self._local_specs[(type_id, access, kind)] = parsed
        local_spec, name, local_text = parsed
        big_endian = self.target.vmlinux.byteorder == "big"
        if kind == CoreReloKind.TYPE_ID_LOCAL:
            return CoreResult(
                kind, "resolved", type_id, type_id, True, name, local_text, "", "local id"
            )
        local_type = local.type(type_id)
        if not local_type.name:
            raise LoadRefused("CO-RE relocations on anonymous types are not supported")
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
            f"no candidate for {KIND_STR.get(local_type.kind)} {essential_name(local_type.name)}"
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
