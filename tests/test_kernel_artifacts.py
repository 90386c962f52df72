"""Kernel-side readers and discovery, on the real Debian kernels and on fake roots."""

from __future__ import annotations

import gzip
import io
import os
import platform
import re
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st

from weak_bpf.errors import ELFError, FormatError, KernelNotFound, ParseError
from weak_bpf.files.compression import Format, decompress, detect
from weak_bpf.files.paths import resolve_in_root
from weak_bpf.kernel import load as kernel_data
from weak_bpf.kernel.find import (
    BtfSourceKind,
    arch_of,
    find_kernel,
    find_kernels,
    installed_kernels,
)
from weak_bpf.parsers.btf import BTF
from weak_bpf.parsers.elf import section_bytes, section_headers
from weak_bpf.parsers.greylist import parse_greylist, render_greylist
from weak_bpf.parsers.kabi import parse_kabi_list
from weak_bpf.parsers.kconfig import parse_kconfig
from weak_bpf.parsers.kmod import decode_kf_flags, read_kernel_object
from weak_bpf.parsers.symvers import ExportType, SymvEntry, parse_symvers
from weak_bpf.parsers.sysmap import parse_system_map
from weak_bpf.parsers.vmlinuz import vmlinux_from_vmlinuz

from conftest import require, require_tool

NF_CONNTRACK = "kernel/net/netfilter/nf_conntrack.ko"
KFUNCS_OF_NF_CONNTRACK = {
    "bpf_xdp_ct_lookup",
    "bpf_skb_ct_lookup",
    "bpf_xdp_ct_alloc",
    "bpf_skb_ct_alloc",
    "bpf_ct_release",
    "bpf_ct_insert_entry",
}


def headers(kdir: Path, kver: str) -> Path:
    return kdir / "usr/src" / f"linux-headers-{kver}"


@pytest.fixture(scope="session")
def vmlinux_of(debian_kernels: dict[str, Path]) -> dict[str, bytes]:
    """The vmlinux ELF of each Debian kernel, unpacked once."""
    return {
        kver: kernel_data.load_vmlinux(kdir / "boot" / f"vmlinuz-{kver}")
        for kver, kdir in debian_kernels.items()
    }


@pytest.fixture(scope="session")
def vmlinux_file(
    tmp_path_factory: pytest.TempPathFactory, vmlinux_of: dict[str, bytes]
) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for kver, data in vmlinux_of.items():
        paths[kver] = tmp_path_factory.mktemp("vmlinux") / f"vmlinux-{kver}"
        paths[kver].write_bytes(data)
    return paths


# --- real data -------------------------------------------------------------------------------


