"""The BPF object reader, on programs compiled from tests/progs, cross-checked with llvm-readelf,
llvm-objdump and bpftool; plus the section table, the instruction decoder, .BTF.ext and corrupt
objects."""

from __future__ import annotations

import contextlib
import json
import re
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weak_bpf.errors import BTFError, ELFError
from weak_bpf.parsers.bpfobject import read_bpf_object
from weak_bpf.parsers.btfext import CoreReloKind, parse_btf_ext
from weak_bpf.parsers.insn import (
    Insn,
    InsnClass,
    decode,
    instruction_indexes,
    jump_target,
    ld_imm64_value,
)
from weak_bpf.parsers.objvalues import BpfObject, ExternKind
from weak_bpf.parsers.sections import AttachType, ProgType, TargetKind, section_info

from conftest import require_tool

# --- section names ---------------------------------------------------------------------------

SECTIONS = [
    # section, prog type, attach type, target kind, module, lookup name, sleepable
    (
        "fentry/tcp_connect",
        ProgType.TRACING,
        AttachType.TRACE_FENTRY,
        TargetKind.BTF_FUNC,
        None,
        "tcp_connect",
        False,
    ),
    (
        "fentry/nf_conntrack:nf_ct_delete",
        ProgType.TRACING,
        AttachType.TRACE_FENTRY,
        TargetKind.BTF_FUNC,
        "nf_conntrack",
        "nf_ct_delete",
        False,
    ),
    (
        "fexit/do_unlinkat",
        ProgType.TRACING,
        AttachType.TRACE_FEXIT,
        TargetKind.BTF_FUNC,
        None,
        "do_unlinkat",
        False,
    ),
    (
        "fmod_ret/security_file_open",
        ProgType.TRACING,
        AttachType.MODIFY_RETURN,
        TargetKind.BTF_FUNC,
        None,
        "security_file_open",
        False,
    ),
    (
        "fentry.s/do_sys_open",
        ProgType.TRACING,
        AttachType.TRACE_FENTRY,
        TargetKind.BTF_FUNC,
        None,
        "do_sys_open",
        True,
    ),
    (
        "tp_btf/sched_switch",
        ProgType.TRACING,
        AttachType.TRACE_RAW_TP,
        TargetKind.BTF_TYPEDEF,
        None,
        "btf_trace_sched_switch",
        False,
    ),
    (
        "lsm/file_open",
        ProgType.LSM,
        AttachType.LSM_MAC,
        TargetKind.BTF_FUNC,
        None,
        "bpf_lsm_file_open",
        False,
    ),
    (
        "lsm.s/bprm_check_security",
        ProgType.LSM,
        AttachType.LSM_MAC,
        TargetKind.BTF_FUNC,
        None,
        "bpf_lsm_bprm_check_security",
        True,
    ),
    (
        "iter/task",
        ProgType.TRACING,
        AttachType.TRACE_ITER,
        TargetKind.BTF_FUNC,
        None,
        "bpf_iter_task",
        False,
    ),
    ("kprobe/do_unlinkat", ProgType.KPROBE, None, TargetKind.KSYM, None, "do_unlinkat", False),
    (
        "kprobe/tcp_v4_connect+0x10",
        ProgType.KPROBE,
        None,
        TargetKind.KSYM,
        None,
        "tcp_v4_connect",
        False,
    ),
    ("kretprobe/do_unlinkat", ProgType.KPROBE, None, TargetKind.KSYM, None, "do_unlinkat", False),
    ("kprobe", ProgType.KPROBE, None, TargetKind.NONE, None, "", False),
    ("ksyscall/openat", ProgType.KPROBE, None, TargetKind.SYSCALL, None, "openat", False),
    (
        "kprobe.multi/tcp_*",
        ProgType.KPROBE,
        AttachType.TRACE_KPROBE_MULTI,
        TargetKind.KSYM_PATTERN,
        None,
        "",
        False,
    ),
    ("uprobe//bin/bash:readline", ProgType.KPROBE, None, TargetKind.USER, None, "", False),
    (
        "tracepoint/syscalls/sys_enter_openat",
        ProgType.TRACEPOINT,
        None,
        TargetKind.TRACEPOINT,
        None,
        "syscalls/sys_enter_openat",
        False,
    ),
    (
        "tp/sched/sched_process_fork",
        ProgType.TRACEPOINT,
        None,
        TargetKind.TRACEPOINT,
        None,
        "sched/sched_process_fork",
        False,
    ),
    (
        "raw_tp/sys_enter",
        ProgType.RAW_TRACEPOINT,
        None,
        TargetKind.RAW_TP,
        None,
        "sys_enter",
        False,
    ),
    (
        "raw_tracepoint.w/sys_enter",
        ProgType.RAW_TRACEPOINT_WRITABLE,
        None,
        TargetKind.RAW_TP,
        None,
        "sys_enter",
        False,
    ),
    ("xdp", ProgType.XDP, AttachType.XDP, TargetKind.NONE, None, "", False),
    ("xdp.frags", ProgType.XDP, AttachType.XDP, TargetKind.NONE, None, "", False),
    ("xdp/devmap", ProgType.XDP, AttachType.XDP_DEVMAP, TargetKind.NONE, None, "", False),
    ("tc", ProgType.SCHED_CLS, None, TargetKind.NONE, None, "", False),
    ("classifier", ProgType.SCHED_CLS, None, TargetKind.NONE, None, "", False),
    ("tcx/ingress", ProgType.SCHED_CLS, AttachType.TCX_INGRESS, TargetKind.NONE, None, "", False),
    (
        "cgroup_skb/egress",
        ProgType.CGROUP_SKB,
        AttachType.CGROUP_INET_EGRESS,
        TargetKind.NONE,
        None,
        "",
        False,
    ),
    (
        "cgroup/connect4",
        ProgType.CGROUP_SOCK_ADDR,
        AttachType.CGROUP_INET4_CONNECT,
        TargetKind.NONE,
        None,
        "",
        False,
    ),
    ("socket", ProgType.SOCKET_FILTER, None, TargetKind.NONE, None, "", False),
    ("struct_ops/dctcp_init", ProgType.STRUCT_OPS, None, TargetKind.STRUCT_OPS, None, "", False),
    ("syscall", ProgType.SYSCALL, None, TargetKind.NONE, None, "", True),
    (
        "sk_skb/stream_verdict",
        ProgType.SK_SKB,
        AttachType.SK_SKB_STREAM_VERDICT,
        TargetKind.NONE,
        None,
        "",
        False,
    ),
]


