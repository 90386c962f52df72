"""Type compatibility by libbpf's `bpf_core_types_are_compat` rules: kfunc prototypes (with the
steps that explain a refusal) and the types of CO-RE relocations.

libbpf resolves a kfunc extern (`extern ... __ksym` function) by name, looking the essential
name (flavor suffix `___xxx` stripped) up as a BTF FUNC, in vmlinux first, then in each loaded
module's own types. It then compares the extern's FUNC_PROTO with the kernel FUNC's FUNC_PROTO
and refuses the object when they are incompatible. The rules (libbpf src/relo_core.c), walking
both types in lockstep:

- modifiers (const, volatile, restrict, type tags) and typedefs are skipped;
- the kinds must be equal, except that ENUM and ENUM64 match each other;
- void, STRUCT, UNION, FWD, ENUM and ENUM64 match by kind alone: their names, sizes and members
  are NOT compared (a `struct cred *` param matches `struct task_struct *`; a forward declaration
  `struct foo;` is a FWD and does not match a STRUCT);
- INT matches any INT (size and signedness are not compared), unless either has a bit offset
  (a deprecated bitfield-like int, always refused);
- PTR and ARRAY recurse into the pointee or element type (the element count is not compared);
- FUNC_PROTO: the same number of params, each param compatible, then the return type;
- every other kind (FLOAT, VAR, DATASEC, FUNC, kinds unknown here) is refused;
- limits: each comparison may take at most 32 steps along pointers, arrays and return types,
  and params nest at most 32 prototypes deep; past them the types are refused.

The weak-extern and version-dependent parts (a weak extern whose prototype is incompatible is
left unresolved by libbpf >= 1.3 but refused by older ones; essential kfunc names are looked up
since libbpf 1.3) belong to the caller.
"""

from __future__ import annotations

import dataclasses
import functools

from weak_bpf.errors import BTFError
from weak_bpf.parsers.btf import BTF, Kind, Type

MAX_DEPTH = 32  # steps per comparison (libbpf's `depth`)
MAX_LEVEL = 32  # nesting of params (libbpf's `level`)

_BY_KIND_ALONE = frozenset({Kind.STRUCT, Kind.UNION, Kind.FWD, Kind.ENUM, Kind.ENUM64})
_ENUMS = frozenset({Kind.ENUM, Kind.ENUM64})


@dataclasses.dataclass(frozen=True)
class Compat:
    """The outcome of one prototype comparison, with the steps that led to it.

    `steps` reads as a path for `explain`, e.g. ("param 1 (p): struct task_struct * vs struct
    task_struct *: ok", "return: void vs int: kinds differ (void vs INT)"). `notes` holds facts
    that do not change the verdict (struct names that differ).
    """

    compatible: bool
    reason: str  # "" when compatible, else the first problem
    steps: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.compatible

    def explain(self) -> str:
        return "; ".join(self.steps + self.notes)


@functools.lru_cache(maxsize=65536)
def essential_name(name: str) -> str:
    """`name` without its flavor suffix: the part before the last `___` that has a non-underscore
    on both sides (`bpf_ct_opts___local` -> `bpf_ct_opts`), as libbpf's essential name."""
    if "___" not in name:
        return name
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1 : i + 4] == "___" and name[i + 4] != "_":
            return name[: i + 1]
    return name


def describe(btf: BTF, type_id: int, *, limit: int = 8) -> str:
    """A short C-like spelling of a type for messages: `const struct sock *`, `u32`, `void`."""
    suffix = ""
    for _ in range(limit):
        if type_id == 0:
            return "void" + suffix
        try:
            t = btf.type(type_id)
        except BTFError:
            return f"<bad type [{type_id}]>" + suffix
        if t.kind == Kind.PTR:
            suffix = " *" + suffix
            type_id = t.type
        elif t.kind in (Kind.CONST, Kind.VOLATILE, Kind.RESTRICT):
            return f"{t.kind.name.lower()} {describe(btf, t.type, limit=limit - 1)}{suffix}"
        elif t.kind == Kind.TYPE_TAG:
            type_id = t.type
        elif t.kind == Kind.ARRAY:
            suffix = f"{suffix}[{t.nelems}]"
            type_id = t.elem_type
        elif t.kind == Kind.FUNC_PROTO:
            return f"fn({len(t.params)} params){suffix}"
        else:
            return _named(t) + suffix
    return "..." + suffix


