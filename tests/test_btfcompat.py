"""kfunc prototype compatibility (weak_bpf.btfcompat) and the BTF signature CRC
(weak_bpf.signature): libbpf's rules, checked against real loads, real kernels and hand-built BTF.

The property that ties the two modules: two prototypes are compatible if and only if their
signature texts are equal and hold no "!".
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import pytest

from weak_bpf.engine.btfcompat import Compat, describe, essential_name, func_protos_compatible
from weak_bpf.engine.signature import format_crc, signature_crc, signature_text
from weak_bpf.kernel.load import load_kernel_object
from weak_bpf.parsers.bpfobject import read_bpf_object
from weak_bpf.parsers.btf import BTF, Kind
from weak_bpf.parsers.objvalues import BpfObject

import bpfbuild
from bpfprogs import PROGS_DIR, vmlinux_of
from btfbuilder import Builder
from conftest import require, require_root, require_tool
from realload import bpftool_loadall

SYS_VMLINUX = Path("/sys/kernel/btf/vmlinux")


def agrees(local: BTF, local_id: int, target: BTF, target_id: int) -> Compat:
    """Compare, and check the signature property on the way."""
    compat = func_protos_compatible(local, local_id, target, target_id)
    local_text, target_text = signature_text(local, local_id), signature_text(target, target_id)
    by_text = local_text == target_text and "!" not in local_text
    assert compat.compatible == by_text, (compat, local_text, target_text)
    return compat


# --- essential names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "essential"),
    [
        ("bpf_ct_opts___local", "bpf_ct_opts"),
        ("task_struct___v2___x", "task_struct___v2"),
        ("task_struct", "task_struct"),
        ("a___b", "a"),
        ("a____b", "a____b"),  # four underscores: no separator
        ("___b", "___b"),
        ("a___", "a___"),
        ("", ""),
        ("x___yy", "x"),
    ],
)
def test_essential_name(name: str, essential: str) -> None:
    assert essential_name(name) == essential


# --- hand-built BTF ------------------------------------------------------------------------


Case = Callable[[Builder], int]


def _ptr_chain(b: Builder, count: int, to: int) -> int:
    for _ in range(count):
        to = b.ptr(to)
    return to


def _nested_protos(b: Builder, count: int) -> int:
    """fn(*fn(*fn(...int...)->void)->void)->void, `count` prototypes with a param each."""
    inner = b.int_()
    for _ in range(count):
        inner = b.ptr(b.proto(0, inner))
    return inner


# (name, local prototype, target prototype, compatible)
TABLE: list[tuple[str, Case, Case, bool]] = [
    ("same", lambda b: b.proto(b.int_(), b.int_()), lambda b: b.proto(b.int_(), b.int_()), True),
    (
        "int sizes and signs are not compared",
        lambda b: b.proto(b.int_("u32", 4, signed=False), b.int_("char", 1)),
        lambda b: b.proto(b.int_("s64", 8), b.int_("_Bool", 1, signed=False)),
        True,
    ),
    (
        "bit offset int",
        lambda b: b.proto(0, b.int_("x", 4, offset=3)),
        lambda b: b.proto(0, b.int_("x", 4, offset=3)),
        False,
    ),
    (
        "enum vs enum64",
        lambda b: b.proto(b.enum("e", 4), b.enum("a", 1)),
        lambda b: b.proto(b.enum("e", 8, Kind.ENUM64), b.enum("b", 8, Kind.ENUM64)),
        True,
    ),
    (
        "enum vs int",
        lambda b: b.proto(0, b.enum("e")),
        lambda b: b.proto(0, b.int_()),
        False,
    ),
    (
        "struct names are not compared",
        lambda b: b.proto(0, b.ptr(b.struct("cred"))),
        lambda b: b.proto(0, b.ptr(b.struct("task_struct"))),
        True,
    ),
    (
        "struct vs union",
        lambda b: b.proto(0, b.ptr(b.struct("s"))),
        lambda b: b.proto(0, b.ptr(b.struct("s", Kind.UNION))),
        False,
    ),
    (
        "fwd vs struct",
        lambda b: b.proto(0, b.ptr(b.fwd("s"))),
        lambda b: b.proto(0, b.ptr(b.struct("s"))),
        False,
    ),
    (
        "fwd struct vs fwd union",
        lambda b: b.proto(0, b.ptr(b.fwd("s"))),
        lambda b: b.proto(0, b.ptr(b.fwd("s", union=True))),
        True,
    ),
    (
        "void pointer vs struct pointer",
        lambda b: b.proto(b.ptr(0)),
        lambda b: b.proto(b.ptr(b.struct("s"))),
        False,
    ),
    (
        "pointer vs int",
        lambda b: b.proto(0, b.int_("long", 8)),
        lambda b: b.proto(0, b.ptr(b.struct("s"))),
        False,
    ),
    (
        "modifiers and typedefs skipped",
        lambda b: b.proto(
            0, b.mod(Kind.CONST, b.mod(Kind.TYPEDEF, b.mod(Kind.VOLATILE, b.int_()), "u32"))
        ),
        lambda b: b.proto(0, b.mod(Kind.RESTRICT, b.int_("unsigned int", signed=False))),
        True,
    ),
    (
        "type tags skipped",
        lambda b: b.proto(0, b.ptr(b.mod(Kind.TYPE_TAG, b.struct("s"), "rcu"))),
        lambda b: b.proto(0, b.ptr(b.struct("s"))),
        True,
    ),
    (
        "array lengths are not compared",
        lambda b: b.proto(0, b.ptr(b.array(b.int_(), 3))),
        lambda b: b.proto(0, b.ptr(b.array(b.int_("long", 8), 16))),
        True,
    ),
    (
        "array element kinds",
        lambda b: b.proto(0, b.ptr(b.array(b.int_(), 3))),
        lambda b: b.proto(0, b.ptr(b.array(b.struct("s"), 3))),
        False,
    ),
    (
        "float is never compatible",
        lambda b: b.proto(b.float_()),
        lambda b: b.proto(b.float_()),
        False,
    ),
    (
        "extra param",
        lambda b: b.proto(0, b.int_()),
        lambda b: b.proto(0, b.int_(), b.int_()),
        False,
    ),
    ("void vs int return", lambda b: b.proto(0), lambda b: b.proto(b.int_()), False),
    ("varargs", lambda b: b.proto(0, b.int_(), 0), lambda b: b.proto(0, b.int_(), 0), True),
    (
        "function pointer params",
        lambda b: b.proto(0, b.ptr(b.proto(b.int_(), b.ptr(b.struct("a"))))),
        lambda b: b.proto(0, b.ptr(b.proto(b.int_(), b.ptr(b.struct("b"))))),
        True,
    ),
    (
        "function pointer param kinds",
        lambda b: b.proto(0, b.ptr(b.proto(b.int_(), b.ptr(b.struct("a"))))),
        lambda b: b.proto(0, b.ptr(b.proto(b.int_(), b.int_()))),
        False,
    ),
    # Step limit: a param gets a fresh budget of 32 steps (pointers + the leaf); the return type
    # shares the budget of the prototype itself.
    (
        "31 pointers in a param",
        lambda b: b.proto(0, _ptr_chain(b, 31, b.int_())),
        lambda b: b.proto(0, _ptr_chain(b, 31, b.int_())),
        True,
    ),
    (
        "32 pointers in a param",
        lambda b: b.proto(0, _ptr_chain(b, 32, b.int_())),
        lambda b: b.proto(0, _ptr_chain(b, 32, b.int_())),
        False,
    ),
    (
        "30 pointers returned",
        lambda b: b.proto(_ptr_chain(b, 30, b.int_())),
        lambda b: b.proto(_ptr_chain(b, 30, b.int_())),
        True,
    ),
    (
        "31 pointers returned",
        lambda b: b.proto(_ptr_chain(b, 31, b.int_())),
        lambda b: b.proto(_ptr_chain(b, 31, b.int_())),
        False,
    ),
    # Nesting limit: params of prototypes nested 32 deep are refused.
    (
        "31 nested prototypes",
        lambda b: b.proto(0, _nested_protos(b, 31)),
        lambda b: b.proto(0, _nested_protos(b, 31)),
        True,
    ),
    (
        "32 nested prototypes",
        lambda b: b.proto(0, _nested_protos(b, 32)),
        lambda b: b.proto(0, _nested_protos(b, 32)),
        False,
    ),
]


@pytest.mark.parametrize(
    ("local", "target", "expected"), [c[1:] for c in TABLE], ids=[c[0] for c in TABLE]
)
def test_rules(local: Case, target: Case, expected: bool) -> None:
    b = Builder()
    local_id, target_id = b.func("f", local(b)), b.func("f", target(b))
    btf = b.btf()
    compat = agrees(btf, local_id, btf, target_id)
    assert compat.compatible is expected, compat
    assert agrees(btf, target_id, btf, local_id).compatible is expected  # symmetric
    if not expected:
        assert compat.reason and compat.steps, compat


def test_explain_names_the_param() -> None:
    b = Builder()
    opts = b.ptr(b.struct("bpf_ct_opts___local"))
    local = b.func("f", b.proto(b.ptr(b.struct("nf_conn")), opts, b.int_("u32", signed=False)))
    target = b.func(
        "f",
        b.proto(b.ptr(b.struct("nf_conn")), b.ptr(b.struct("bpf_ct_opts")), b.ptr(b.struct("x"))),
    )
    btf = b.btf()
    compat = func_protos_compatible(btf, local, btf, target)
    assert not compat
    assert compat.steps == (
        "param 1 (p0): struct bpf_ct_opts___local * vs struct bpf_ct_opts *: ok",
        "param 2 (p1): u32 vs struct x *: kinds differ (INT vs PTR)",
    )
    assert compat.reason == "param 2 (p1): u32 vs struct x *: kinds differ (INT vs PTR)"


def test_notes_differing_struct_names() -> None:
    b = Builder()
    local = b.func("f", b.proto(0, b.ptr(b.struct("cred")), b.ptr(b.struct("s___local"))))
    target = b.func("f", b.proto(0, b.ptr(b.struct("task_struct")), b.ptr(b.struct("s"))))
    btf = b.btf()
    compat = func_protos_compatible(btf, local, btf, target)
    assert compat
    assert len(compat.notes) == 1 and "struct cred vs struct task_struct" in compat.notes[0]


def test_bad_btf_is_incompatible() -> None:
    b = Builder()
    local = b.func("f", b.proto(0, 99))  # a param type past the end
    btf = b.btf()
    compat = func_protos_compatible(btf, local, btf, local)
    assert not compat and "bad BTF" in compat.reason


def test_signature_crc_format() -> None:
    b = Builder()
    func = b.func("f", b.proto(b.ptr(b.struct("s")), b.mod(Kind.CONST, b.int_()), b.enum("e")))
    btf = b.btf()
    assert signature_text(btf, func) == "fn(int,enum)->*struct"
    assert signature_crc(btf, func) == zlib.crc32(b"fn(int,enum)->*struct")
    assert format_crc(0x1234) == "0x00001234"
    assert format_crc(signature_crc(btf, func)).startswith("0x")


# --- real loads on the running kernel --------------------------------------------------------

TASK_PROLOGUE = """#include "common.h"
extern void bpf_task_release(struct task_struct *p) __ksym;
"""

# name -> (extern declaration, call of it on `task` giving a pointer to release)
LOAD_CASES = {
    "right": (
        "extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym;",
        "bpf_task_acquire(task)",
    ),
    "extra_param": (
        "extern struct task_struct *bpf_task_acquire(struct task_struct *p, int x) __ksym;",
        "bpf_task_acquire(task, 0)",
    ),
    "int_for_pointer": (
        "extern struct task_struct *bpf_task_acquire(unsigned long p) __ksym;",
        "bpf_task_acquire((unsigned long)task)",
    ),
    "void_pointer_return": (
        "extern void *bpf_task_acquire(struct task_struct *p) __ksym;",
        "bpf_task_acquire(task)",
    ),
    "local_flavor": (
        "struct task_struct___local { int pid; } __attribute__((preserve_access_index));\n"
        "extern struct task_struct___local *"
        "bpf_task_acquire(struct task_struct___local *p) __ksym;",
        "(void *)bpf_task_acquire((void *)task)",
    ),
    "other_struct_name": (
        "extern struct task_struct *bpf_task_acquire(struct cred *p) __ksym;",
        "bpf_task_acquire((void *)task)",
    ),
    "forward_declared": (
        "struct task_struct___fwd;\n"
        "extern struct task_struct *bpf_task_acquire(struct task_struct___fwd *p) __ksym;",
        "bpf_task_acquire((void *)task)",
    ),
    "int_size": (  # the kernel has `s32 pid`
        "extern struct task_struct *bpf_task_from_pid(u64 pid) __ksym;",
        "bpf_task_from_pid(task->pid)",
    ),
}

TASK_BODY = """
SEC("tp_btf/task_newtask")
int BPF_PROG(on_newtask, struct task_struct *task, u64 clone_flags)
{
	struct task_struct *got = %s;

	if (got)
		bpf_task_release(got);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="session")