@pytest.mark.parametrize("row", SECTIONS, ids=[row[0] for row in SECTIONS])
def test_section_table(row: tuple) -> None:
    name, prog_type, attach_type, kind, module, lookup, sleepable = row
    info = section_info(name)
    assert info.known
    assert (info.prog_type, info.attach_type, info.target_kind) == (prog_type, attach_type, kind)
    assert (info.module, info.lookup_name, info.sleepable) == (module, lookup, sleepable)


@pytest.mark.parametrize(
    "name", ["xdpfoo", "kprobefoo", "tc/other", "fentryx/tcp_connect", "", "maps", ".text"]
)
def test_section_unknown(name: str) -> None:
    # libbpf: "type+" needs "/" after the stem; exact names must match exactly.
    info = section_info(name)
    assert info.prog_type is ProgType.UNKNOWN and not info.known


def test_section_values() -> None:
    assert section_info("xdp.frags").xdp_frags
    assert (
        section_info("tracepoint/syscalls/sys_enter_openat").target == "syscalls/sys_enter_openat"
    )
    assert section_info("fentry/tcp_connect").needs_kernel_target
    assert not section_info("xdp").needs_kernel_target
    assert ProgType.NETFILTER == 32 and AttachType.TRACE_FENTRY == 24


# --- instructions ----------------------------------------------------------------------------


def _insn(code: int, dst: int, src: int, off: int, imm: int, *, order: str) -> bytes:
    regs = (src << 4 | dst) if order == "little" else (dst << 4 | src)
    return struct.pack(("<" if order == "little" else ">") + "BBhi", code, regs, off, imm)


