"""CO-RE relocation resolution, checked against libbpf itself.

The oracle: `bpftool -d prog loadall` prints libbpf's debug log, which names every CO-RE
relocation's local spec, the matching candidates and the patched value (or the poisoning). Every
relocation of every test program, compiled against the old Debian kernel as packages are, must be
resolved here for the running kernel exactly as libbpf resolved it. A program written below covers
the kinds that tests/progs lack; TYPE_MATCHES needs clang 15 or later (Debian 12's default clang
is 14, so it is built with clang-15). Ambiguity and module candidates are table-tested on
hand-built BTF as well.
"""

from __future__ import annotations

import concurrent.futures
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from weak_bpf.engine.corerelo import (
    CoreResolver,
    CoreResult,
    TargetIndex,
    essential_name,
    resolve_all,
)
from weak_bpf.parsers.bpfobject import read_bpf_object
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.btfext import CoreReloKind
from weak_bpf.parsers.objvalues import BpfObject

import bpfbuild
from bpfprogs import compile_source
from conftest import require, require_root
from realload import bpftool_loadall

SYSFS_BTF = Path("/sys/kernel/btf/vmlinux")

# Kinds missing from tests/progs: field size and signedness, bitfield shifts, type ids, array
# element accesses, anonymous members, type kinds on absent types (which resolve to 0), typedefs.
KINDS_SRC = r"""
#include "common.h"

struct task_struct___flav {
	int pid;
	int no_such_field_here;
	unsigned int in_iowait:1;
} __attribute__((preserve_access_index));

struct no_such_type___x {
	int a;
} __attribute__((preserve_access_index));

__u64 out[40];

SEC("tp/sched/sched_process_exec")
int kinds(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct___flav *flav = (void *)task;

	out[0] = bpf_core_field_size(task->pid);
	out[1] = bpf_core_field_size(task->comm);
	out[2] = __builtin_preserve_field_info(task->pid, BPF_FIELD_SIGNED);
	out[3] = __builtin_preserve_field_info(task->flags, BPF_FIELD_SIGNED);
	out[4] = BPF_CORE_READ_BITFIELD_PROBED(task, in_iowait);
	out[5] = BPF_CORE_READ_BITFIELD_PROBED(flav, in_iowait);
	out[6] = bpf_core_type_id_local(struct task_struct);
	out[7] = bpf_core_type_id_kernel(struct task_struct);
	out[8] = bpf_core_type_id_kernel(struct no_such_type___x);
	out[9] = bpf_core_type_size(struct no_such_type___x);
	out[10] = bpf_core_type_exists(struct no_such_type___x);
	out[11] = bpf_core_type_size(u64);
	out[12] = bpf_core_type_exists(pid_t);
	out[13] = BPF_CORE_READ(task, comm[3]);
	out[14] = bpf_core_field_exists(flav->no_such_field_here);
	out[15] = bpf_core_enum_value(enum bpf_map_type, BPF_MAP_TYPE_RINGBUF);
	out[16] = bpf_core_field_offset(task->comm[5]);
	out[17] = bpf_core_field_size(task->comm[5]);
	out[18] = bpf_core_field_size(task->sched_reset_on_fork);
	out[19] = bpf_core_field_offset(task->sched_reset_on_fork);
	out[20] = BPF_CORE_READ(task, mm, mmap_base);
	if (out[14])
		out[21] = BPF_CORE_READ(flav, no_such_field_here);
	return 0;
}

SEC("kprobe/kfree_skb_reason")
int BPF_KPROBE(skb_kinds, struct sk_buff *skb)
{
	out[30] = (u64)BPF_CORE_READ(skb, dev);
	out[31] = BPF_CORE_READ(skb, tstamp);
	out[32] = bpf_core_field_offset(skb->cb[4]);
	out[33] = BPF_CORE_READ(skb, dev, name[1]);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""

# The running kernel's BTF has `struct nf_conn` and a flavor of it, `nf_conn___init`: both are
# candidates of a local `nf_conn`. Their type ids differ (ambiguity: libbpf refuses the object),
# unless an earlier field relocation pruned the candidate list to `nf_conn` alone.
NF_CONN_SRC = r"""
#include "common.h"
__u64 out[4];
SEC("tp/sched/sched_process_exec")
int PROG_NAME(void *ctx)
{
	struct nf_conn *ct = (void *)bpf_get_current_task();
	out[0] = bpf_core_type_exists(struct nf_conn);
#ifdef PRUNE
	out[1] = bpf_core_field_offset(ct->mark);
#endif
	out[2] = bpf_core_type_id_kernel(struct nf_conn);
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""
# bpf_core_type_matches() (clang 15+): libbpf's stricter rule, on types that match, differ in one
# member or one int, or are absent, the same on every kernel.
TYPE_MATCHES_SRC = r"""
#include "common.h"

struct list_head___same {
	struct list_head___same *next, *prev;
};
struct list_head___extra {
	struct list_head___extra *next, *prev;
	int extra;
};
struct no_such_type___tm {
	int a;
};
struct task_struct___wbp {
	int no_such_member_anywhere;
};
typedef int pid_t___int;
typedef long pid_t___long;

__u64 out[8];

SEC("tp/sched/sched_process_exec")
int type_matches(void *ctx)
{
	out[0] = bpf_core_type_matches(struct list_head___same);
	out[1] = bpf_core_type_matches(struct list_head___extra);
	out[2] = bpf_core_type_matches(pid_t___int);
	out[3] = bpf_core_type_matches(pid_t___long);
	out[4] = bpf_core_type_matches(struct no_such_type___tm);
	out[5] = bpf_core_type_matches(enum bpf_map_type);
	out[6] = bpf_core_type_matches(struct task_struct___wbp);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""
OWN_PROGRAMS = {
    "kinds": KINDS_SRC,
    "nf_conn_pruned": "#define PRUNE\n#define PROG_NAME nf_conn_pruned\n" + NF_CONN_SRC,
    "nf_conn_ambiguous": "#define PROG_NAME nf_conn_ambiguous\n" + NF_CONN_SRC,
}

_RELO_LINE = re.compile(r"prog '([^']+)': relo #(\d+): (.*)$")
_PATCHED = re.compile(r"^patched insn #\d+ \([A-Z/0-9]+\) (?:imm|off|imm64) (\d+) -> (\d+)$")

LibbpfLog = dict[tuple[str, int], list[str]]
STOPPED = ""  # the key of a log where libbpf never reached CO-RE


# --- the oracle ------------------------------------------------------------------------------


def libbpf_core_log(obj: Path) -> LibbpfLog:
    """libbpf's CO-RE lines for `obj`, loaded on the running kernel: {(prog, relo #): lines}.
    The load itself may fail (the verifier runs after relocation); the pins are removed."""
    proc = bpftool_loadall(obj, f"corerelo-{obj.parent.name}-{obj.stem}", debug=True)
    log: LibbpfLog = {}
    if not re.search(r"found \d+ CO-RE relocations", proc.stderr):
        # libbpf stopped before CO-RE (e.g. an unresolved extern): nothing to compare
        reason = [line for line in proc.stderr.splitlines() if "not resolved" in line]
        log[STOPPED, 0] = reason or ["stopped before CO-RE"]
        return log
    for line in proc.stderr.splitlines():
        m = _RELO_LINE.search(line)
        if m:
            log.setdefault((m[1], int(m[2])), []).append(m[3])
    return log


def compare(obj: BpfObject, log: LibbpfLog, target: TargetIndex) -> tuple[list[Any], list[str]]:
    """Resolve every relocation of `obj` and compare with libbpf's log, relocation by
    relocation. Returns (agreed (kind, status) pairs, disagreements)."""
    assert obj.btf is not None
    resolver = CoreResolver(obj.btf, target)
    agreed: list[Any] = []
    problems: list[str] = []
    if (STOPPED, 0) in log:
        return agreed, problems
    index_in_section: dict[str, int] = {}
    for site in obj.core_relos:
        n = index_in_section.get(site.section, 0)
        index_in_section[site.section] = n + 1
        got = resolver.resolve_relo(site)
        lines = log.get((site.function or "", n))
        where = f"{obj.source} {site.function} relo #{n} ({got.local_spec})"
        if not lines:
            problems.append(f"{where}: libbpf logged nothing")
            continue
        why = _disagreement(got, lines)
        if why:
            problems.append(f"{where}: {why}\n    ours: {got}\n    libbpf: {lines}")
        else:
            agreed.append((got.kind, got.status, got.found))
    return agreed, problems


def _disagreement(got: CoreResult, lines: list[str]) -> str:
    if got.status == "error" and not got.local_spec:  # the local spec did not parse
        return "" if any("failed" in line for line in lines) else "libbpf did not fail"
    if lines[0] != got.local_spec:
        return f"local spec {got.local_spec!r} != {lines[0]!r}"
    matching = [line.split(" ", 3)[3] for line in lines if line.startswith("matching candidate")]
    if got.target_spec and matching[:1] != [got.target_spec]:
        return f"target {got.target_spec!r} != {matching[:1]}"
    if not got.target_spec and matching:
        return f"libbpf matched {matching}"
    if got.found != bool(matching) and got.kind != CoreReloKind.TYPE_ID_LOCAL:
        return "found differs"
    if len(matching) != len(got.matches):
        return f"{len(got.matches)} matching candidates, libbpf {len(matching)}"
    poisoned = any(line.startswith("substituting insn") for line in lines)
    patched = [m for m in map(_PATCHED.match, lines) if m]
    if got.status == "poisoned":
        return "" if poisoned and not patched else "libbpf did not poison"
    failed = any(line.startswith("failed to relocate") for line in lines)
    if got.status == "ambiguous":
        ambiguity = any("ambiguity" in line for line in lines)
        return "" if ambiguity and failed else "libbpf saw no ambiguity"
    if got.status == "error":
        return "" if failed or "failed" in lines[-1] else "libbpf did not fail"
    if failed:
        return "libbpf failed"
    if poisoned or not patched:
        return "libbpf poisoned or did not patch"
    if int(patched[0][2]) != got.value:
        return f"value {got.value} != libbpf {patched[0][2]}"
    return ""


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def running_target() -> TargetIndex:
    require(SYSFS_BTF.exists(), f"{SYSFS_BTF} is missing")
    return TargetIndex(BTF.from_bytes(SYSFS_BTF.read_bytes(), source=str(SYSFS_BTF)))


@pytest.fixture(scope="session")
def own_objects(old_vmlinux: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The programs above, compiled against the old Debian kernel like tests/progs."""
    work = tmp_path_factory.mktemp("corerelo")
    return {
        name: compile_source(text, name, old_vmlinux, work) for name, text in OWN_PROGRAMS.items()
    }


@pytest.fixture(scope="session")
def type_matches_object(old_vmlinux: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        clang = bpfbuild.clang_at_least(15)
    except bpfbuild.BuildError as e:
        require(False, str(e))
        raise
    work = tmp_path_factory.mktemp("type-matches")
    return compile_source(TYPE_MATCHES_SRC, "type_matches", old_vmlinux, work, clang=clang)


@pytest.fixture(scope="session")
def kinds_object(own_objects: dict[str, Path]) -> Path:
    return own_objects["kinds"]


@pytest.fixture(scope="session")
def oracle_objects(old_progs: dict[str, Path], own_objects: dict[str, Path]) -> dict[str, Path]:
    return {**old_progs, **own_objects}


@pytest.fixture(scope="session")
def libbpf_logs(oracle_objects: dict[str, Path]) -> dict[str, LibbpfLog]:
    require_root()
    require(Path("/sys/fs/bpf").is_dir(), "bpffs is not mounted")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        logs = pool.map(libbpf_core_log, oracle_objects.values())
        return dict(zip(oracle_objects, logs))


@pytest.fixture(scope="session")
def comparison(
    oracle_objects: dict[str, Path],
    libbpf_logs: dict[str, LibbpfLog],
    running_target: TargetIndex,
) -> dict[str, tuple[list[Any], list[str], int]]:
    result = {}
    for name, path in oracle_objects.items():
        obj = read_bpf_object(path.read_bytes(), str(path))
        agreed, problems = compare(obj, libbpf_logs[name], running_target)
        result[name] = (agreed, problems, len(obj.core_relos))
    return result


# --- against libbpf --------------------------------------------------------------------------


def test_test_programs_agree_with_libbpf(
    comparison: dict[str, Any], libbpf_logs: dict[str, LibbpfLog], old_progs: dict[str, Path]
) -> None:
    """Built on Debian 6.1, loaded on the running kernel: the real-life case."""
    # Only ksyms stops earlier in libbpf (its strong extern bpf_prog_active is not in BTF).
    stopped = {
        name
        for name, log in libbpf_logs.items()
        if (STOPPED, 0) in log and comparison[name][2]  # it has CO-RE relocations
    }
    assert stopped <= {"ksyms"}, {name: libbpf_logs[name][STOPPED, 0] for name in stopped}
    problems = [p for name, (_, probs, _) in comparison.items() if name in old_progs for p in probs]
    assert not problems, "\n".join(problems)
    agreed = [a for name, (ok, _, _) in comparison.items() if name in old_progs for a in ok]
    assert len(agreed) >= 20
    kinds = {kind for kind, _, _ in agreed}
    assert {0, 2, 8, 9, 10, 11} <= kinds
    assert (0, "poisoned", False) in agreed  # core_guards' `state`, absent since 5.14
    assert (10, "resolved", False) in agreed  # an enumerator absent: exists = 0


def test_every_kind_agrees_with_libbpf(comparison: dict[str, Any]) -> None:
    agreed, problems, _ = comparison["kinds"]
    assert not problems, "\n".join(problems)
    assert len(agreed) >= 38
    assert {kind for kind, _, _ in agreed} == set(range(12)) - {10}  # 10: in core_guards
    # type kinds on an absent type resolve to 0, they are not poisoned
    for kind in (7, 8, 9):
        assert (kind, "resolved", False) in agreed
    assert (2, "resolved", False) in agreed  # field_exists of an absent field: 0
    assert (0, "poisoned", False) in agreed  # ... and its read, poisoned


def test_bitfield_values(running_target: TargetIndex, kinds_object: Path) -> None:
    """The shifts of a 1-bit field, worked out by hand from its offset in the local BTF."""
    obj = read_bpf_object(kinds_object.read_bytes(), str(kinds_object))
    assert obj.btf is not None
    got = {
        (r.kind, r.name): r
        for r in resolve_all(obj.btf, obj.core_relos, running_target)
        if "in_iowait" in r.name
    }
    flav = got[CoreReloKind.FIELD_LSHIFT_U64, "task_struct___flav.in_iowait (0:2)"]
    assert flav.orig_value == 63  # bit 0 of the u32 at byte 8: 64 - (64 + 1 - 64)
    assert got[CoreReloKind.FIELD_BYTE_OFFSET, "task_struct___flav.in_iowait (0:2)"].orig_value == 8
    assert got[CoreReloKind.FIELD_BYTE_SIZE, "task_struct___flav.in_iowait (0:2)"].orig_value == 4
    rshift = [r for (kind, _), r in got.items() if kind == CoreReloKind.FIELD_RSHIFT_U64]
    assert rshift and all(r.value == 63 for r in rshift)
    signed = [r for (kind, _), r in got.items() if kind == CoreReloKind.FIELD_SIGNED]
    assert signed and all(r.value == 0 for r in signed)


def _type_id(obj: BpfObject, name: str) -> int:
    assert obj.btf is not None
    (tid,) = obj.btf.find(name)
    return tid


# --- on the Debian kernels (no load possible there) ------------------------------------------


def test_core_guards_on_debian_61(
    old_vmlinux: Path, old_progs: dict[str, Path], new_kernel: tuple[str, Path]
) -> None:
    kver, kdir = new_kernel
    new_vmlinux = bpfbuild.vmlinux_of(kdir / "boot" / f"vmlinuz-{kver}")
    path = old_progs["core_guards"]
    obj = read_bpf_object(path.read_bytes(), str(path))
    assert obj.btf is not None
    for vmlinux in (old_vmlinux, new_vmlinux):
        target = TargetIndex(BTF.from_bytes(vmlinux.read_bytes(), source=str(vmlinux)))
        results = resolve_all(obj.btf, obj.core_relos, target)
        exists = {r.name: r.value for r in results if r.kind == CoreReloKind.FIELD_EXISTS}
        assert exists["task_struct___new.__state (0:0)"] == 1
        assert exists["task_struct.__state (0:1)"] == 1
        old_read = [r for r in results if r.name == "task_struct___old.state (0:0)"]
        assert [r.status for r in old_read] == ["poisoned"]
        assert not any(r.fatal for r in results)
        # the same relocation, asked directly as an existence check: 0 on 6.1
        resolver = CoreResolver(obj.btf, target)
        old_state = resolver.resolve(
            CoreReloKind.FIELD_EXISTS, _type_id(obj, "task_struct___old"), "0:0"
        )
        assert (old_state.status, old_state.value) == ("resolved", 0)


# --- hand-built BTF --------------------------------------------------------------------------


class BtfBuilder:
    """Raw little-endian BTF from a few type constructors; ids are returned in order."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types: list[bytes] = []

    def _str(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def _add(
        self, name: str, kind: int, vlen: int, third: int, rest: bytes = b"", *, kflag: int = 0
    ) -> int:
        info = kflag << 31 | kind << 24 | vlen
        self.types.append(struct.pack("<III", self._str(name), info, third) + rest)
        return len(self.types)

    def int_(self, name: str, size: int, signed: bool = False) -> int:
        return self._add(name, 1, 0, size, struct.pack("<I", int(signed) << 24 | size * 8))

    def ptr(self, to: int) -> int:
        return self._add("", 2, 0, to)

    def array(self, elem: int, index: int, nelems: int) -> int:
        return self._add("", 3, 0, 0, struct.pack("<III", elem, index, nelems))

    def struct(
        self, name: str, size: int, members: Sequence[tuple[str, int, int]], union: bool = False
    ) -> int:
        rest = b"".join(struct.pack("<III", self._str(n), t, off) for n, t, off in members)
        return self._add(name, 5 if union else 4, len(members), size, rest)

    def enum(self, name: str, size: int, values: Sequence[tuple[str, int]]) -> int:
        rest = b"".join(struct.pack("<Ii", self._str(n), v) for n, v in values)
        return self._add(name, 6, len(values), size, rest)

    def fwd(self, name: str, union: bool = False) -> int:
        return self._add(name, 7, 0, 0, kflag=int(union))

    def typedef(self, name: str, to: int) -> int:
        return self._add(name, 8, 0, to)

    def build(self) -> BTF:
        types = b"".join(self.types)
        header = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings)
        )
        return BTF.from_bytes(header + types + bytes(self.strings))


def test_essential_names() -> None:
    assert essential_name("task_struct___old") == "task_struct"
    assert essential_name("a___b___c") == "a___b"
    assert essential_name("task_struct") == "task_struct"
    assert essential_name("x____y") == "x____y"  # four underscores: no separator
    assert essential_name("___x") == "___x"
    assert essential_name("a___") == "a___"


def _pair() -> tuple[BtfBuilder, BtfBuilder]:
    return BtfBuilder(), BtfBuilder()


def test_ambiguity_between_flavors() -> None:
    loc, tgt = _pair()
    li = loc.int_("int", 4, signed=True)
    ls = loc.struct("foo", 8, [("a", li, 0), ("b", li, 32)])
    ti = tgt.int_("int", 4, signed=True)
    tgt.struct("foo", 8, [("a", ti, 0), ("b", ti, 32)])
    tgt.struct("foo___2", 8, [("b", ti, 0), ("a", ti, 32)])  # b moved: offsets disagree
    tgt.struct("foo___3", 4, [("a", ti, 0)])  # no b: does not match, no ambiguity
    local, target = loc.build(), tgt.build()
    res = CoreResolver(local, target).resolve(CoreReloKind.FIELD_BYTE_OFFSET, ls, "0:1")
    assert res.status == "ambiguous" and res.fatal
    assert "offset ambiguity" in res.reason
    # a which stays at offset 0 in foo and foo___3, moves in foo___2
    res = CoreResolver(local, target).resolve(CoreReloKind.FIELD_EXISTS, ls, "0:0")
    assert (res.status, res.value) == ("ambiguous", None)
    # the same offset in two flavors is no ambiguity
    tgt2 = BtfBuilder()
    ti = tgt2.int_("int", 4, signed=True)
    tgt2.struct("foo", 8, [("a", ti, 0), ("b", ti, 32)])
    tgt2.struct("foo___2", 12, [("a", ti, 0), ("b", ti, 32), ("c", ti, 64)])
    res = CoreResolver(local, tgt2.build()).resolve(CoreReloKind.FIELD_BYTE_OFFSET, ls, "0:1")
    assert (res.status, res.value, len(res.matches)) == ("resolved", 4, 2)


def test_anonymous_members_arrays_and_flex() -> None:
    loc, tgt = _pair()
    lc = loc.int_("char", 1)
    lu = loc.int_("unsigned int", 4)
    larr = loc.array(lc, lu, 0)
    ls = loc.struct("s", 8, [("n", lu, 0), ("data", larr, 32)])
    tc = tgt.int_("char", 1)
    tu = tgt.int_("unsigned int", 4)
    tarr = tgt.array(tc, tu, 0)
    inner = tgt.struct("", 4, [("n", tu, 0)], union=True)
    tgt.struct("s", 16, [("pad", tu, 0), ("", inner, 32), ("data", tarr, 64)])
    local, target = loc.build(), tgt.build()
    resolver = CoreResolver(local, target)
    res = resolver.resolve(CoreReloKind.FIELD_BYTE_OFFSET, ls, "0:0")
    assert (res.value, res.target_spec) == (4, "<byte_off> [5] struct s.n (0:1:0 @ offset 4)")
    res = resolver.resolve(CoreReloKind.FIELD_BYTE_OFFSET, ls, "0:1:7")  # flexible array
    assert (res.value, res.name) == (8 + 7, "s.data[7] (0:1:7)")
    res = resolver.resolve(CoreReloKind.FIELD_BYTE_SIZE, ls, "0:1:7")
    assert res.value == 1
    res = resolver.resolve(CoreReloKind.FIELD_SIGNED, ls, "0:1:7")
    assert res.status == "error"  # libbpf: cannot apply to an array access
    assert resolver.resolve(CoreReloKind.FIELD_BYTE_OFFSET, ls, "0:x").status == "error"
    assert resolver.resolve(CoreReloKind.FIELD_BYTE_OFFSET, ls, "0:5").status == "error"
    assert resolver.resolve(CoreReloKind.TYPE_EXISTS, ls, "0:1").status == "error"


def test_incompatible_field_and_enums() -> None:
    loc, tgt = _pair()
    li = loc.int_("int", 4, signed=True)
    le = loc.enum("color", 4, [("RED", 0), ("GREEN___x", 1)])
    ls = loc.struct("s", 8, [("a", li, 0), ("c", le, 32)])
    tp = tgt.ptr(0)
    te = tgt.enum("color", 4, [("BLUE", 5), ("GREEN", 7)])
    tgt.struct("s", 16, [("a", tp, 0), ("c", te, 64)])
    local, target = loc.build(), tgt.build()
    resolver = CoreResolver(local, target)
    res = resolver.resolve(CoreReloKind.FIELD_BYTE_OFFSET, ls, "0:0")  # int vs pointer
    assert (res.status, res.found) == ("poisoned", False)
    assert resolver.resolve(CoreReloKind.FIELD_EXISTS, ls, "0:0").value == 0
    assert resolver.resolve(CoreReloKind.FIELD_BYTE_OFFSET, ls, "0:1").value == 8
    assert resolver.resolve(CoreReloKind.ENUMVAL_VALUE, le, "1").value == 7  # by name
    assert resolver.resolve(CoreReloKind.ENUMVAL_VALUE, le, "0").status == "poisoned"
    assert resolver.resolve(CoreReloKind.ENUMVAL_EXISTS, le, "0").value == 0
    assert resolver.resolve(CoreReloKind.ENUMVAL_EXISTS, le, "1").value == 1


def test_type_matches() -> None:
    loc, tgt = _pair()
    li = loc.int_("int", 4, signed=True)
    lfwd = loc.fwd("node")
    lp = loc.ptr(lfwd)
    ls = loc.struct("pair", 16, [("x", li, 0), ("next", lp, 64)])
    lt = loc.typedef("pair_t", ls)
    lother = loc.struct("pair___wide", 16, [("x", loc.int_("long", 8, signed=True), 0)])
    lextra = loc.struct("pair___extra", 16, [("x", li, 0), ("zzz", li, 32)])
    ti = tgt.int_("int", 4, signed=True)
    tnode = tgt.struct("node", 8, [("v", ti, 0)])
    tp = tgt.ptr(tnode)
    tpair = tgt.struct("pair", 24, [("y", ti, 0), ("x", ti, 32), ("next", tp, 64)])
    ttypedef = tgt.typedef("pair_t", tpair)
    local, target = loc.build(), tgt.build()
    resolver = CoreResolver(local, target)
    # member order and struct size do not matter; a fwd behind a pointer matches the struct
    assert resolver.resolve(CoreReloKind.TYPE_MATCHES, ls, "0").value == 1
    assert resolver.resolve(CoreReloKind.TYPE_MATCHES, lt, "0").value == 1
    assert resolver.resolve(CoreReloKind.TYPE_MATCHES, lother, "0").value == 0  # int size
    assert resolver.resolve(CoreReloKind.TYPE_MATCHES, lextra, "0").value == 0  # extra member
    # no match is an answer, never a poisoned instruction: there is nothing to guard
    no_match = resolver.resolve(CoreReloKind.TYPE_MATCHES, lextra, "0")
    assert (no_match.status, no_match.ok) == ("resolved", True)
    # while the looser type compatibility accepts them
    assert resolver.resolve(CoreReloKind.TYPE_EXISTS, lother, "0").value == 1
    assert resolver.resolve(CoreReloKind.TYPE_SIZE, lother, "0").value == 24
    res = resolver.resolve(CoreReloKind.TYPE_ID_TARGET, lt, "0")
    assert (res.value, res.orig_value) == (ttypedef, lt)
    assert resolver.resolve(CoreReloKind.TYPE_ID_LOCAL, lt, "0").value == lt


def test_compiled_type_matches_agree_with_libbpf(
    type_matches_object: Path, running_target: TargetIndex
) -> None:
    """A real bpf_core_type_matches() object: every relocation as libbpf resolves it, and the
    values are the ones the rule gives, matches and mismatches both."""
    require_root()
    obj = read_bpf_object(type_matches_object.read_bytes(), str(type_matches_object))
    assert obj.btf is not None
    assert [site.kind for site in obj.core_relos] == [CoreReloKind.TYPE_MATCHES] * 7
    agreed, problems = compare(obj, libbpf_core_log(type_matches_object), running_target)
    assert not problems, "\n".join(problems)
    assert len(agreed) == 7
    got = [r.value for r in resolve_all(obj.btf, obj.core_relos, running_target)]
    assert got == [1, 0, 1, 0, 0, 1, 0]
    # a type match is an answer, never a poisoned instruction: the program loads either way
    assert bpftool_loadall(type_matches_object, "type-matches").returncode == 0


def test_module_candidates_only_without_vmlinux_ones() -> None:
    base = BtfBuilder()
    bi = base.int_("int", 4, signed=True)
    base.struct("in_vmlinux", 4, [("a", bi, 0)])
    base_btf = base.build()
    raw_mod = _split_blob(
        base_btf,
        [
            ("in_module", [("a", bi, 0), ("b", bi, 32)]),
            ("in_vmlinux", [("b", bi, 0), ("a", bi, 32)]),
        ],
    )
    mod_btf = BTF.from_bytes(raw_mod, base=base_btf)
    loc = BtfBuilder()
    li = loc.int_("int", 4, signed=True)
    lmod = loc.struct("in_module", 8, [("b", li, 32)])
    lvm = loc.struct("in_vmlinux", 4, [("a", li, 0)])
    local = loc.build()
    target = TargetIndex(base_btf, [("mymod", mod_btf)])
    resolver = CoreResolver(local, target)
    res = resolver.resolve(CoreReloKind.FIELD_BYTE_OFFSET, lmod, "0:0")
    assert (res.value, [c.btf_name for c in res.matches]) == (4, ["mymod"])
    assert "module mymod" in res.reason
    res = resolver.resolve(CoreReloKind.FIELD_BYTE_OFFSET, lvm, "0:0")
    assert (res.value, [c.btf_name for c in res.matches]) == (0, ["vmlinux"])


def _split_blob(base: BTF, structs: list[tuple[str, list[tuple[str, int, int]]]]) -> bytes:
    strings = bytearray()
    start = base.strings_size

    def add(text: str) -> int:
        off = start + len(strings)
        strings.extend(text.encode() + b"\0")
        return off

    types = b""
    for name, members in structs:
        rest = b"".join(struct.pack("<III", add(n), t, off) for n, t, off in members)
        size = max(off for _, _, off in members) // 8 + 4
        types += struct.pack("<III", add(name), 4 << 24 | len(members), size) + rest
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + bytes(strings)


def test_module_btf_candidates_on_debian(old_vmlinux: Path, old_kernel: tuple[str, Path]) -> None:
    """Types only in a module's split BTF are found there, and only there (no vmlinux one)."""
    kver, kdir = old_kernel
    ko = kdir / "lib" / "modules" / kver / "kernel" / "net" / "netfilter" / "nf_conntrack.ko"
    require(ko.exists(), f"{ko} is missing")
    base = BTF.from_bytes(old_vmlinux.read_bytes(), source=str(old_vmlinux))
    module = BTF.from_bytes(ko.read_bytes(), base=base, source=str(ko))
    target = TargetIndex(base, [("nf_conntrack", module)])
    resolver = CoreResolver(module, target)  # the module BTF as the "local" BTF
    checked = 0
    for tid in module.ids_of_kind(Kind.STRUCT):
        t = module.type(tid)
        named = [i for i, m in enumerate(t.members) if m.name and not m.bitfield_size]
        if not t.name or base.find(t.name) or not named:
            continue
        idx = named[-1]
        res = resolver.resolve(CoreReloKind.FIELD_BYTE_OFFSET, tid, f"0:{idx}")
        assert res.status == "resolved", res
        assert res.value == t.members[idx].bit_offset // 8
        assert {c.btf_name for c in res.matches} == {"nf_conntrack"}
        assert res.matches[0].type_id == tid
        checked += 1
    assert checked >= 10
    # a vmlinux type is looked up in vmlinux only
    (task,) = base.find("task_struct", Kind.STRUCT)
    res = CoreResolver(base, target).resolve(CoreReloKind.TYPE_ID_TARGET, task, "0")
    assert (res.value, [c.btf_name for c in res.matches]) == (task, ["vmlinux"])


def test_flavored_kernel_type_ambiguity_and_pruning(comparison: dict[str, Any]) -> None:
    """nf_conn and nf_conn___init in the running kernel: as libbpf, ambiguous unless pruned."""
    for name in ("nf_conn_pruned", "nf_conn_ambiguous"):
        assert not comparison[name][1], "\n".join(comparison[name][1])
    pruned, ambiguous = comparison["nf_conn_pruned"][0], comparison["nf_conn_ambiguous"][0]
    assert pruned == [(8, "resolved", True), (0, "resolved", True), (7, "resolved", True)]
    assert ambiguous == [(8, "resolved", True), (7, "ambiguous", True)]