def test_real_symvers(debian_kernels: dict[str, Path]) -> None:
    for kver, kdir in debian_kernels.items():
        path = headers(kdir, kver) / "Module.symvers"
        symvers = kernel_data.load_symvers(path)
        lines = path.read_bytes().count(b"\n")
        assert len(symvers) == lines > 10_000
        # cross-check a few CRCs against grep
        for name in ("init_uts_ns", "nf_conntrack_in", "bpf_prog_put"):
            grep = subprocess.run(
                ["grep", "-P", f"^0x[0-9a-f]+\\t{name}\\t", str(path)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split("\t")
            entry = symvers.get(name)
            assert entry is not None
            assert entry.crc == int(grep[0], 16)
            assert entry.module == grep[2]
            assert entry.export_type.value == grep[3].strip()
        assert symvers.get("init_uts_ns").export_type.gpl_only  # type: ignore[union-attr]
        assert symvers.get("nf_conntrack_in").module == "net/netfilter/nf_conntrack"  # type: ignore[union-attr]


def packed_with(argv: list[str], data: bytes) -> bytes:
    """`data` compressed by the real program `argv` (stdin to stdout)."""
    exe = require_tool(argv[0])
    return subprocess.run([exe, *argv[1:]], input=data, capture_output=True, check=True).stdout


SYMVERS_PACKERS = {  # suffix -> (program, the format it must write)
    ".gz": (["gzip", "-c"], Format.GZIP),
    ".xz": (["xz", "-c"], Format.XZ),
    ".zst": (["zstd", "-q", "-c"], Format.ZSTD),
}


@pytest.mark.parametrize("suffix", list(SYMVERS_PACKERS))
def test_symvers_compressed(tmp_path: Path, old_kernel: tuple[str, Path], suffix: str) -> None:
    """RHEL/Fedora ship symvers packed: discovery finds it and loading gives the plain entries."""
    kver, kdir = old_kernel
    plain_path = headers(kdir, kver) / "Module.symvers"
    plain = kernel_data.load_symvers(plain_path)
    assert len(plain) > 10_000
    argv, fmt = SYMVERS_PACKERS[suffix]
    packed = packed_with(argv, plain_path.read_bytes())
    assert detect(packed) is fmt
    fake = "6.1.0-1.el9.x86_64"
    places = [f"usr/lib/modules/{fake}/symvers{suffix}"]
    if suffix != ".zst":  # boot/ holds symvers-K.gz (RHEL 8) or symvers-K.xz (RHEL 9)
        places.append(f"boot/symvers-{fake}{suffix}")
    for place in places:
        root = tmp_path / place.split("/")[0] / "root"
        path = root / place
        path.parent.mkdir(parents=True)
        path.write_bytes(packed)
        (root / "boot").mkdir(exist_ok=True)
        (root / "boot" / f"vmlinuz-{fake}").write_bytes(b"")
        assert installed_kernels(root) == (fake,)
        found = find_kernel(root, fake, running="")
        assert found.symvers == path
        loaded = kernel_data.load_symvers(found.symvers)
        assert loaded.entries == plain.entries
        assert loaded.get("nf_conntrack_in") == plain.get("nf_conntrack_in") is not None


def test_real_config(debian_kernels: dict[str, Path]) -> None:
    for kver, kdir in debian_kernels.items():
        config = kernel_data.load_config(kdir / "boot" / f"config-{kver}")
        assert config.builtin("CONFIG_DEBUG_INFO_BTF")
        assert config.enabled("DEBUG_INFO_BTF_MODULES")
        assert config.get("CONFIG_NF_CONNTRACK") == "m"
        assert config.get_int("CONFIG_HZ") in (100, 250, 300, 1000)
        assert config.get("CONFIG_DEBUG_INFO_REDUCED") in ("n", None)
        assert config.get("CONFIG_LOCALVERSION") == ""
        assert "CONFIG_X86_64" in config


def test_real_system_map(debian_kernels: dict[str, Path]) -> None:
    for kver, kdir in debian_kernels.items():
        sysmap = kernel_data.load_system_map(kdir / "boot" / f"System.map-{kver}")
        assert sysmap.placeholder  # Debian ships the real map in the -dbg package


def test_kallsyms_as_system_map(tmp_path: Path) -> None:
    """A full-size map: the running kernel's symbols, in System.map format."""
    require(os.access("/proc/kallsyms", os.R_OK), "needs /proc/kallsyms")
    text = Path("/proc/kallsyms").read_text()
    require(not text.startswith("0000000000000000"), "kallsyms addresses are hidden")
    lines = [line for line in text.splitlines() if "\t[" not in line]
    data = ("\n".join(lines) + "\n").encode()
    sysmap = parse_system_map(data)
    found = sysmap.get("bpf_prog_put")
    assert len(sysmap) == len(lines) > 50_000
    expected = next(line.split() for line in lines if line.endswith(" bpf_prog_put"))
    assert found is not None and found.address == int(expected[0], 16)
    assert found.type == expected[1] and found.is_text
    # kallsyms itself, with [module] columns, parses too
    assert len(parse_system_map(text.encode())) == len(text.splitlines())


def test_vmlinuz_gives_elf_with_btf(
    debian_kernels: dict[str, Path], vmlinux_of: dict[str, bytes]
) -> None:
    require_tool("llvm-readelf")
    for kver, vmlinux in vmlinux_of.items():
        elf = ELFFile(io.BytesIO(vmlinux))
        btf = elf.get_section_by_name(".BTF")
        assert btf is not None and btf.data()[:2] == b"\x9f\xeb"
        image = debian_kernels[kver] / "boot" / f"vmlinuz-{kver}"
        # the bzImage payload is LZ4 legacy; the ELF size is in the payload's last 4 bytes
        raw = image.read_bytes()
        setup = (raw[0x1F1] + 1) * 512
        offset, length = struct.unpack_from("<II", raw, 0x248)
        assert raw[setup + offset : setup + offset + 4] == b"\x02\x21\x4c\x18"
        size = int.from_bytes(raw[setup + offset + length - 4 : setup + offset + length], "little")
        assert len(vmlinux) == size
        version = kver.encode()
        assert version in vmlinux


def test_vmlinuz_scan_fallback(old_kernel: tuple[str, Path], vmlinux_of: dict[str, bytes]) -> None:
    """Without a setup header, the payload is found by its magic."""
    kver, kdir = old_kernel
    raw = bytearray((kdir / "boot" / f"vmlinuz-{kver}").read_bytes())
    raw[0x202:0x206] = b"XXXX"
    assert vmlinux_from_vmlinuz(bytes(raw), decompress=decompress) == vmlinux_of[kver]
    assert (
        vmlinux_from_vmlinuz(vmlinux_of[kver][:4096], decompress=decompress)
        == vmlinux_of[kver][:4096]
    )  # ELF as is
    gz_image = b"\0" * 100 + gzip.compress(b"\x7fELF" + b"x" * 1000) + b"tail"
    assert vmlinux_from_vmlinuz(gz_image, decompress=decompress) == b"\x7fELF" + b"x" * 1000


def test_nf_conntrack_kfunc_set(
    debian_kernels: dict[str, Path], vmlinux_file: dict[str, Path]
) -> None:
    bpftool = require_tool("bpftool")
    for kver, kdir in debian_kernels.items():
        path = kdir / "lib/modules" / kver / NF_CONNTRACK
        module = kernel_data.load_kernel_object(path)
        assert module.name == "nf_conntrack"
        assert module.modinfo_value(
            "vermagic",
        ).startswith(kver + " ")  # type: ignore[union-attr]
        assert module.btf is not None and module.btf[:2] == b"\x9f\xeb"
        (kfuncs,) = module.kfunc_sets
        assert kfuncs.name == "nf_ct_kfunc_set"
        dump = subprocess.run(
            [bpftool, "btf", "dump", "file", str(path), "-B", str(vmlinux_file[kver])],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        names = dict(re.findall(r"^\[(\d+)\] FUNC '(\w+)'", dump, re.M))
        by_name = {names[str(e.btf_id)]: e for e in kfuncs.entries}
        assert set(by_name) >= KFUNCS_OF_NF_CONNTRACK
        assert by_name["bpf_xdp_ct_lookup"].flag_names == ("KF_ACQUIRE", "KF_RET_NULL")
        assert by_name["bpf_ct_release"].flag_names == ("KF_RELEASE",)
        assert set(by_name["bpf_ct_insert_entry"].flag_names) == {
            "KF_ACQUIRE",
            "KF_RELEASE",
            "KF_RET_NULL",
        }


def test_nf_conntrack_names_through_btf_parser(
    old_kernel: tuple[str, Path], vmlinux_of: dict[str, bytes]
) -> None:

    kver, kdir = old_kernel
    module = kernel_data.load_kernel_object(kdir / "lib/modules" / kver / NF_CONNTRACK)
    assert module.btf is not None
    base = BTF.from_bytes(vmlinux_of[kver])
    split = BTF.from_bytes(module.btf, base=base)
    names = {split.name(e.btf_id) for e in module.kfunc_sets[0].entries}
    assert names >= KFUNCS_OF_NF_CONNTRACK


def test_stripped_vmlinux_has_no_kfunc_sets(vmlinux_of: dict[str, bytes]) -> None:
    vmlinux = read_kernel_object(next(iter(vmlinux_of.values())))
    assert vmlinux.name is None and not vmlinux.has_symbols and vmlinux.id_sets == ()
    assert vmlinux.btf is not None and len(vmlinux.btf) > 1_000_000


MODULE_PACKERS = {  # suffix -> (program, the format it must write)
    ".ko": (None, None),
    ".ko.gz": (["gzip", "-c"], Format.GZIP),
    ".ko.xz": (["xz", "-c", "--check=crc32"], Format.XZ),  # as kmod's xz modules
    ".ko.zst": (["zstd", "-q", "-c"], Format.ZSTD),
}


def test_compressed_module(tmp_path: Path, old_kernel: tuple[str, Path]) -> None:
    """Modules packed by the real programs (.ko.gz, .ko.xz, .ko.zst) are found and read."""
    kver, kdir = old_kernel
    raw = (kdir / "lib/modules" / kver / NF_CONNTRACK).read_bytes()
    reference = read_kernel_object(raw, "nf_conntrack.ko")
    assert reference.btf is not None and reference.kfunc_sets
    fake = "6.1.0-2.fc40.x86_64"
    tree = tmp_path / "usr/lib/modules" / fake
    expected = []
    for index, (suffix, (argv, fmt)) in enumerate(MODULE_PACKERS.items()):
        data = raw
        if argv is not None:
            data = packed_with(argv, raw)
            assert detect(data) is fmt
        path = tree / "kernel" / f"d{index}" / f"nf_conntrack{suffix}"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        expected.append(path)
    (tree / "kernel/d0/nf_conntrack.ko.bz2").write_bytes(b"")  # no kernel packs modules so
    (tree / "kernel/d0/modules.order").write_text("")
    (tree / "modules.dep").write_text("")
    found = find_kernel(tmp_path, fake, running="")
    assert found.modules == tuple(sorted(expected))
    assert found.modules_dep == tree / "modules.dep"
    for path in found.modules:
        module = kernel_data.load_kernel_object(path)
        assert module.name == "nf_conntrack", path
        assert module.btf == reference.btf
        assert module.kfunc_sets == reference.kfunc_sets
        assert module.modinfo_value("vermagic") == reference.modinfo_value("vermagic")
    broken = tree / "kernel/d1/nf_conntrack.ko.gz"
    broken.write_bytes(broken.read_bytes()[:-100])
    with pytest.raises(ParseError) as info:
        kernel_data.load_kernel_object(broken)
    assert info.value.source == str(broken)


def test_kf_flags() -> None:
    assert decode_kf_flags(0) == ()
    assert decode_kf_flags(1 | 4) == ("KF_ACQUIRE", "KF_RET_NULL")
    assert decode_kf_flags(1 << 30) == ("bit30",)


# --- symvers, greylist, kABI ------------------------------------------------------------------


def test_export_types() -> None:
    assert ExportType.EXPORT_SYMBOL_GPL.gpl_only and not ExportType.EXPORT_SYMBOL.gpl_only
    assert not ExportType.EXPORT_SYMBOL_GPL_FUTURE.gpl_only
    assert ExportType.EXPORT_SYMBOL_GPL_FUTURE.flagged
    assert (
        ExportType.EXPORT_UNUSED_SYMBOL_GPL.flagged and ExportType.EXPORT_UNUSED_SYMBOL_GPL.gpl_only
    )
    bpf = ExportType("EXPORT_SYMBOL_BPF_GPL__acquires")
    assert bpf.bpf and bpf.gpl_only and bpf.acquires and not bpf.releases and not bpf.flagged
    assert ExportType("EXPORT_SYMBOL_BPF__releases").releases
    assert not ExportType("EXPORT_SYMBOL_BPF").gpl_only


def test_symvers_namespace_and_errors() -> None:
    symvers = parse_symvers(
        b"0x00000001\ta\tvmlinux\tEXPORT_SYMBOL\t\n"
        b"0x00000002\tb\tdrivers/x\tEXPORT_SYMBOL_GPL\tCXL\n\n"
    )
    assert symvers.get("b") == SymvEntry(
        2, "b", "drivers/x", ExportType.EXPORT_SYMBOL_GPL, "CXL", 2
    )
    assert symvers.get("a").namespace is None  # type: ignore[union-attr]
    with pytest.raises(FormatError, match="line 2: unknown export type") as info:
        parse_symvers(b"0x1\ta\tvmlinux\tEXPORT_SYMBOL\n0x2\tb\tvmlinux\tEXPORT_FOO\n", "sv")
    assert info.value.offset == len(b"0x1\ta\tvmlinux\tEXPORT_SYMBOL\n")
    assert info.value.source == "sv"
    with pytest.raises(FormatError, match="line 1: bad CRC"):
        parse_symvers(b"1234\ta\tvmlinux\tEXPORT_SYMBOL\n")


def test_greylist_round_trip() -> None:
    text = (
        b"# greylist of lb.bpf.o\n"
        b"# build-kernel: 6.1.0-47-cloud-amd64\n"
        b"0xdeadbeef\tbpf_xdp_ct_lookup\tnf_conntrack\tEXPORT_SYMBOL_BPF_GPL__acquires\n"
        b"0x12345678\tbpf_ct_release\tnf_conntrack\tEXPORT_SYMBOL_BPF_GPL__releases\n"
        b"0x0000abcd\tjiffies\tvmlinux\tEXPORT_SYMBOL\n"
    )
    greylist = parse_greylist(text + b"\0\0", "lb.bpf.o(.greylist)")
    assert greylist.build_kernel == "6.1.0-47-cloud-amd64"
    assert len(greylist) == 3
    lookup = greylist.get("bpf_xdp_ct_lookup")
    assert lookup is not None and lookup.crc == 0xDEADBEEF and lookup.export_type.acquires
    rendered = render_greylist(
        greylist.entries, build_kernel=greylist.build_kernel, comments=["greylist of lb.bpf.o"]
    )
    again = parse_greylist(rendered.encode())
    assert [(e.symbol, e.crc) for e in again.entries] == sorted(
        (e.symbol, e.crc) for e in greylist.entries
    )
    assert again.build_kernel == greylist.build_kernel
    with pytest.raises(FormatError, match=r"line 2: .* listed again"):
        parse_greylist(b"0x1\ta\tvmlinux\tEXPORT_SYMBOL\n0x2\ta\tvmlinux\tEXPORT_SYMBOL\n", "g")


def test_kabi_list() -> None:
    kabi = parse_kabi_list(b"[rhel9_x86_64_stablelist]\n\tPDE_DATA\n\t__alloc_pages\n\n")
    assert (kabi.release, kabi.arch, kabi.kind) == ("rhel9", "x86_64", "stablelist")
    assert kabi.symbols == frozenset({"PDE_DATA", "__alloc_pages"})
    old = parse_kabi_list(b"[rhel8_s390x_whitelist]\n\tkfree\n")
    assert (old.arch, old.kind) == ("s390x", "whitelist") and "kfree" in old
    with pytest.raises(FormatError, match="line 1: expected a header"):
        parse_kabi_list(b"\tkfree\n")
    with pytest.raises(FormatError, match="line 3: not a symbol"):
        parse_kabi_list(b"[rhel9_x86_64_stablelist]\n\tkfree\n\tk free\n")


def test_kconfig_values() -> None:
    config = parse_kconfig(
        b'CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D="a \\"q\\""\nCONFIG_E=0x10\n'
    )
    assert config.get("A") == "y" and config.enabled("B") and not config.builtin("B")
    assert config.get("CONFIG_C") == "n" and config.get("D") == 'a "q"'
    assert config.get_int("E") == 16 and config.get("Z") is None
    with pytest.raises(FormatError, match="line 2"):
        parse_kconfig(b"CONFIG_A=y\nnonsense\n")


# --- discovery --------------------------------------------------------------------------------


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


def make_rhel_root(root: Path, kver: str, kdir: Path, real_kver: str) -> None:
    """usr/lib/modules/K/{vmlinuz,symvers.gz,System.map,config}, lib -> usr/lib (merged /usr)."""
    mod = root / "usr/lib/modules" / kver
    link_or_copy(kdir / "boot" / f"vmlinuz-{real_kver}", mod / "vmlinuz")
    link_or_copy(kdir / "boot" / f"config-{real_kver}", mod / "config")
    link_or_copy(kdir / "boot" / f"System.map-{real_kver}", mod / "System.map")
    symvers = (headers(kdir, real_kver) / "Module.symvers").read_bytes()
    (mod / "symvers.gz").write_bytes(gzip.compress(symvers, compresslevel=1))
    link_or_copy(kdir / "lib/modules" / real_kver / NF_CONNTRACK, mod / NF_CONNTRACK)
    (root / "lib").symlink_to("usr/lib")


def make_debian_root(root: Path, kver: str, kdir: Path) -> None:
    """boot/{vmlinuz,config,System.map}-K, usr/src/linux-headers-K/Module.symvers, lib/ is real."""
    for name in ("vmlinuz", "config", "System.map"):
        link_or_copy(kdir / "boot" / f"{name}-{kver}", root / "boot" / f"{name}-{kver}")
    link_or_copy(
        headers(kdir, kver) / "Module.symvers",
        root / "usr/src" / f"linux-headers-{kver}" / "Module.symvers",
    )
    link_or_copy(
        kdir / "lib/modules" / kver / NF_CONNTRACK, root / "lib/modules" / kver / NF_CONNTRACK
    )


def test_discovery_rhel_layout(tmp_path: Path, old_kernel: tuple[str, Path]) -> None:
    real, kdir = old_kernel
    kver = "5.14.0-427.13.1.el9_4.x86_64+debug"
    make_rhel_root(tmp_path, kver, kdir, real)
    kabi = tmp_path / "usr/lib/modules/kabi-current/kabi_stablelist_x86_64"
    kabi.parent.mkdir(parents=True)
    kabi.write_text("[rhel9_x86_64_stablelist]\n\tkfree\n")
    assert installed_kernels(tmp_path) == (kver,)
    found = find_kernel(tmp_path, kver, running="")
    mod = tmp_path / "usr/lib/modules" / kver
    # the artifacts are symlinks to the cache: they resolve out of this root, so they are absent
    assert found.image is None and found.config is None
    assert found.symvers == mod / "symvers.gz"
    assert found.arch == "x86_64" and found.kabi_list == kabi
    assert kernel_data.load_kabi_list(kabi).symbols == {"kfree"}
    assert len(kernel_data.load_symvers(found.symvers)) > 10_000


def copy_tree_files(root: Path) -> None:
    """Replace symlinks that leave the root by copies (hard links when possible)."""
    for path in list(root.rglob("*")):
        if path.is_symlink() and os.path.isabs(os.readlink(path)):
            target = path.resolve()
            path.unlink()
            try:
                os.link(target, path)
            except OSError:
                path.write_bytes(target.read_bytes())


def test_discovery_rhel_layout_complete(tmp_path: Path, old_kernel: tuple[str, Path]) -> None:
    real, kdir = old_kernel
    kver = "5.14.0-427.el9.x86_64+rt"
    make_rhel_root(tmp_path, kver, kdir, real)
    copy_tree_files(tmp_path)
    found = find_kernel(tmp_path, kver, running="")
    mod = tmp_path / "usr/lib/modules" / kver
    assert (found.image, found.config, found.system_map) == (
        mod / "vmlinuz",
        mod / "config",
        mod / "System.map",
    )
    assert found.btf == mod / "vmlinuz" and found.btf_source_kind is BtfSourceKind.VMLINUZ
    assert found.modules == (mod / NF_CONNTRACK,)
    assert found.relative(found.symvers) == f"usr/lib/modules/{kver}/symvers.gz"
    assert found.kabi_list is None


def test_discovery_debian_layout(tmp_path: Path, debian_kernels: dict[str, Path]) -> None:
    for kver, kdir in debian_kernels.items():
        make_debian_root(tmp_path, kver, kdir)
    copy_tree_files(tmp_path)
    kvers = sorted(debian_kernels)
    assert installed_kernels(tmp_path) == tuple(kvers)
    old, new = find_kernels(tmp_path, running="")
    assert (old.kver, new.kver) == tuple(kvers)
    assert old.symvers == tmp_path / "usr/src" / f"linux-headers-{old.kver}/Module.symvers"
    assert old.image == tmp_path / "boot" / f"vmlinuz-{old.kver}"
    assert old.btf_source_kind is BtfSourceKind.VMLINUZ and old.arch == "x86_64"
    # lib/ is a real directory here (no merged /usr): modules are found under lib/modules
    assert old.modules == (tmp_path / "lib/modules" / old.kver / NF_CONNTRACK,)
    # the BTF of the running kernel comes from sysfs, for that kernel only
    sysfs = tmp_path / "sys/kernel/btf/vmlinux"
    sysfs.parent.mkdir(parents=True)
    sysfs.write_bytes(b"\x9f\xeb\x01\x00")
    running = find_kernel(tmp_path, new.kver, running=new.kver)
    assert running.btf == sysfs and running.btf_source_kind is BtfSourceKind.SYSFS
    assert (
        find_kernel(tmp_path, old.kver, running=new.kver).btf_source_kind is BtfSourceKind.VMLINUZ
    )
    vmlinux = tmp_path / "boot" / f"vmlinux-{old.kver}"
    vmlinux.write_bytes(b"\x7fELF")
    assert find_kernel(tmp_path, old.kver, running="").btf == vmlinux


def test_running_kernel_discovery() -> None:
    """On this machine: the running kernel's BTF comes from sysfs, and only for that kernel."""
    sysfs = Path("/sys/kernel/btf/vmlinux")
    require(sysfs.is_file(), "the running kernel has no /sys/kernel/btf/vmlinux")
    release = platform.release()
    found = find_kernel(Path("/"), release, running=release, require=False)
    assert found.kver == release and found.root == Path("/")
    assert found.btf == sysfs and found.btf_source_kind is BtfSourceKind.SYSFS
    loaded = kernel_data.load_kernel_btf(found.btf)
    assert loaded.btf_ids is None  # raw BTF has no .BTF_ids
    btf = loaded.btf
    assert btf.nr_types > 95_000
    assert len(btf.find("task_struct")) >= 1
    other = find_kernel(Path("/"), release, running=release + "-other", require=False)
    assert other.btf_source_kind is not BtfSourceKind.SYSFS and other.btf != sysfs
    unknown = find_kernel(Path("/"), release, running="", require=False)
    assert unknown.btf_source_kind is not BtfSourceKind.SYSFS


def test_symvers_search_order(tmp_path: Path) -> None:
    kver = "6.9.0-1.fc40.aarch64"
    line = b"0x00000001\tkfree\tvmlinux\tEXPORT_SYMBOL\n"
    candidates = [
        f"usr/src/linux-headers-{kver}/Module.symvers",
        f"usr/src/kernels/{kver}/Module.symvers",
        f"boot/symvers-{kver}",
        f"boot/symvers-{kver}.xz",
        f"boot/symvers-{kver}.gz",
        f"usr/lib/modules/{kver}/symvers",
        f"usr/lib/modules/{kver}/symvers.zst",
        f"usr/lib/modules/{kver}/symvers.xz",
        f"usr/lib/modules/{kver}/symvers.gz",
    ]
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"vmlinuz-{kver}").write_bytes(b"")
    for relative in candidates:  # each new file takes precedence over the ones before
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(line)
        assert find_kernel(tmp_path, kver, running="").symvers == path
    assert arch_of(kver) == "aarch64"


def test_installed_rules(tmp_path: Path) -> None:
    mods = tmp_path / "usr/lib/modules"
    (mods / "6.0.0-leftover").mkdir(parents=True)  # only an empty directory: not installed
    (mods / "6.1.0-dep").mkdir()
    (mods / "6.1.0-dep/modules.dep").write_text("")
    (mods / "6.2.0-sv").mkdir()
    (mods / "6.2.0-sv/symvers.xz").write_bytes(b"")
    (mods / "kabi-current").mkdir()
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/vmlinuz-6.3.0+").write_bytes(b"")
    (tmp_path / "boot/vmlinuz-").write_bytes(b"")
    (tmp_path / "boot/vmlinuz-0-rescue-0123456789abcdef").write_bytes(b"")
    assert installed_kernels(tmp_path) == ("6.1.0-dep", "6.2.0-sv", "6.3.0+")
    with pytest.raises(KernelNotFound):
        find_kernel(tmp_path, "6.0.0-leftover")
    with pytest.raises(KernelNotFound):
        find_kernel(tmp_path, "../../etc")


def test_symlinks_stay_in_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "vmlinuz").write_bytes(b"secret")
    kver = "6.5.0-1+local"
    boot = root / "boot"
    boot.mkdir(parents=True)
    (boot / f"vmlinuz-{kver}").symlink_to("../../outside/vmlinuz")  # climbs out: absent
    (boot / f"config-{kver}").symlink_to("/nonexistent")  # dangling
    (boot / f"System.map-{kver}").symlink_to(f"/boot/real-map-{kver}")  # absolute: in the root
    (boot / f"real-map-{kver}").write_text("ffffffff81000000 T _text\n")
    (boot / "loop").symlink_to("loop")
    modules = root / "usr/lib/modules" / kver
    modules.mkdir(parents=True)
    (modules / "modules.dep").write_text("")
    (modules / "kernel").symlink_to(str(outside))  # a module tree outside the root
    assert resolve_in_root(root, f"boot/vmlinuz-{kver}") is None
    assert resolve_in_root(root, "boot/loop") is None
    assert resolve_in_root(root, "../outside/vmlinuz") is None
    found = find_kernel(root, kver, running="")
    assert found.image is None and found.config is None and found.btf is None
    assert found.system_map == boot / f"real-map-{kver}"
    assert found.modules == ()
    assert kernel_data.load_system_map(found.system_map).get("_text") is not None
    assert installed_kernels(root) == (kver,)


def test_loader_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "symvers.gz"
    bad.write_bytes(gzip.compress(b"0x1\tfoo\n"))
    with pytest.raises(FormatError) as info:
        kernel_data.load_symvers(bad)
    assert info.value.source == str(bad) and "line 1" in str(info.value)
    with pytest.raises(ParseError, match="cannot read"):
        kernel_data.load_config(tmp_path / "missing")
    truncated = tmp_path / "vmlinuz"
    truncated.write_bytes(b"\x1f\x8b\x08" + b"\0" * 20)
    with pytest.raises(ParseError) as error:
        kernel_data.load_vmlinux(truncated)
    assert error.value.source == str(truncated)


# --- corrupt input: a typed error, never a traceback or a hang ----------------------------------

SYMVERS_SAMPLE = (
    b"0x4c9d28b0\tphys_base\tvmlinux\tEXPORT_SYMBOL\t\n"
    b"0x0a2d4668\tinit_uts_ns\tvmlinux\tEXPORT_SYMBOL_GPL\tNS\n"
)
GREYLIST_SAMPLE = b"# build-kernel: 6.1.0-47-cloud-amd64\n" + SYMVERS_SAMPLE
KABI_SAMPLE = b"[rhel9_x86_64_stablelist]\n\tkfree\n\tkmalloc\n"
CONFIG_SAMPLE = b'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x"\nCONFIG_D=0x10\n'
SYSMAP_SAMPLE = b"ffffffff81000000 T _text\nffffffff81000010 t foo\tfoo\n"[:-5] + b"\n"

PARSER_IDS = ["symvers", "greylist", "kabi", "kconfig", "sysmap"]
TEXT_PARSERS = [
    (parse_symvers, SYMVERS_SAMPLE),
    (parse_greylist, GREYLIST_SAMPLE),
    (parse_kabi_list, KABI_SAMPLE),
    (parse_kconfig, CONFIG_SAMPLE),
    (parse_system_map, SYSMAP_SAMPLE),
]


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int, insert: bytes) -> bytes:
    out = bytearray(data)
    for pos, value in flips:
        out[pos % len(out)] = value
    out = out[: cut % (len(out) + 1)]
    where = (cut * 7) % (len(out) + 1)
    return bytes(out[:where] + insert + out[where:])