@pytest.mark.parametrize("order", ["little", "big"])
def test_decode(order: str) -> None:
    code = b"".join(
        [
            _insn(0x18, 1, 2, 0, 0x11223344, order=order),  # ld_imm64 r1 (src 2: map value)
            _insn(0x00, 0, 0, 0, 0x55667788, order=order),
            _insn(0x85, 0, 0, 0, 113, order=order),  # call helper 113
            _insn(0x85, 0, 1, 0, 2, order=order),  # call pc+2
            _insn(0x85, 0, 2, 0, 12345, order=order),  # kfunc call (btf id)
            _insn(0x55, 2, 0, -3, 0, order=order),  # if r2 != 0 goto -3
            _insn(0x06, 0, 0, 0, -6, order=order),  # gotol -6 (JMP32 ja: offset in imm)
            _insn(0x1E, 3, 4, 1, 0, order=order),  # if w3 == w4 goto +1 (JMP32 | JEQ | X)
            _insn(0x05, 0, 0, 1, 0, order=order),  # ja +1
            _insn(0x95, 0, 0, 0, 0, order=order),  # exit
        ]
    )
    insns = decode(code, order)
    assert len(insns) == 10
    assert insns[0] == Insn(0x18, 1, 2, 0, 0x11223344)
    assert insns[0].is_ld_imm64 and ld_imm64_value(insns, 0) == 0x5566778811223344
    assert list(instruction_indexes(insns)) == [0, 2, 3, 4, 5, 6, 7, 8, 9]
    assert insns[2].is_helper_call and insns[2].imm == 113
    assert insns[3].is_pseudo_call and jump_target(insns, 3) == 6
    assert insns[4].is_kfunc_call and not insns[4].is_helper_call
    assert insns[5].is_cond_jump and jump_target(insns, 5) == 3
    assert insns[6].is_uncond_jump and insns[6].cls is InsnClass.JMP32
    assert jump_target(insns, 6) == 1
    assert (
        insns[7].is_cond_jump
        and insns[7].uses_reg_source
        and (insns[7].dst, insns[7].src) == (3, 4)
    )
    assert insns[8].is_uncond_jump and jump_target(insns, 8) == 10
    assert insns[9].is_exit and not insns[9].is_jump
    with pytest.raises(ValueError):
        jump_target(insns, 2 - 2)  # ld_imm64 is no jump


def test_decode_bad_length() -> None:
    with pytest.raises(ELFError):
        decode(b"\x95" + b"\0" * 8, "little")


# --- .BTF.ext ----------------------------------------------------------------------------------


def _btf_ext(order: str, *, rec_pad: int = 0, with_core: bool = True) -> bytes:
    e = "<" if order == "little" else ">"
    # string offsets: 1 -> "sec", 5 -> "0:1:2", 11 -> "file.c", 18 -> "line"
    func = struct.pack(e + "I", 8 + rec_pad) + struct.pack(e + "II", 1, 2)
    func += struct.pack(e + "II", 16, 7) + b"\xee" * rec_pad + struct.pack(e + "II", 40, 9)
    func += b"\xee" * rec_pad
    line = struct.pack(e + "I", 16) + struct.pack(e + "II", 1, 1)
    line += struct.pack(e + "4I", 8, 11, 18, 42 << 10 | 7)
    core = struct.pack(e + "I", 16 + rec_pad) + struct.pack(e + "II", 1, 1)
    core += struct.pack(e + "4I", 24, 3, 5, 2) + b"\xee" * rec_pad
    hdr_len = 32 if with_core else 24
    offs = [0, len(func), len(func), len(line), len(func) + len(line), len(core)]
    header = struct.pack(e + "HBBI", 0xEB9F, 1, 0, hdr_len) + struct.pack(e + "4I", *offs[:4])
    if with_core:
        header += struct.pack(e + "2I", *offs[4:])
    return header + func + line + (core if with_core else b"")