def running_btf() -> BTF:
    require(SYS_VMLINUX.exists(), f"{SYS_VMLINUX} is missing")
    return BTF.from_bytes(SYS_VMLINUX.read_bytes(), source=str(SYS_VMLINUX))


@pytest.fixture(scope="session")
def load_case_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_tool("clang")
    require(SYS_VMLINUX.exists(), f"{SYS_VMLINUX} is missing")
    include = bpfbuild.vmlinux_h(SYS_VMLINUX)
    headers = tuple(h.read_bytes() for h in sorted(PROGS_DIR.glob("*.h")))
    src_dir = tmp_path_factory.mktemp("btfcompat-progs")
    objects = {}
    for name, (decl, call) in LOAD_CASES.items():
        source = src_dir / f"{name}.bpf.c"
        source.write_text(TASK_PROLOGUE + decl + "\n" + TASK_BODY % call)
        objects[name] = bpfbuild.compile_program(source, [include, PROGS_DIR], extra_inputs=headers)
    return objects


def _kfunc_extern(obj: BpfObject) -> tuple[str, int]:
    (ext,) = [e for e in obj.ksyms if e.name != "bpf_task_release"]
    assert ext.btf_id, ext
    return ext.name, ext.btf_id


@pytest.mark.parametrize("name", sorted(LOAD_CASES))
def test_agrees_with_libbpf_load(
    name: str, load_case_objects: dict[str, Path], running_btf: BTF
) -> None:
    require_root()
    obj = read_bpf_object(load_case_objects[name].read_bytes(), source=name)
    assert obj.btf is not None
    kfunc, local_id = _kfunc_extern(obj)
    (target_id,) = running_btf.find(essential_name(kfunc), Kind.FUNC)
    compat = agrees(obj.btf, local_id, running_btf, target_id)

    proc = bpftool_loadall(load_case_objects[name], f"btfcompat-{name}")
    if compat.compatible:
        assert proc.returncode == 0, (compat, proc.stderr)
    else:
        assert proc.returncode != 0, compat
        assert f"extern (func ksym) '{kfunc}'" in proc.stderr, proc.stderr
        assert "incompatible" in proc.stderr, proc.stderr
    expected = {"right", "local_flavor", "other_struct_name", "int_size"}
    assert compat.compatible is (name in expected), compat