@pytest.mark.parametrize(
    ("parse", "sample"), TEXT_PARSERS, ids=lambda p: getattr(p, "__name__", "")
)
def test_text_samples_parse(parse: Callable[[bytes, str], object], sample: bytes) -> None:
    parse(sample, "sample")


@pytest.mark.parametrize(
    ("parse", "sample"), TEXT_PARSERS, ids=lambda p: getattr(p, "__name__", "")
)
@settings(max_examples=300, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=5),
    cut=st.integers(0, 1000),
    insert=st.binary(max_size=20),
)
def test_corrupt_text(
    parse: Callable[[bytes, str], object],
    sample: bytes,
    flips: list[tuple[int, int]],
    cut: int,
    insert: bytes,
) -> None:
    try:
        parse(mutate(sample, flips, cut, insert), "corrupt")
    except FormatError as e:
        assert e.source == "corrupt" and e.offset is not None
        assert re.match(r"line \d+: ", e.message) or e.offset == 0


@pytest.fixture(scope="module")
def small_module(old_kernel: tuple[str, Path]) -> bytes:
    kver, kdir = old_kernel
    return (kdir / "lib/modules" / kver / NF_CONNTRACK).read_bytes()


def kmod_targets(module: bytes) -> list[int]:
    """Offsets worth corrupting, read from this build of the module (not hard-coded)."""
    shoff = struct.unpack_from("<Q", module, 0x28)[0]
    sections = {s.name: s for s in section_headers(module, "nf_conntrack.ko")}
    wanted = (".BTF_ids", ".BTF", ".symtab", ".modinfo", ".rela.BTF_ids")
    missing = [name for name in wanted[:4] if name not in sections]
    assert not missing, f"nf_conntrack.ko has no {missing}"
    return [0, shoff] + [sections[name].offset for name in wanted if name in sections]