STRINGS = {0: "", 1: "sec", 5: "0:1:2", 11: "file.c", 18: "line"}


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("rec_pad", [0, 8])
def test_btf_ext(order: str, rec_pad: int) -> None:
    ext = parse_btf_ext(_btf_ext(order, rec_pad=rec_pad), STRINGS.__getitem__)
    assert ext.byteorder == order
    assert [(f.section, f.insn_off, f.type_id) for f in ext.func_info] == [
        ("sec", 16, 7),
        ("sec", 40, 9),
    ]
    (line,) = ext.line_info
    assert (line.file_name, line.line_text, line.line, line.column) == ("file.c", "line", 42, 7)
    (relo,) = ext.core_relos
    assert (relo.section, relo.insn_index, relo.type_id, relo.access, relo.kind) == (
        "sec",
        3,
        3,
        "0:1:2",
        CoreReloKind.FIELD_EXISTS,
    )
    assert isinstance(relo.kind, CoreReloKind) and relo.kind.is_existence
    assert relo.access_indexes == (0, 1, 2)
    assert not parse_btf_ext(_btf_ext(order, with_core=False), STRINGS.__getitem__).core_relos


def test_core_relo_kinds() -> None:
    assert [k.value for k in CoreReloKind] == list(range(13))
    existence = {k for k in CoreReloKind if k.is_existence}
    assert existence == {
        CoreReloKind.FIELD_EXISTS,
        CoreReloKind.TYPE_EXISTS,
        CoreReloKind.ENUMVAL_EXISTS,
    }


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_btf_ext_corrupt(data: st.DataObject) -> None:
    blob = bytearray(_btf_ext("little", rec_pad=4))
    cut = data.draw(st.integers(0, len(blob)))
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    with contextlib.suppress(BTFError):
        parse_btf_ext(bytes(blob[:cut]), lambda off: STRINGS.get(off, "?"))


# --- compiled programs -------------------------------------------------------------------------


Paths = dict[str, Path]
Objects = dict[str, BpfObject]


@pytest.fixture(scope="session")
def objects(old_progs: Paths) -> Objects:
    return {name: read_bpf_object(path.read_bytes(), str(path)) for name, path in old_progs.items()}


def test_every_program_compiled(objects: Objects) -> None:
    from bpfprogs import program_sources

    assert set(objects) == {src.name[: -len(".bpf.c")] for src in program_sources()}


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _readelf_symbols(path: Path) -> list[dict[str, str]]:
    out = []
    for line in _run(require_tool("llvm-readelf"), "-s", "-W", str(path)).splitlines():
        m = re.match(r"\s*\d+:\s+([0-9a-f]+)\s+(\d+)\s+(\w+)\s+(\w+)\s+\w+\s+(\w+)\s+(\S*)", line)
        if m:
            value, size, typ, bind, ndx, name = m.groups()
            out.append(
                {"value": value, "size": size, "type": typ, "bind": bind, "ndx": ndx, "name": name}
            )
    return out


def _readelf_relocs(path: Path) -> set[tuple[str, int, str, str]]:
    """{(code section, offset, type, symbol)} for relocation sections of code."""
    out = set()
    section = None
    for line in _run(require_tool("llvm-readelf"), "-r", "-W", str(path)).splitlines():
        m = re.match(r"Relocation section '\.rel(.*)' at offset", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"([0-9a-f]{16})\s+[0-9a-f]{16}\s+(R_BPF_\w+)\s+[0-9a-f]+\s+(\S+)", line)
        if m and section is not None and not section.startswith((".debug", ".BTF", ".eh")):
            out.add((section, int(m.group(1), 16), m.group(2), m.group(3)))
    return out


def test_symbols_against_readelf(old_progs: Paths, objects: Objects) -> None:
    for name, path in old_progs.items():
        obj = objects[name]
        symbols = _readelf_symbols(path)
        funcs = {s["name"] for s in symbols if s["type"] == "FUNC"}
        got = {f.name for f in obj.programs + obj.subprograms}
        assert got == funcs, name
        for func in obj.programs + obj.subprograms:
            (sym,) = [s for s in symbols if s["name"] == func.name]
            assert (int(sym["value"], 16), int(sym["size"])) == (func.offset, func.size)
            assert func.is_global == (sym["bind"] == "GLOBAL")
        undefined = {s["name"]: s["bind"] for s in symbols if s["ndx"] == "UND" and s["name"]}
        assert {e.name for e in obj.externs} == set(undefined), name
        for ext in obj.externs:
            assert ext.weak == (undefined[ext.name] == "WEAK"), (name, ext.name)
        assert obj.extern_problems == (), name