# --- module kfuncs on the Debian kernels -----------------------------------------------------


def _module_btf(kernel_dir: Path, kver: str, module: str, vmlinux: BTF) -> BTF:
    found = sorted((kernel_dir / "lib" / "modules" / kver / "kernel").rglob(f"{module}.ko"))
    require(found, f"{module}.ko is missing from {kernel_dir}")
    ko = load_kernel_object(found[0])
    assert ko.btf is not None
    return BTF.from_bytes(ko.btf, base=vmlinux, source=str(found[0]))


@pytest.fixture(scope="session")
def debian_btfs(debian_kernels: dict[str, Path]) -> dict[str, tuple[BTF, BTF, Path]]:
    """kver -> (vmlinux BTF, nf_conntrack split BTF, vmlinux ELF path)."""
    out = {}
    for kver, kernel_dir in sorted(debian_kernels.items()):
        vmlinux_path = vmlinux_of(kernel_dir, kver)
        vmlinux = BTF.from_bytes(vmlinux_path.read_bytes(), source=str(vmlinux_path))
        out[kver] = (vmlinux, _module_btf(kernel_dir, kver, "nf_conntrack", vmlinux), vmlinux_path)
    return out


def test_ct_lookup_matches_nf_conntrack(
    old_progs: dict[str, Path], debian_btfs: dict[str, tuple[BTF, BTF, Path]]
) -> None:
    obj = read_bpf_object(old_progs["kfunc_module_ct"].read_bytes(), source="kfunc_module_ct")
    assert obj.btf is not None
    externs = {e.name: e.btf_id for e in obj.ksyms}
    texts = set()
    for kver, (vmlinux, module, _) in debian_btfs.items():
        assert not vmlinux.find("bpf_xdp_ct_lookup", Kind.FUNC), kver  # a module kfunc
        (target_id,) = [
            i for i in module.find("bpf_xdp_ct_lookup", Kind.FUNC) if i >= module.start_id
        ]
        compat = agrees(obj.btf, externs["bpf_xdp_ct_lookup"], module, target_id)
        assert compat, (kver, compat)
        assert compat.steps[3].startswith(
            "param 4 (opts): struct bpf_ct_opts___local * vs struct bpf_ct_opts *: ok"
        ), compat.steps
        assert not compat.notes  # the flavor is stripped
        texts.add(signature_text(module, target_id))
    assert texts == {"fn(*struct,*struct,int,*struct,int)->*struct"}


