"""BTF reader: cross-checked with bpftool on whole real kernels, hardened against bad input."""

from __future__ import annotations

import contextlib
import json
import mmap
import struct
import subprocess
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weak_bpf.errors import BTFError
from weak_bpf.files.compression import decompress
from weak_bpf.parsers import btf as btf_module
from weak_bpf.parsers import btftypes
from weak_bpf.parsers.btf import BTF, Kind, Type
from weak_bpf.parsers.vmlinuz import vmlinux_from_vmlinuz

from conftest import require, require_tool

SYSFS_VMLINUX = Path("/sys/kernel/btf/vmlinux")

# --- real data -------------------------------------------------------------------------------


def _bpftool_json(path: Path, base: Path | None = None) -> list[dict[str, Any]]:
    bpftool = require_tool("bpftool")
    argv = [bpftool, "btf", "dump", "file", str(path), "-j"]
    if base is not None:
        argv[5:5] = ["-B", str(base)]
    proc = subprocess.run(argv, capture_output=True, check=True)
    types: list[dict[str, Any]] = json.loads(proc.stdout)["types"]
    return types


@pytest.fixture(scope="session")
def sysfs_btf() -> tuple[bytes, BTF]:
    require(SYSFS_VMLINUX.exists(), "the running kernel has no /sys/kernel/btf/vmlinux")
    data = SYSFS_VMLINUX.read_bytes()
    return data, BTF.from_bytes(data, source=str(SYSFS_VMLINUX))


@pytest.fixture(scope="session")
def sysfs_json(sysfs_btf: tuple[bytes, BTF]) -> list[dict[str, Any]]:
    return _bpftool_json(SYSFS_VMLINUX)