def test_relocations_against_readelf(old_progs: Paths, objects: Objects) -> None:
    types = {1: "R_BPF_64_64", 10: "R_BPF_64_32"}
    for name, path in old_progs.items():
        expected = _readelf_relocs(path)
        got = {
            (
                r.section,
                r.insn_index * 8,
                types.get(r.type, str(r.type)),
                r.symbol or r.symbol_section,
            )
            for r in objects[name].relocations
        }
        assert got == expected, name


def _objdump_calls(path: Path) -> dict[str, tuple[set[int], list[tuple[str, int]]]]:
    """{function: (helper ids, [(kfunc, insn index in section)])} from llvm-objdump -d -r."""
    out: dict[str, tuple[set[int], list[tuple[str, int]]]] = {}
    lines = _run(require_tool("llvm-objdump"), "-d", "-r", str(path)).splitlines()
    func = None
    for i, line in enumerate(lines):
        m = re.match(r"[0-9a-f]{16} <(\w+)>:", line)
        if m and not m.group(1).startswith("LBB"):
            func = m.group(1)
            out[func] = (set(), [])
            continue
        m = re.match(r"\s*(\d+):\s+85 (\w)(\w) .*\tcall (-?\d+)", line)
        if not m or func is None:
            continue
        index, src, imm = int(m.group(1)), int(m.group(2), 16), int(m.group(4))
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        reloc = re.search(r"R_BPF_64_32\s+(\S+)", nxt)
        if (
            reloc
            and src == 1
            and reloc.group(1) != ".text"
            and not reloc.group(1).startswith(tuple(out))
        ):
            out[func][1].append((reloc.group(1), index))
        elif src == 0 and not reloc:
            out[func][0].add(imm)
    return out


def test_calls_against_objdump(old_progs: Paths, objects: Objects) -> None:
    for name, path in old_progs.items():
        calls = _objdump_calls(path)
        obj = objects[name]
        for func in obj.programs + obj.subprograms:
            helpers, kfuncs = calls.get(func.name, (set(), []))
            assert func.helper_ids == helpers, (name, func.name)
            assert [(k.name, k.insn_index) for k in func.kfunc_calls] == kfuncs, (name, func.name)


def test_ksyms_against_bpftool(old_progs: Paths, objects: Objects) -> None:
    bpftool = require_tool("bpftool")
    for name, path in old_progs.items():
        dump = json.loads(_run(bpftool, "btf", "dump", "file", str(path), "-j"))
        types = {t["id"]: t for t in dump["types"]}
        expected = {}
        for t in dump["types"]:
            if t["kind"] == "DATASEC" and t["name"] in (".ksyms", ".kconfig"):
                for var in t["vars"]:
                    member = types[var["type_id"]]
                    target = member["type_id"]
                    while target and types[target]["kind"] in ("CONST", "VOLATILE", "TYPEDEF"):
                        target = types[target]["type_id"]
                    kind = ExternKind.FUNC if member["kind"] == "FUNC" else ExternKind.VAR
                    typed = kind is ExternKind.FUNC or target != 0
                    expected[member["name"]] = (t["name"], kind, typed, var["type_id"])
        got = {e.name: (e.section, e.kind, e.typed, e.btf_id) for e in objects[name].externs}
        assert got == expected, name