def test_kmod_targets(small_module: bytes, old_kernel: tuple[str, Path]) -> None:
    """The corruption targets are where llvm-readelf puts those sections in this build."""
    readelf = require_tool("llvm-readelf")
    kver, kdir = old_kernel
    table = subprocess.run(
        [readelf, "-S", "--wide", str(kdir / "lib/modules" / kver / NF_CONNTRACK)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    offsets = {
        m.group(1): int(m.group(2), 16)
        for m in re.finditer(r"\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s", table)
    }
    header = re.search(r"section headers, starting at offset (0x[0-9a-f]+)", table)
    assert header is not None
    shoff = int(header.group(1), 16)
    targets = kmod_targets(small_module)
    assert targets[:6] == [0, shoff] + [
        offsets[name] for name in (".BTF_ids", ".BTF", ".symtab", ".modinfo")
    ]


@settings(max_examples=200, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 1 << 20),
)
def test_corrupt_kmod(small_module: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(small_module)
    # aim at the headers and the tables that matter: ELF header, section headers, .BTF_ids, ...
    targets = kmod_targets(small_module)
    for pos, value in flips:
        base = targets[pos % len(targets)]
        data[(base + pos % 512) % len(data)] = value
    data = data[: max(cut, 64)] if cut < len(data) else data
    try:
        read_kernel_object(bytes(data), "nf_conntrack.ko")
    except ELFError as e:
        assert e.source == "nf_conntrack.ko"


def fake_bzimage(
    payload: bytes, setup_sects: int = 1, *, code_before: bytes = b"", code_after: bytes = b""
) -> bytearray:
    """An x86 bzImage: setup sectors with a boot protocol 2.15 header, then the protected-mode
    code, which holds the payload at payload_offset (the decompressor's code around it)."""
    image = bytearray((setup_sects + 1) * 512)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x20F)
    struct.pack_into("<II", image, 0x248, len(code_before), len(payload))
    return image + code_before + payload + code_after


# How the kernel's Makefiles pack vmlinux.bin (scripts/Makefile.lib, scripts/xz_wrap.sh), at fast
# levels; lz4 frame is not used by the kernel but is a known format all the same.
KERNEL_PACKERS = {
    "gzip": (["gzip", "-c", "-1"], Format.GZIP),
    "bzip2": (["bzip2", "-c", "-1"], Format.BZIP2),
    "lzma": (["xz", "--format=lzma", "-c", "-0"], Format.LZMA),
    "xz": (["xz", "--check=crc32", "--x86", "--lzma2=preset=0", "-c"], Format.XZ),
    "lz4-legacy": (["lz4", "-l", "-c"], Format.LZ4_LEGACY),
    "lz4": (["lz4", "-c"], Format.LZ4),
    "zstd": (["zstd", "-q", "-c", "-1"], Format.ZSTD),
}
SLICE = 12_000_000  # more than one 8 MiB lz4 legacy block; the whole vmlinux takes seconds
CODE_BEFORE = b"\x90" * 0x3A5  # stands for the decompressor's code (no compression magic)
CODE_AFTER = b"\xcc" * 0x1000 + b"\x55\x48\x89\xe5"


@pytest.fixture(scope="session")
def kernel_payloads(vmlinux_of: dict[str, bytes]) -> tuple[bytes, dict[str, bytes]]:
    """The first SLICE bytes of the old vmlinux, and each piggy: the stream as the real program
    writes it, then the kernel's 4-byte little-endian size of the unpacked vmlinux."""
    vmlinux = vmlinux_of[min(vmlinux_of)][:SLICE]
    for argv, _ in KERNEL_PACKERS.values():
        require_tool(argv[0])
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = {
            name: pool.submit(packed_with, argv, vmlinux)
            for name, (argv, _) in KERNEL_PACKERS.items()
        }
        streams = {name: job.result() for name, job in jobs.items()}
    size = len(vmlinux).to_bytes(4, "little")
    return vmlinux, {name: stream + size for name, stream in streams.items()}


@pytest.mark.parametrize("name", list(KERNEL_PACKERS))
def test_bzimage_payload_formats(
    name: str, kernel_payloads: tuple[bytes, dict[str, bytes]]
) -> None:
    vmlinux, piggies = kernel_payloads
    piggy = piggies[name]
    assert detect(piggy) is KERNEL_PACKERS[name][1]
    assert int.from_bytes(piggy[-4:], "little") == len(vmlinux)
    image = fake_bzimage(piggy, code_before=CODE_BEFORE, code_after=CODE_AFTER)
    assert vmlinux_from_vmlinuz(bytes(image), name, decompress=decompress) == vmlinux
    # setup_sects 0 means 4, for old boot loaders
    image = fake_bzimage(piggy, 4, code_before=CODE_BEFORE)
    image[0x1F1] = 0
    assert vmlinux_from_vmlinuz(bytes(image), name, decompress=decompress) == vmlinux


@pytest.mark.parametrize("name", list(KERNEL_PACKERS))
def test_bzimage_scan_fallback_formats(
    name: str, kernel_payloads: tuple[bytes, dict[str, bytes]]
) -> None:
    """No setup header (e.g. an arm64 Image.gz or a damaged header): the payload is found by its
    magic, and the trailing size and code after it are not part of the stream."""
    vmlinux, piggies = kernel_payloads
    image = fake_bzimage(piggies[name], code_before=CODE_BEFORE, code_after=CODE_AFTER)
    image[0x202:0x206] = b"\0\0\0\0"
    assert vmlinux_from_vmlinuz(bytes(image), name, decompress=decompress) == vmlinux
    # protocol < 2.08 has no payload fields: the scan is used too
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x207)
    assert vmlinux_from_vmlinuz(bytes(image), name, decompress=decompress) == vmlinux