def _named(t: Type) -> str:
    if t.kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64):
        word = "enum" if t.kind in _ENUMS else t.kind.name.lower()
        return f"{word} {t.name or '(anon)'}"
    if t.kind == Kind.FWD:
        return f"{'union' if t.kind_flag else 'struct'} {t.name} (forward)"
    return t.name or f"({t.kind.name})"


def _kind_word(type_id: int, t: Type) -> str:
    return "void" if type_id == 0 else t.kind.name


def _kinds_compat(a: Kind, b: Kind) -> bool:
    return a == b or (a in _ENUMS and b in _ENUMS)


class _Walk:
    """One libbpf-style comparison; collects notes on the way."""

    def __init__(self, local: BTF, target: BTF) -> None:
        self.local = local
        self.target = target
        self.notes: list[str] = []

    def compare(self, local_id: int, target_id: int, level: int) -> tuple[int, str]:
        """1 compatible, 0 incompatible, -1 refused (limits, bad BTF); with the first problem.

        Mirrors one call of libbpf's comparison: a fresh step budget, params one level deeper.
        """
        lb, tb = self.local, self.target
        local_t, target_t = lb.type(local_id), tb.type(target_id)
        if not _kinds_compat(local_t.kind, target_t.kind):  # checked before skipping modifiers
            return 0, self._kinds_differ(local_id, local_t, target_id, target_t)
        depth = MAX_DEPTH
        where = ""
        while True:
            depth -= 1
            if depth < 0:
                return -1, f"{where}more than {MAX_DEPTH} steps"
            local_id, target_id = lb.resolve(local_id), tb.resolve(target_id)
            local_t, target_t = lb.type(local_id), tb.type(target_id)
            if not _kinds_compat(local_t.kind, target_t.kind):
                return 0, where + self._kinds_differ(local_id, local_t, target_id, target_t)
            kind = local_t.kind
            if kind == Kind.UNKN:
                if local_id == 0 and target_id == 0:
                    return 1, ""
                return 0, f"{where}unknown BTF kind"
            if kind in _BY_KIND_ALONE:
                self._note_names(local_t, target_t)
                return 1, ""
            if kind == Kind.INT:
                if local_t.int_offset or target_t.int_offset:
                    return 0, f"{where}bitfield-like int (bit offset) is never compatible"
                return 1, ""
            if kind == Kind.PTR:
                local_id, target_id = local_t.type, target_t.type
                where += "pointee: "
                continue
            if kind == Kind.ARRAY:
                local_id, target_id = local_t.elem_type, target_t.elem_type
                where += "element: "
                continue
            if kind == Kind.FUNC_PROTO:
                result, why = self._params(local_t, target_t, level)
                if result <= 0:
                    return result, where + why
                local_id, target_id = local_t.type, target_t.type
                where += "return: "
                continue
            return 0, f"{where}{kind.name} is never compatible"

    def _params(self, local_t: Type, target_t: Type, level: int) -> tuple[int, str]:
        if len(local_t.params) != len(target_t.params):
            return 0, f"{_count(len(local_t.params))} vs {_count(len(target_t.params))}"
        for index, (lp, tp) in enumerate(zip(local_t.params, target_t.params), 1):
            if level <= 0:
                return -1, f"params nested more than {MAX_LEVEL} prototypes deep"
            result, why = self.compare(
                self.local.resolve(lp.type), self.target.resolve(tp.type), level - 1
            )
            if result <= 0:
                return result, f"param {index}{_param_name(lp.name, tp.name)}: {why}"
        return 1, ""

    def _kinds_differ(self, local_id: int, local_t: Type, target_id: int, target_t: Type) -> str:
        return (
            f"{describe(self.local, local_id)} vs {describe(self.target, target_id)}: kinds differ "
            f"({_kind_word(local_id, local_t)} vs "
            f"{_kind_word(target_id, target_t)})"
        )

    def _note_names(self, local_t: Type, target_t: Type) -> None:
        local_name, target_name = essential_name(local_t.name), essential_name(target_t.name)
        if local_name != target_name:
            self.notes.append(
                f"{_named(local_t)} vs {_named(target_t)}: names differ "
                "(libbpf does not compare them; the verifier checks the arguments' real types)"
            )