def test_program_facts(objects: Objects) -> None:
    kfunc_weak = objects["kfunc_weak"]
    (prog,) = kfunc_weak.programs
    assert prog.info.lookup_name == "btf_trace_task_newtask"
    assert {e.name: e.weak for e in kfunc_weak.ksyms} == {
        "bpf_task_acquire": True,
        "bpf_task_release": True,
    }
    # bpf_ksym_exists(bpf_task_acquire) is an ld_imm64 of the weak extern's address
    assert [r.name for r in prog.extern_refs] == ["bpf_task_acquire"]
    ksyms = {e.name: e for e in objects["ksyms"].ksyms}
    assert ksyms["runqueues"].typed and not ksyms["bpf_prog_active"].typed
    assert ksyms["init_task_typeless"].weak and not ksyms["init_task_typeless"].typed
    assert all(e.kind is ExternKind.VAR for e in ksyms.values())
    kconfig = {e.name: e.weak for e in objects["kconfig"].kconfig}
    assert kconfig == {
        "LINUX_KERNEL_VERSION": False,
        "CONFIG_HZ": False,
        "CONFIG_BPF_LSM": True,
        "CONFIG_NO_SUCH_OPTION": True,
    }
    assert objects["proprietary_kfunc"].license == "Proprietary"
    assert objects["core_reads"].license == "Dual BSD/GPL"
    greylist = objects["greylist"].greylist
    assert greylist is not None and b"bpf_lookup_system_key\tvmlinux" in greylist
    assert objects["net"].greylist is None
    assert {
        p.name for p in objects["core_reads"].programs if p.section.startswith("tracepoint")
    } == {"openat_enter", "openat_enter_flags"}
    ct = objects["kfunc_module_ct"]
    assert [k.name for k in ct.programs[0].kfunc_calls] == ["bpf_xdp_ct_lookup", "bpf_ct_release"]
    assert {m.name: (m.map_type, m.key_size, m.value_size, m.max_entries) for m in ct.maps} == {
        "ct_hits": (2, 4, 8, 2)  # BPF_MAP_TYPE_ARRAY
    }
    net = {
        m.name: (m.map_type, m.key_size, m.value_size, m.max_entries) for m in objects["net"].maps
    }
    assert net == {
        "pkt_count": (6, 4, 8, 4),
        "by_ifindex": (9, 4, 8, 4096),
        "events": (27, None, None, 4096),
    }
    tracing = {p.name: p.info for p in objects["tracing"].programs}
    assert (
        tracing["ct_delete"].module is None and tracing["ct_delete"].lookup_name == "nf_ct_delete"
    )
    assert tracing["dump_task"].lookup_name == "bpf_iter_task"
    assert objects["lsm"].programs[0].info.prog_type is ProgType.LSM


def test_subprograms(objects: Objects) -> None:
    obj = objects["subprogs"]
    (prog,) = obj.programs
    assert {f.name for f in obj.subprograms} == {"probe_key", "loop_body", "bump"}
    assert prog.helper_ids == {181}  # bpf_loop
    reachable = {f.name for f in obj.reachable_functions(prog)}
    assert reachable == {"exec_subprogs", "probe_key", "loop_body", "bump"}
    assert [c.callback for c in prog.subprog_calls] == [True, False, False]
    probe_key = next(f for f in obj.subprograms if f.name == "probe_key")
    assert [k.name for k in probe_key.kfunc_calls] == ["bpf_lookup_system_key", "bpf_key_put"]


def _member_index(vmlinux: Path, struct_name: str, member: str) -> int:
    dump = json.loads(_run(require_tool("bpftool"), "btf", "dump", "file", str(vmlinux), "-j"))
    (task,) = [t for t in dump["types"] if t["kind"] == "STRUCT" and t["name"] == struct_name]
    return [m["name"] for m in task["members"]].index(member)


def test_core_relocations(objects: Objects, old_vmlinux: Path) -> None:
    state = _member_index(old_vmlinux, "task_struct", "__state")
    relos = objects["core_guards"].core_relos
    summary = {(r.kind, r.type_name, r.access) for r in relos}
    assert (CoreReloKind.FIELD_EXISTS, "task_struct", f"0:{state}") in summary
    assert (CoreReloKind.FIELD_EXISTS, "task_struct___new", "0:0") in summary
    assert (CoreReloKind.FIELD_BYTE_OFFSET, "task_struct___old", "0:0") in summary
    assert (CoreReloKind.TYPE_EXISTS, "bpf_key___local", "0") in summary
    assert (CoreReloKind.TYPE_SIZE, "bpf_key___local", "0") in summary
    assert (CoreReloKind.ENUMVAL_EXISTS, "bpf_func_id___local", "1") in summary
    assert {r.kind for r in relos if r.type_name == "bpf_func_id"} == {
        CoreReloKind.ENUMVAL_EXISTS,
        CoreReloKind.ENUMVAL_VALUE,
    }
    assert all(r.program == "fork_guarded" for r in relos)
    prog = objects["core_guards"].programs[0]
    for relo in relos:  # each relocation sits on a real instruction of its program
        assert prog.contains(relo.section, relo.insn_index)
    pid = _member_index(old_vmlinux, "task_struct", "pid")
    reads = objects["core_reads"].core_relos
    assert (CoreReloKind.FIELD_BYTE_OFFSET, "task_struct", f"0:{pid}", "unlink_entry") in {
        (r.kind, r.type_name, r.access, r.program) for r in reads
    }