def test_bzimage_small_lz4_legacy_kernel(kernel_payloads: tuple[bytes, dict[str, bytes]]) -> None:
    """A vmlinux under one 8 MiB lz4 legacy block: its appended size is a plausible block size,
    yet it is the last 4 bytes of the payload, so it cannot be a block."""
    vmlinux = kernel_payloads[0][:3_000_000]
    piggy = packed_with(["lz4", "-l", "-c"], vmlinux) + len(vmlinux).to_bytes(4, "little")
    image = fake_bzimage(piggy, code_before=CODE_BEFORE, code_after=CODE_AFTER)
    assert vmlinux_from_vmlinuz(bytes(image), decompress=decompress) == vmlinux


def test_fake_bzimage_round_trip() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 40
    assert (
        vmlinux_from_vmlinuz(bytes(fake_bzimage(gzip.compress(elf))), decompress=decompress) == elf
    )
    assert (
        vmlinux_from_vmlinuz(bytes(fake_bzimage(elf)), decompress=decompress) == elf
    )  # uncompressed payload
    with pytest.raises(ELFError, match="outside the file"):
        vmlinux_from_vmlinuz(bytes(fake_bzimage(gzip.compress(elf))[:-10]), decompress=decompress)
    with pytest.raises(ELFError, match="no ELF vmlinux"):
        vmlinux_from_vmlinuz(b"MZ" + b"\0" * 1000, decompress=decompress)