# --- the signature property on every kfunc of three real kernels -----------------------------


def _module_kfuncs(path: Path, btf: BTF) -> dict[str, tuple[BTF, int]]:
    """The FUNCs that a module's kfunc sets (.BTF_ids set8) register."""
    ko = load_kernel_object(path)
    out = {}
    for id_set in ko.kfunc_sets:
        for entry in id_set.entries:
            if btf.start_id <= entry.btf_id < btf.nr_types and btf.kind(entry.btf_id) == Kind.FUNC:
                out[btf.type(entry.btf_id).name] = (btf, entry.btf_id)
    return out


def test_signature_property_on_real_kfuncs(
    running_btf: BTF,
    debian_btfs: dict[str, tuple[BTF, BTF, Path]],
    debian_kernels: dict[str, Path],
) -> None:
    tagged = {
        running_btf.type(tag).type
        for tag in running_btf.ids_of_kind(Kind.DECL_TAG)
        if running_btf.type(tag).name == "bpf_kfunc"
    }
    kernels = {"running": {running_btf.type(i).name: (running_btf, i) for i in tagged}}
    assert len(kernels["running"]) > 100
    for kver, (vmlinux, module, _) in debian_btfs.items():
        # 6.1 has no bpf_kfunc tags, and the vmlinux inside a vmlinuz has no symbols to name
        # its .BTF_ids sets: take the running kernel's kfuncs that 6.1 has as FUNCs.
        kfuncs = {}
        for name in kernels["running"]:
            found = vmlinux.find(name, Kind.FUNC)
            if found:
                kfuncs[name] = (vmlinux, found[0])
        modules = debian_kernels[kver] / "lib" / "modules" / kver / "kernel"
        (ct_path,) = modules.rglob("nf_conntrack.ko")
        kfuncs.update(_module_kfuncs(ct_path, module))
        assert "bpf_xdp_ct_lookup" in kfuncs and "bpf_task_acquire" not in kfuncs, kver
        kernels[kver] = kfuncs

    outcomes = {True: 0, False: 0}
    names = sorted(kernels)
    for first in names:
        for second in names:
            common = sorted(set(kernels[first]) & set(kernels[second]))
            assert len(common) > 20, (first, second)
            for name in common:
                outcomes[agrees(*kernels[first][name], *kernels[second][name]).compatible] += 1
    # Every pair of different kfuncs of the running kernel: most are incompatible, some not.
    running = sorted(kernels["running"].values(), key=lambda pair: pair[1])
    cross = {True: 0, False: 0}
    for btf, first_id in running:
        for _, second_id in running:
            cross[agrees(btf, first_id, btf, second_id).compatible] += 1
    assert outcomes[True] > 100 and cross[True] > len(running) and cross[False] > 1000
    # No kfunc common to 6.1 and the running kernel changed in a way that libbpf refuses; one
    # changed in a way it accepts: bpf_lookup_user_key(u32 flags) became (s32 flags) in 6.2.
    (old_btf, old_id), (new_btf, new_id) = (
        kernels[min(debian_btfs)]["bpf_lookup_user_key"],
        kernels["running"]["bpf_lookup_user_key"],
    )
    old_proto, new_proto = old_btf.type(old_btf.type(old_id).type), new_btf.type(new_id).type
    assert describe(old_btf, old_proto.params[0].type) == "u32"
    assert describe(new_btf, new_btf.type(new_proto).params[0].type) == "s32"
    assert agrees(old_btf, old_id, new_btf, new_id)
    assert signature_text(old_btf, old_id) == "fn(int,int)->*struct"