def _count(params: int) -> str:
    return "1 param" if params == 1 else f"{params} params"


def _param_name(local_name: str, target_name: str) -> str:
    name = local_name or target_name
    return f" ({name})" if name else ""


def _proto_of(btf: BTF, type_id: int) -> int:
    """A FUNC's FUNC_PROTO; any other id as is."""
    t = btf.type(type_id)
    return t.type if t.kind == Kind.FUNC else type_id


def types_are_compat(
    local: BTF, local_id: int, target: BTF, target_id: int, level: int = MAX_LEVEL
) -> int:
    """libbpf's bpf_core_types_are_compat on two types: 1 compatible, 0 not, -1 past the limits.
    The one implementation of the rule, for kfunc prototypes and CO-RE relocations alike. (A
    non-void type of kind UNKN, which libbpf takes for compatible, is refused: such BTF is bad.)"""
    return _Walk(local, target).compare(local_id, target_id, level)[0]


def func_protos_compatible(local: BTF, local_id: int, target: BTF, target_id: int) -> Compat:
    """Compare a kfunc extern's prototype in a BPF object's BTF (`local_id`: its FUNC or
    FUNC_PROTO) with a kernel FUNC (`target_id`, in vmlinux BTF or a module's split BTF) as
    libbpf does when it resolves the extern. Never raises for bad BTF: that is incompatible."""
    walk = _Walk(local, target)
    try:
        local_proto, target_proto = _proto_of(local, local_id), _proto_of(target, target_id)
        result, why = walk.compare(local_proto, target_proto, MAX_LEVEL)
        steps = _steps(local, local_proto, target, target_proto)
    except BTFError as err:
        return Compat(False, f"bad BTF: {err}", (f"bad BTF: {err}",))
    if result > 0:
        return Compat(True, "", steps, tuple(walk.notes))
    if not steps[-1].endswith(why):
        steps += (why,)  # a limit that only the whole walk reaches
    return Compat(False, why, steps, tuple(walk.notes))


def _steps(local: BTF, local_proto: int, target: BTF, target_proto: int) -> tuple[str, ...]:
    """The comparison told param by param, then the return type, up to the first problem."""
    local_t, target_t = local.type(local_proto), target.type(target_proto)
    if (
        local_t.kind != Kind.FUNC_PROTO
        or target_t.kind != Kind.FUNC_PROTO
        or len(local_t.params) != len(target_t.params)
    ):
        return (_Walk(local, target).compare(local_proto, target_proto, MAX_LEVEL)[1] or "ok",)
    parts = [
        (f"param {index}{_param_name(lp.name, tp.name)}", lp.type, tp.type)
        for index, (lp, tp) in enumerate(zip(local_t.params, target_t.params), 1)
    ]
    parts.append(("return", local_t.type, target_t.type))
    steps = []
    for label, local_id, target_id in parts:
        result, why = _Walk(local, target).compare(
            local.resolve(local_id), target.resolve(target_id), MAX_LEVEL - 1
        )
        spelled = f"{describe(local, local_id)} vs {describe(target, target_id)}"
        if result > 0:
            steps.append(f"{label}: {spelled}: ok")
        else:
            steps.append(f"{label}: {why}")
            break
    return tuple(steps)