@settings(max_examples=300, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 5000),
)
def test_corrupt_vmlinuz(flips: list[tuple[int, int]], cut: int) -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 8
    image = fake_bzimage(gzip.compress(elf))
    for pos, value in flips:
        image[(0x1F0 + pos) % len(image) if pos < 200 else pos % len(image)] = value
    data = bytes(image[:cut]) if cut < len(image) else bytes(image)
    try:
        out = vmlinux_from_vmlinuz(data, "vmlinuz", max_size=1 << 20, decompress=decompress)
    except ParseError as e:
        assert isinstance(e, (ELFError, FormatError)) or e.source == "vmlinuz"
        return
    assert out.startswith(b"\x7fELF")


def test_running_kernel_kfunc_sets_come_from_its_image(
    debian_kernels: dict[str, Path], old_progs: dict[str, Path], tmp_path: Path
) -> None:
    """The running kernel's BTF comes from sysfs, which has no .BTF_ids. On a kernel without
    bpf_kfunc tags (RHEL 9, Debian 12) the kfunc sets are then read from its installed image,
    when that image's BTF is the sysfs BTF byte for byte; with another image, unknown."""
    from weak_bpf.engine.checks import check_object
    from weak_bpf.kernel.cache import Cache
    from weak_bpf.kernel.facts import load_kernel_facts
    from weak_bpf.model import Verdict
    from weak_bpf.parsers.bpfobject import read_bpf_object

    require(debian_kernels, "the Debian kernels")
    old, new = sorted(debian_kernels)
    elf = kernel_data.load_vmlinux(debian_kernels[old] / f"boot/vmlinuz-{old}")
    sysfs = tmp_path / "sys/kernel/btf/vmlinux"
    sysfs.parent.mkdir(parents=True)
    sysfs.write_bytes(section_bytes(elf, ".BTF") or b"")
    obj = read_bpf_object(old_progs["kfunc_vmlinux"].read_bytes(), "kfunc_vmlinux.bpf.o")
    verdicts = {}
    for image_of in (old, new):
        moddir = tmp_path / "usr/lib/modules" / old
        moddir.mkdir(parents=True, exist_ok=True)
        (moddir / "vmlinuz").unlink(missing_ok=True)
        os.link(debian_kernels[image_of] / f"boot/vmlinuz-{image_of}", moddir / "vmlinuz")
        artifacts = find_kernel(tmp_path, old, running=old)
        assert artifacts.btf_source_kind is BtfSourceKind.SYSFS
        for writable in (True, False):  # computed, then from the cache
            facts = load_kernel_facts(artifacts, Cache(tmp_path, writable=writable))
            verdicts[image_of, writable] = check_object(obj, None, facts).verdict
            ids = facts.vmlinux_btf_ids
            if image_of == old:
                assert ids is not None
                assert facts.vmlinux is not None
                assert facts.vmlinux.find("bpf_lookup_system_key")[0] in ids
            else:
                assert ids is None
    assert verdicts[old, True] == verdicts[old, False] == Verdict.COMPATIBLE
    assert verdicts[new, True] == verdicts[new, False] == Verdict.UNKNOWN
    assert len(list((tmp_path / "var/cache/weak-bpf-progs").glob("btfids-running-*"))) == 2