LEGACY_MAPS = r"""
struct bpf_map_def { unsigned int type, key_size, value_size, max_entries, map_flags; };
struct bpf_map_def __attribute__((section("maps"), used)) legacy = { 1, 4, 16, 64, 0 };
__attribute__((section("socket"), used)) int prog(void *ctx) { return 0; }
char LICENSE[] __attribute__((section("license"), used)) = "GPL";
"""


def test_legacy_maps(tmp_path: Path) -> None:
    source, out = tmp_path / "legacy.c", tmp_path / "legacy.o"
    source.write_text(LEGACY_MAPS)
    subprocess.run(
        [require_tool("clang"), "-O2", "-target", "bpf", "-c", str(source), "-o", str(out)],
        check=True,
    )
    obj = read_bpf_object(out.read_bytes())
    assert [
        (m.name, m.section, m.map_type, m.key_size, m.value_size, m.max_entries) for m in obj.maps
    ] == [("legacy", "maps", 1, 4, 16, 64)]
    assert obj.btf is None and obj.core_relos == ()
    assert [p.name for p in obj.programs] == ["prog"]


# --- byte order ------------------------------------------------------------------------------


def test_big_endian_object(old_progs: Paths, old_vmlinux: Path, tmp_path: Path) -> None:
    from bpfbuild import CLANG_FLAGS, vmlinux_h
    from bpfprogs import PROGS_DIR

    clang = require_tool("clang")
    flags = [f if f != "bpf" else "bpfeb" for f in CLANG_FLAGS]
    for name in ("kfunc_weak", "core_guards", "subprogs", "net"):
        out = tmp_path / f"{name}.o"
        subprocess.run(
            [
                clang,
                *flags,
                f"-I{vmlinux_h(old_vmlinux)}",
                "-c",
                str(PROGS_DIR / f"{name}.bpf.c"),
                "-o",
                str(out),
            ],
            check=True,
        )
        big = read_bpf_object(out.read_bytes())
        little = read_bpf_object(old_progs[name].read_bytes())
        assert big.byteorder == "big" and little.byteorder == "little"
        for attr in ("license", "maps", "ksyms", "kconfig", "relocations", "core_relos"):
            assert getattr(big, attr) == getattr(little, attr), (name, attr)
        assert big.programs == little.programs and big.subprograms == little.subprograms


# --- corrupt input ---------------------------------------------------------------------------


def test_not_bpf() -> None:
    with pytest.raises(ELFError, match="not a BPF object"):
        read_bpf_object(Path("/bin/true").read_bytes(), "/bin/true")
    with pytest.raises(ELFError, match="not an ELF"):
        read_bpf_object(b"hello world" * 10)
    with pytest.raises(ELFError):
        read_bpf_object(b"")


def test_truncated(old_progs: Paths) -> None:
    data = old_progs["subprogs"].read_bytes()
    for cut in range(0, len(data), max(1, len(data) // 300)):
        with contextlib.suppress(ELFError, BTFError):
            read_bpf_object(data[:cut])


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_bit_flips(old_progs: Paths, data: st.DataObject) -> None:
    blob = bytearray(old_progs["kfunc_weak"].read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        # favour the headers, tables and BTF over the bulky DWARF
        pos = data.draw(st.one_of(st.integers(0, 0x200), st.integers(0, len(blob) - 1)))
        blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    with contextlib.suppress(ELFError, BTFError):
        read_bpf_object(bytes(blob))