def _unpack_vmlinux(kernel: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    kver, root = kernel
    vmlinuz = root / "boot" / f"vmlinuz-{kver}"
    elf = vmlinux_from_vmlinuz(vmlinuz.read_bytes(), str(vmlinuz), decompress=decompress)
    path = tmp_path_factory.mktemp("btf") / f"vmlinux-{kver}"
    path.write_bytes(elf)
    return path


def _conntrack_path(kernel: tuple[str, Path]) -> Path:
    kver, root = kernel
    path = root / "lib" / "modules" / kver / "kernel" / "net" / "netfilter" / "nf_conntrack.ko"
    require(path.exists(), f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def old_vmlinux(old_kernel: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack_vmlinux(old_kernel, tmp_path_factory)


@pytest.fixture(scope="session")
def old_btf(old_vmlinux: Path) -> BTF:
    return BTF.from_bytes(old_vmlinux.read_bytes(), source=str(old_vmlinux))


@pytest.fixture(scope="session")
def conntrack_ko(old_kernel: tuple[str, Path]) -> Path:
    return _conntrack_path(old_kernel)


@pytest.fixture(scope="session")
def conntrack_btf(conntrack_ko: Path, old_btf: BTF) -> BTF:
    return BTF.from_bytes(conntrack_ko.read_bytes(), base=old_btf, source=str(conntrack_ko))


@pytest.fixture(scope="session")
def new_vmlinux(new_kernel: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack_vmlinux(new_kernel, tmp_path_factory)


@pytest.fixture(scope="session")
def new_btf(new_vmlinux: Path) -> BTF:
    return BTF.from_bytes(new_vmlinux.read_bytes(), source=str(new_vmlinux))


@pytest.fixture(scope="session")
def new_conntrack_ko(new_kernel: tuple[str, Path]) -> Path:
    return _conntrack_path(new_kernel)


@pytest.fixture(scope="session")
def new_conntrack_btf(new_conntrack_ko: Path, new_btf: BTF) -> BTF:
    return BTF.from_bytes(new_conntrack_ko.read_bytes(), base=new_btf, source=str(new_conntrack_ko))


# fixture names of each Debian kernel's (vmlinux file, its BTF, nf_conntrack.ko, the module's BTF)
DEBIAN = {
    "old": ("old_vmlinux", "old_btf", "conntrack_ko", "conntrack_btf"),
    "new": ("new_vmlinux", "new_btf", "new_conntrack_ko", "new_conntrack_btf"),
}


# A small BPF object with every kind clang 14 emits (no ENUM64: clang 15+).
MINI_C = r"""
typedef unsigned int u32;
typedef signed char s8;
struct undefined_thing;
enum colour { RED = -1, GREEN = 7 };
struct bits { u32 a : 3; u32 b : 5; s8 c; union { int i; float f; } u; };
struct holder {
    const volatile struct bits *restrict p;
    struct undefined_thing *fwd;
    int arr[4][2];
    enum colour colour;
    double d;
    int __attribute__((btf_type_tag("user"))) *user_ptr;
    int tagged __attribute__((btf_decl_tag("member_tag")));
};
struct holder global_holder __attribute__((section(".data")));
struct bits global_bits __attribute__((section(".data")));
int counter __attribute__((btf_decl_tag("var_tag")));
__attribute__((noinline)) static int
helper(struct holder *h, int x __attribute__((btf_decl_tag("p"))))
{
    return h->arr[x & 3][1] + h->colour;
}
__attribute__((btf_decl_tag("bpf_kfunc"))) int entry(void *ctx)
{
    counter++;
    return helper(&global_holder, counter) + global_holder.p->a + global_bits.b;
}
char _license[] __attribute__((section("license"))) = "GPL";
"""


@pytest.fixture(scope="session")
def mini_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clang = require_tool("clang")
    work = tmp_path_factory.mktemp("mini")
    (work / "mini.bpf.c").write_text(MINI_C)
    obj = work / "mini.bpf.o"
    subprocess.run(
        [clang, "-g", "-O2", "-target", "bpf", "-c", str(work / "mini.bpf.c"), "-o", str(obj)],
        check=True,
    )
    return obj


@pytest.fixture(scope="session")
def mini_blob(mini_object: Path) -> bytes:
    """The raw .BTF of the mini object, laid out canonically."""
    return BTF.from_bytes(mini_object.read_bytes()).to_bytes()


# --- bpftool's view of a decoded type --------------------------------------------------------

_INT_ENCODINGS = {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}
_LINKAGES = {0: "static", 1: "global", 2: "extern"}


def _as_bpftool(t: Type) -> dict[str, Any]:
    """The JSON object bpftool 7.1 prints for `t` (src/btf.c dump_btf_type)."""
    anon = "(anon)"
    out: dict[str, Any] = {"id": t.id, "kind": t.kind.name, "name": t.name or anon}
    k = t.kind
    if k == Kind.INT:
        out.update(
            size=t.size,
            bits_offset=t.int_offset,
            nr_bits=t.int_bits,
            encoding=_INT_ENCODINGS.get(t.int_encoding, "UNKN"),
        )
    elif k in (Kind.PTR, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPEDEF, Kind.TYPE_TAG):
        out["type_id"] = t.type
    elif k == Kind.ARRAY:
        out.update(type_id=t.elem_type, index_type_id=t.index_type, nr_elems=t.nelems)
    elif k in (Kind.STRUCT, Kind.UNION):
        members = []
        for m in t.members:
            member = {"name": m.name or anon, "type_id": m.type, "bits_offset": m.bit_offset}
            if m.bitfield_size:
                member["bitfield_size"] = m.bitfield_size
            members.append(member)
        out.update(size=t.size, vlen=t.vlen, members=members)
    elif k in (Kind.ENUM, Kind.ENUM64):
        values = []
        for v in t.values:
            val = v.value
            if k == Kind.ENUM and not t.kind_flag and val >= 1 << 31:
                val += (1 << 64) - (1 << 32)  # bpftool widens the s32 field to u64
            values.append({"name": v.name or anon, "val": val})
        out.update(
            encoding="SIGNED" if t.kind_flag else "UNSIGNED",
            size=t.size,
            vlen=t.vlen,
            values=values,
        )
    elif k == Kind.FWD:
        out["fwd_kind"] = "union" if t.kind_flag else "struct"
    elif k == Kind.FUNC:
        out.update(type_id=t.type, linkage=_LINKAGES.get(t.linkage, "(unknown)"))
    elif k == Kind.FUNC_PROTO:
        params = [{"name": p.name or anon, "type_id": p.type} for p in t.params]
        out.update(ret_type_id=t.type, vlen=t.vlen, params=params)
    elif k == Kind.VAR:
        out.update(type_id=t.type, linkage=_LINKAGES.get(t.linkage, "(unknown)"))
    elif k == Kind.DATASEC:
        secinfos = [{"type_id": v.type, "offset": v.offset, "size": v.size} for v in t.secinfos]
        out.update(size=t.size, vlen=t.vlen, vars=secinfos)
    elif k == Kind.FLOAT:
        out["size"] = t.size
    elif k == Kind.DECL_TAG:
        out.update(type_id=t.type, component_idx=t.component_idx)
    return out


def _check_against_bpftool(btf: BTF, expected: list[dict[str, Any]]) -> None:
    assert [e["id"] for e in expected] == list(btf.own_ids()), "type ids differ"
    mismatches = [(e, got) for e in expected if (got := _as_bpftool(btf.type(e["id"]))) != e]
    assert not mismatches, f"{len(mismatches)} types differ, first: {mismatches[0]}"
    # kind() and name() answer without decoding, and must agree too
    for e in expected:
        assert btf.kind(e["id"]).name == e["kind"]
        assert (btf.name(e["id"]) or "(anon)") == e["name"]


def _expected_names(expected: list[dict[str, Any]]) -> dict[str, list[int]]:
    names: dict[str, list[int]] = {}
    for e in expected:
        if e["name"] != "(anon)":
            names.setdefault(e["name"], []).append(e["id"])
    return names


def _json_sizes(expected: list[dict[str, Any]], ptr_size: int = 8) -> dict[int, int]:
    """Independent type sizes from bpftool's JSON (where a size exists)."""
    by_id = {e["id"]: e for e in expected}
    sizes: dict[int, int] = {}

    def size(tid: int, depth: int = 0) -> int | None:
        if tid in sizes:
            return sizes[tid]
        e = by_id.get(tid)
        if e is None or depth > 64:
            return None
        kind = e["kind"]
        result: int | None = None
        if kind in ("INT", "STRUCT", "UNION", "ENUM", "ENUM64", "DATASEC", "FLOAT"):
            result = e["size"]
        elif kind == "PTR":
            result = ptr_size
        elif kind in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG", "VAR", "DECL_TAG"):
            result = size(e["type_id"], depth + 1)
        elif kind == "ARRAY":
            inner = size(e["type_id"], depth + 1)
            result = None if inner is None else inner * e["nr_elems"]
        if result is not None:
            sizes[tid] = result
        return result

    for e in expected:
        size(e["id"])
    return sizes


# --- whole kernels against bpftool ----------------------------------------------------------


def test_running_kernel_matches_bpftool(
    sysfs_btf: tuple[bytes, BTF], sysfs_json: list[dict[str, Any]]
) -> None:
    _, btf = sysfs_btf
    assert btf.byteorder == "little"
    assert btf.nr_types == len(sysfs_json) + 1
    _check_against_bpftool(btf, sysfs_json)


@pytest.mark.parametrize("which", list(DEBIAN))
def test_debian_vmlinux_matches_bpftool(which: str, request: pytest.FixtureRequest) -> None:
    vmlinux: Path = request.getfixturevalue(DEBIAN[which][0])
    btf: BTF = request.getfixturevalue(DEBIAN[which][1])
    expected = _bpftool_json(vmlinux)
    assert len(expected) > 90_000
    assert btf.nr_types == len(expected) + 1
    _check_against_bpftool(btf, expected)


def test_debian_kernels_differ(old_btf: BTF, new_btf: BTF) -> None:
    """The two kernels are distinct builds: the cross-check above covers two BTF blobs."""
    assert old_btf.to_bytes() != new_btf.to_bytes()


@pytest.mark.parametrize("which", list(DEBIAN))
def test_split_module_btf_matches_bpftool(which: str, request: pytest.FixtureRequest) -> None:
    old_vmlinux, old_btf, conntrack_ko, conntrack_btf = (
        request.getfixturevalue(name) for name in DEBIAN[which]
    )
    expected = _bpftool_json(conntrack_ko, base=old_vmlinux)
    assert conntrack_btf.start_id == old_btf.nr_types
    assert conntrack_btf.base is old_btf
    assert len(expected) > 100
    _check_against_bpftool(conntrack_btf, expected)
    # strings continue after the base's: some module names live in the base's strings
    assert conntrack_btf.strings_size > old_btf.strings_size
    # base types through the module BTF, and find() across the base
    task = old_btf.find("task_struct", Kind.STRUCT)
    assert len(task) == 1
    assert conntrack_btf.type(task[0]) == old_btf.type(task[0])
    assert conntrack_btf.kind(task[0]) == Kind.STRUCT
    assert conntrack_btf.name(task[0]) == "task_struct"
    assert conntrack_btf.find("task_struct", Kind.STRUCT) == task
    own = _expected_names(expected)
    base_names = _expected_names(_bpftool_json(old_vmlinux))
    module_only = [name for name in own if name not in base_names]
    assert module_only
    assert all(tid >= conntrack_btf.start_id for tid in conntrack_btf.find(module_only[0]))
    for name, ids in own.items():
        assert conntrack_btf.find(name) == tuple(ids) + tuple(base_names.get(name, ()))


def test_name_index_decodes_no_type(
    sysfs_btf: tuple[bytes, BTF], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lazy indexing: parsing, find(), kind() and name() on a full kernel BTF decode nothing;
    type() decodes just the one type asked for, once."""
    data, _ = sysfs_btf
    decoded: list[int] = []
    constructed: list[int] = []
    real_decode = btf_module.decode_record
    real_type = btftypes.Type

    def spy_decode(words: Any, at: int, tid: int, string: Any) -> Type:
        decoded.append(tid)
        return real_decode(words, at, tid, string)

    def spy_type(*args: Any, **kwargs: Any) -> Type:
        constructed.append(1)
        return real_type(*args, **kwargs)

    monkeypatch.setattr(btf_module, "decode_record", spy_decode)
    monkeypatch.setattr(btftypes, "Type", spy_type)
    btf = BTF.from_bytes(data, source=str(SYSFS_VMLINUX))
    assert btf.nr_types > 95_000
    (task,) = btf.find("task_struct", Kind.STRUCT)
    assert btf.find("bpf_prog") and btf.find("no_such_type_anywhere") == ()
    assert btf.find("bpf_map_ops", Kind.STRUCT)
    assert btf.kind(task) == Kind.STRUCT and btf.name(task) == "task_struct"
    assert decoded == [] and constructed == []
    decl = btf.type(task)
    assert decl.name == "task_struct" and len(decl.members) > 50
    assert decoded == [task] and len(constructed) == 1
    assert btf.type(task) is decl  # cached: no second decode
    assert decoded == [task]


def test_find_agrees_with_bpftool_for_every_name(
    sysfs_btf: tuple[bytes, BTF], sysfs_json: list[dict[str, Any]]
) -> None:
    _, btf = sysfs_btf
    names = _expected_names(sysfs_json)
    wrong = [name for name, ids in names.items() if btf.find(name) != tuple(ids)]
    assert not wrong, f"{len(wrong)} names found wrongly, e.g. {wrong[:5]}"
    assert btf.find("no_such_type_anywhere") == ()
    struct_ids = btf.find("task_struct", Kind.STRUCT)
    assert len(struct_ids) == 1
    assert btf.find("task_struct", Kind.FUNC) == ()


def test_type_size_agrees_with_bpftool(
    sysfs_btf: tuple[bytes, BTF], sysfs_json: list[dict[str, Any]]
) -> None:
    _, btf = sysfs_btf
    (task,) = btf.find("task_struct", Kind.STRUCT)
    by_id = {e["id"]: e for e in sysfs_json}
    assert btf.type_size(task) == by_id[task]["size"] > 1000
    assert btf.pointer_size() == 8
    sizes = _json_sizes(sysfs_json)
    assert len(sizes) > 30_000
    wrong = [tid for tid, size in sizes.items() if btf.type_size(tid) != size]
    assert not wrong, f"sizes differ for {wrong[:5]}"
    for e in sysfs_json:
        if e["kind"] in ("FUNC", "FUNC_PROTO", "FWD"):
            with pytest.raises(BTFError):
                btf.type_size(e["id"])
            break
    with pytest.raises(BTFError):
        btf.type_size(0)


def test_resolve_skips_modifiers(
    sysfs_btf: tuple[bytes, BTF], sysfs_json: list[dict[str, Any]]
) -> None:
    _, btf = sysfs_btf
    modifiers = {"TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"}
    by_id = {e["id"]: e for e in sysfs_json}
    for e in sysfs_json:
        tid = e["id"]
        while tid and by_id[tid]["kind"] in modifiers:
            tid = by_id[tid]["type_id"]
        assert btf.resolve(e["id"]) == tid
    assert btf.resolve(0) == 0
    with pytest.raises(BTFError):
        btf.resolve(btf.nr_types)


def test_bpf_kfunc_decl_tags(
    sysfs_btf: tuple[bytes, BTF], sysfs_json: list[dict[str, Any]]
) -> None:
    _, btf = sysfs_btf
    tagged = {
        e["type_id"] for e in sysfs_json if e["kind"] == "DECL_TAG" and e["name"] == "bpf_kfunc"
    }
    require(tagged, "the running kernel's BTF has no bpf_kfunc decl tags (pahole < 1.27)")
    for name in ("bpf_obj_new_impl", "bpf_cpumask_create"):
        funcs = btf.find(name, Kind.FUNC)
        assert funcs, name
        assert any(t.name == "bpf_kfunc" and t.component_idx == -1 for t in btf.decl_tags(funcs[0]))
    found = {
        tid
        for tid in btf.ids_of_kind(Kind.FUNC)
        if any(t.name == "bpf_kfunc" for t in btf.decl_tags(tid))
    }
    assert found == tagged
    assert btf.decl_tags(0) == ()


def test_mini_object_every_kind(mini_object: Path, mini_blob: bytes) -> None:
    btf = BTF.from_bytes(mini_object.read_bytes(), source=str(mini_object))
    assert BTF.from_bytes(mini_blob).to_bytes() == mini_blob
    expected = _bpftool_json(mini_object)
    _check_against_bpftool(btf, expected)
    kinds = {btf.kind(tid) for tid in btf.own_ids()}
    assert kinds >= {
        Kind.INT, Kind.PTR, Kind.ARRAY, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.FWD,
        Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.FUNC, Kind.FUNC_PROTO,
        Kind.VAR, Kind.DATASEC, Kind.FLOAT, Kind.DECL_TAG, Kind.TYPE_TAG,
    }  # fmt: skip
    (bits,) = btf.find("bits", Kind.STRUCT)
    a, b = btf.type(bits).members[:2]
    assert (a.name, a.bit_offset, a.bitfield_size) == ("a", 0, 3)
    assert (b.name, b.bit_offset, b.bitfield_size) == ("b", 3, 5)
    (colour,) = btf.find("colour", Kind.ENUM)
    enum = btf.type(colour)
    red = -1 if enum.kind_flag else 0xFFFFFFFF  # clang 14 marks no enum signed (kind_flag)
    assert [(v.name, v.value) for v in enum.values] == [("RED", red), ("GREEN", 7)]
    (holder,) = btf.find("holder", Kind.STRUCT)
    member_tags = [t for t in btf.decl_tags(holder) if t.name == "member_tag"]
    assert [t.component_idx for t in member_tags] == [6]
    (helper,) = btf.find("helper", Kind.FUNC)
    assert btf.type(helper).linkage == 0
    assert [t.component_idx for t in btf.decl_tags(helper)] == [1]
    (entry,) = btf.find("entry", Kind.FUNC)
    assert btf.type(entry).linkage == 1
    assert btf.type_size(holder) == btf.type(holder).size


# --- byte order, header variants, serialising ------------------------------------------------


def _swap_blob(blob: bytes) -> bytes:
    """Test-only: a canonical little-endian blob (header 24, no layout) in big-endian."""
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        "<HBBIIIII", blob
    )
    assert hdr_len == 24
    header = struct.pack(
        ">HBBIIIII", magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
    )
    words = array("I", blob[24 + type_off : 24 + type_off + type_len])
    words.byteswap()
    return header + words.tobytes() + blob[24 + str_off :]


def _all_types(btf: BTF) -> list[Type]:
    return list(btf)


def test_big_endian_parses_identically(sysfs_btf: tuple[bytes, BTF]) -> None:
    data, btf = sysfs_btf
    big = btf.to_bytes("big")
    assert big[:2] == b"\xeb\x9f"
    assert big == _swap_blob(data)
    swapped = BTF.from_bytes(big)
    assert swapped.byteorder == "big"
    assert swapped.nr_types == btf.nr_types
    assert _all_types(swapped) == _all_types(btf)
    assert swapped.find("task_struct") == btf.find("task_struct")
    assert swapped.to_bytes("little") == data


def test_big_endian_split_btf(conntrack_btf: BTF, old_btf: BTF) -> None:
    big_base = BTF.from_bytes(old_btf.to_bytes("big"))
    big = BTF.from_bytes(conntrack_btf.to_bytes("big"), base=big_base)
    assert _all_types(big) == _all_types(conntrack_btf)
    assert big.find("nf_conn") == conntrack_btf.find("nf_conn")


def test_big_endian_elf(mini_object: Path) -> None:
    """A big-endian ELF (clang -target bpfeb) with .BTF."""
    clang = require_tool("clang")
    src = mini_object.with_suffix(".c")
    src.write_text(MINI_C)
    little = BTF.from_bytes(mini_object.read_bytes())
    obj = mini_object.with_name("mini.bpfeb.o")
    subprocess.run(
        [clang, "-g", "-O2", "-target", "bpfeb", "-c", str(src), "-o", str(obj)], check=True
    )
    big = BTF.from_bytes(obj.read_bytes())
    assert big.byteorder == "big"
    assert _all_types(big) == _all_types(little)


def _with_layout(
    blob: bytes, *, hdr_len: int = 32, extra: bytes = b"", layout: bytes = b""
) -> bytes:
    """Rebuild a canonical 24-byte-header blob with a longer header, a layout section and extra
    type records appended to the type section."""
    _, _, _, _, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", blob)
    types = blob[24 + type_off : 24 + type_off + type_len] + extra
    strings = blob[24 + str_off : 24 + str_off + str_len]
    header = struct.pack(
        "<HBBIIIII", 0xEB9F, 1, 0, hdr_len, 0, len(types), len(types) + len(layout), len(strings)
    )
    if hdr_len >= 32:
        header += struct.pack("<II", len(types), len(layout))
    header += bytes(max(0, hdr_len - len(header)))
    return header[:hdr_len] + types + layout + strings


# libbpf's table of the 20 known kinds: (info_sz, elem_sz, flags)
_LAYOUT_20 = [
    (0, 0), (4, 0), (0, 0), (12, 0), (0, 12), (0, 12), (0, 8), (0, 0), (0, 0), (0, 0),
    (0, 0), (0, 0), (0, 0), (0, 8), (4, 0), (0, 12), (0, 0), (4, 0), (0, 0), (0, 12),
]  # fmt: skip


def _layout(entries: list[tuple[int, int]]) -> bytes:
    return b"".join(struct.pack("<BBH", info, elem, 0) for info, elem in entries)


def test_header_with_layout_and_unknown_kind(mini_blob: bytes) -> None:
    reference = _all_types(BTF.from_bytes(mini_blob))
    # hdr_len 32 with libbpf's layout section: same types
    plain = BTF.from_bytes(_with_layout(mini_blob, layout=_layout(_LAYOUT_20)))
    assert plain.hdr_len == 32 and len(plain.layout) == 20
    assert _all_types(plain) == reference
    # a kind 21 type (vlen 2, 4 bytes of info, 8 per item) is skipped thanks to the layout
    layout = _layout([*_LAYOUT_20, (0, 0), (4, 8)])
    unknown = struct.pack("<IIII", 1, 21 << 24 | 2, 77, 5) + bytes(16)
    trailer = struct.pack("<III", 1, 2 << 24, 1)  # a PTR after it, to prove the walk went on
    btf = BTF.from_bytes(_with_layout(mini_blob, extra=unknown + trailer, layout=layout))
    assert btf.nr_types == len(reference) + 3
    assert _all_types(btf)[: len(reference)] == reference
    odd = btf.type(len(reference) + 1)
    assert (odd.kind, odd.vlen, odd.size) == (Kind.UNKN, 2, 77)
    assert btf.raw_kind(odd.id) == 21
    assert btf.kind(odd.id + 1) == Kind.PTR and btf.type(odd.id + 1).type == 1
    # round trip, in both byte orders
    for order in ("little", "big"):
        again = BTF.from_bytes(btf.to_bytes(order))
        assert again.layout == btf.layout and _all_types(again) == _all_types(btf)
    # without the layout entry, the unknown kind is an error
    with pytest.raises(BTFError, match="kind 21"):
        BTF.from_bytes(_with_layout(mini_blob, extra=unknown, layout=_layout(_LAYOUT_20)))
    with pytest.raises(BTFError, match="kind 21"):
        BTF.from_bytes(_with_layout(mini_blob, hdr_len=24, extra=unknown))


@pytest.mark.parametrize("hdr_len", [28, 40, 64])
def test_other_header_lengths(mini_blob: bytes, hdr_len: int) -> None:
    """Lengths between 24 and 32 carry no layout; longer headers' unknown fields are ignored."""
    reference = _all_types(BTF.from_bytes(mini_blob))
    layout = _layout(_LAYOUT_20) if hdr_len >= 32 else b""
    btf = BTF.from_bytes(_with_layout(mini_blob, hdr_len=hdr_len, layout=layout))
    assert btf.hdr_len == hdr_len
    assert _all_types(btf) == reference


# --- corrupt input ---------------------------------------------------------------------------


def _exercise(data: bytes, base: BTF | None = None) -> None:
    """Parse and use everything; only BTFError may come out."""
    try:
        btf = BTF.from_bytes(data, base=base)
    except BTFError:
        return
    for tid in btf.own_ids():
        for call in (btf.type, btf.resolve, btf.type_size, btf.decl_tags, btf.name, btf.kind):
            with contextlib.suppress(BTFError):
                call(tid)
    for name in ("holder", "bits", "entry", "int", ""):
        btf.find(name)
    btf.to_bytes("big")


def _set_u32(blob: bytes, offset: int, value: int) -> bytes:
    return blob[:offset] + struct.pack("<I", value) + blob[offset + 4 :]


def test_corrupt_headers(mini_blob: bytes) -> None:
    with pytest.raises(BTFError, match="magic"):
        BTF.from_bytes(b"\x00\x00" + mini_blob[2:])
    for hdr_len in (0, 8, 23, len(mini_blob) + 1, 0xFFFFFFFF):
        with pytest.raises(BTFError, match="header length"):
            BTF.from_bytes(_set_u32(mini_blob, 4, hdr_len))
    for field in (8, 12, 16, 20):  # type_off, type_len, str_off, str_len
        for value in (0xFFFFFFFF, 0x7FFFFFFF, len(mini_blob), 3):
            if field == 20 and value == 3:
                continue  # a 3-byte string section may happen to be valid
            with pytest.raises(BTFError) as caught:
                BTF.from_bytes(_set_u32(mini_blob, field, value))
            assert caught.value.offset in (8, 12, 16, 20)
    with pytest.raises(BTFError, match="version"):
        BTF.from_bytes(mini_blob[:2] + b"\x02" + mini_blob[3:])
    (str_off,) = struct.unpack_from("<I", mini_blob, 16)
    no_empty_first = bytearray(mini_blob)
    no_empty_first[24 + str_off] = ord("x")
    with pytest.raises(BTFError, match="empty string") as caught:
        BTF.from_bytes(bytes(no_empty_first))
    assert caught.value.hint and "base" in caught.value.hint
    with pytest.raises(BTFError, match="does not end with NUL"):
        BTF.from_bytes(mini_blob[:-1] + b"x")
    with pytest.raises(BTFError, match=r"no \.BTF section"):
        BTF.from_bytes(_elf_without_btf())


def _elf_without_btf() -> bytes:
    """A minimal 64-bit little-endian ELF: null section + .shstrtab, no .BTF."""
    names = b"\0.shstrtab\0"
    shoff = 64 + len(names)
    header = b"\x7fELF\x02\x01\x01" + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 247, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 2, 1)
    null = bytes(64)
    shstrtab = struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, 64, len(names), 0, 0, 1, 0)
    return header + names + null + shstrtab


def _make_elf(blob: bytes, elf_class: int, order: str) -> bytes:
    """A minimal relocatable ELF (null section, .BTF, .shstrtab) of either class and order."""
    names = b"\0.BTF\0.shstrtab\0"
    if elf_class == 2:
        ehdr_size, shent, hdr_fmt, sh_fmt = 64, 64, "HHIQQQIHHHHHH", "IIQQQQIIQQ"
    else:
        ehdr_size, shent, hdr_fmt, sh_fmt = 52, 40, "HHIIIIIHHHHHH", "IIIIIIIIII"
    btf_at = ehdr_size
    names_at = btf_at + len(blob)
    shoff = (names_at + len(names) + 7) & ~7
    ident = b"\x7fELF" + bytes([elf_class, 1 if order == "<" else 2, 1]) + bytes(9)
    ehdr = ident + struct.pack(
        order + hdr_fmt, 1, 247, 1, 0, 0, shoff, 0, ehdr_size, 0, 0, shent, 3, 2
    )
    sections = bytes(shent)
    sections += struct.pack(order + sh_fmt, 1, 1, 0, 0, btf_at, len(blob), 0, 0, 1, 0)
    sections += struct.pack(order + sh_fmt, 6, 3, 0, 0, names_at, len(names), 0, 0, 1, 0)
    body = ehdr + blob + names
    return body + bytes(shoff - len(body)) + sections


@pytest.mark.parametrize("elf_class", [1, 2])
@pytest.mark.parametrize("order", ["<", ">"])
def test_elf_classes_and_orders(mini_blob: bytes, elf_class: int, order: str) -> None:
    reference = _all_types(BTF.from_bytes(mini_blob))
    byteorder = "little" if order == "<" else "big"
    blob = BTF.from_bytes(mini_blob).to_bytes(byteorder)
    elf = _make_elf(blob, elf_class, order)
    btf = BTF.from_bytes(elf, source="mini.o")
    assert btf.byteorder == byteorder
    assert _all_types(btf) == reference
    # corrupt section tables give BTFError, never another exception
    for end in range(0, len(elf), 5):
        _exercise(elf[:end])
    for at in range(0x20, 0x40):
        _exercise(elf[:at] + b"\xff" + elf[at + 1 :])


def test_split_btf_truncated(conntrack_btf: BTF, old_btf: BTF) -> None:
    blob = conntrack_btf.to_bytes()
    for end in range(0, len(blob), max(1, len(blob) // 40)):
        with pytest.raises(BTFError):
            BTF.from_bytes(blob[:end], base=old_btf)
    with pytest.raises(BTFError, match="empty string"):
        BTF.from_bytes(blob)  # split BTF without its base


def test_mmap_input_can_be_closed_after_an_error(mini_blob: bytes, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.btf", tmp_path / "bad.btf"
    good.write_bytes(mini_blob)
    bad.write_bytes(mini_blob[:-1] + b"x")
    with good.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        btf = BTF.from_bytes(mapped)  # type: ignore[arg-type]
    assert _all_types(btf) == _all_types(BTF.from_bytes(mini_blob))
    with bad.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        with pytest.raises(BTFError):
            BTF.from_bytes(mapped)  # type: ignore[arg-type]
        mapped.close()  # no BufferError: the parser kept no view of the mapping


def test_truncated_everywhere(mini_blob: bytes) -> None:
    for end in range(len(mini_blob)):
        with pytest.raises(BTFError):
            BTF.from_bytes(mini_blob[:end])


def test_truncated_elf(mini_object: Path) -> None:
    data = mini_object.read_bytes()
    for end in range(0, len(data), 3):
        _exercise(data[:end])


def test_vlen_and_name_beyond_the_end(mini_blob: bytes) -> None:
    btf = BTF.from_bytes(mini_blob)
    with_vlen = (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.FUNC_PROTO, Kind.DATASEC)
    last = max(tid for tid in btf.own_ids() if btf.kind(tid) in with_vlen)
    info_at = btf.type_offset + 4 * btf._offs[last - btf.start_id] + 4
    (info,) = struct.unpack_from("<I", mini_blob, info_at)
    with pytest.raises(BTFError, match="past the end") as caught:
        BTF.from_bytes(_set_u32(mini_blob, info_at, info | 0xFFFFFF))
    assert caught.value.offset is not None and caught.value.offset >= info_at - 4
    with pytest.raises(BTFError, match="name offset"):
        BTF.from_bytes(_set_u32(mini_blob, info_at - 4, 0x00FFFFFF))
    # a member's name offset is checked when the struct is decoded
    (holder,) = btf.find("holder", Kind.STRUCT)
    member_at = btf.type_offset + 4 * (btf._offs[holder - btf.start_id] + 3)
    broken = BTF.from_bytes(_set_u32(mini_blob, member_at, 0x7FFFFFFF))
    with pytest.raises(BTFError, match="string offset") as caught:
        broken.type(holder)
    assert caught.value.offset == member_at - 12
    # type ids out of range decode fine, and resolve/type_size say what is wrong
    (u32,) = btf.find("u32", Kind.TYPEDEF)
    target_at = btf.type_offset + 4 * btf._offs[u32 - btf.start_id] + 8
    dangling = BTF.from_bytes(_set_u32(mini_blob, target_at, 0xFFFFF))
    assert dangling.type(u32).type == 0xFFFFF
    with pytest.raises(BTFError, match="out of range"):
        dangling.resolve(u32)
    with pytest.raises(BTFError, match="out of range"):
        dangling.type_size(u32)
    looped = BTF.from_bytes(_set_u32(mini_blob, target_at, u32))
    with pytest.raises(BTFError, match=r"itself|loop"):
        looped.resolve(u32)
    with pytest.raises(BTFError, match="loop"):
        looped.type_size(u32)
    with pytest.raises(BTFError, match="out of range"):
        btf.type(btf.nr_types)
    with pytest.raises(BTFError, match="out of range"):
        btf.type(-1)


@settings(
    max_examples=300,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzz_bit_flips_and_truncation(mini_blob: bytes, data: st.DataObject) -> None:
    blob = bytearray(mini_blob)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "word", "cut"]))
        if not blob:
            break
        at = data.draw(st.integers(0, len(blob) - 1))
        if action == "flip":
            blob[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "word":
            value = data.draw(
                st.sampled_from([0, 1, 0x7F, 0xFFFF, 0xFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF])
            )
            blob[at : at + 4] = struct.pack("<I", value)
        else:
            del blob[at:]
    _exercise(bytes(blob))


@settings(
    max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_big_endian_header(mini_blob: bytes, data: st.DataObject) -> None:
    big = bytearray(BTF.from_bytes(mini_blob).to_bytes("big"))
    at = data.draw(st.integers(0, 31))
    big[at] ^= 1 << data.draw(st.integers(0, 7))
    _exercise(bytes(big))