def test_running_kernel_image_that_cannot_be_read_is_not_cached(
    debian_kernels: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that fails (no zstd yet, a permission) is tried again on the next run."""
    from weak_bpf.kernel.cache import Cache
    from weak_bpf.kernel.facts import load_kernel_facts

    require(debian_kernels, "the Debian kernels")
    old = min(debian_kernels)
    image = debian_kernels[old] / f"boot/vmlinuz-{old}"
    elf = kernel_data.load_vmlinux(image)
    (tmp_path / "sys/kernel/btf").mkdir(parents=True)
    (tmp_path / "sys/kernel/btf/vmlinux").write_bytes(section_bytes(elf, ".BTF") or b"")
    (tmp_path / "usr/lib/modules" / old).mkdir(parents=True)
    os.link(image, tmp_path / "usr/lib/modules" / old / "vmlinuz")
    artifacts = find_kernel(tmp_path, old, running=old)
    cache = Cache(tmp_path, writable=True)

    def unreadable(path: Path) -> bytes:
        raise FormatError("zstd is not installed", source=str(path))

    with monkeypatch.context() as patch:
        patch.setattr(kernel_data, "load_vmlinux", unreadable)
        assert load_kernel_facts(artifacts, cache).vmlinux_btf_ids is None
    assert load_kernel_facts(artifacts, cache).vmlinux_btf_ids
