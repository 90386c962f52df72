"""fmod_ret programs, and sleepable fentry and fexit ones, attach only where the kernel allows
error injection: the verifier refuses them elsewhere, whatever BTF says. Debian's kernels are
built without the error-injection list (their config says so): the older one, booted under
qemu, must load exactly the programs judged usable. A kernel built with the list is made here
with the real toolchain (gcc, objcopy, nm), since no kernel at hand has one: its list, placed by
its symbols, decides."""

from __future__ import annotations

import gzip
import platform
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from weak_bpf import ops
from weak_bpf.errors import ELFError
from weak_bpf.kernel import find as kernel
from weak_bpf.kernel import load as kernel_data
from weak_bpf.model import Outcome, Result, Verdict
from weak_bpf.parsers.elf import section_bytes
from weak_bpf.parsers.errinject import START, STOP, error_injection_addresses

import exampleroot
import qemuload
from bpfprogs import compile_source
from conftest import require, require_tool
from realload import SYSFS_BTF, install_programs, install_running_kernel

OLD = "6.1.0-47-cloud-amd64"
RUNNING = platform.release()
SOURCE = r"""
#include "common.h"

SEC("%(section)s")
int BPF_PROG(prog%(args)s)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""
# name -> (section, the BPF_PROG arguments after the name)
PROGRAMS = {
    "fmod_ret_security": ("fmod_ret/security_file_open", ", struct file *file, int ret"),
    "fmod_ret_listed": ("fmod_ret/bpf_modify_return_test", ", int a, int *b, int ret"),
    "fmod_ret_vfs_read": (
        "fmod_ret/vfs_read",
        ", struct file *f, char *b, size_t n, loff_t *p, int ret",
    ),
    "fentry_sleepable_listed": ("fentry.s/bpf_modify_return_test", ", int a, int *b"),
    "fentry_sleepable_vfs_read": ("fentry.s/vfs_read", ", struct file *file"),
    "fentry_vfs_read": ("fentry/vfs_read", ", struct file *file"),
    "fmod_ret_syscall": ("fmod_ret/__x64_sys_openat", ", struct pt_regs *regs, int ret"),
    "fentry_sleepable_denied": ("fentry.s/should_failslab", ", struct kmem_cache *s, gfp_t f"),
}


@pytest.fixture(scope="module")
def objects(old_vmlinux: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("errinject-progs")
    return {
        name: compile_source(SOURCE % {"section": sec, "args": args}, name, old_vmlinux, work)
        for name, (sec, args) in PROGRAMS.items()
    }


def _root(root: Path, objects: dict[str, Path], kernel_files: dict[str, Path | bytes]) -> Path:
    moddir = root / "usr/lib/modules" / OLD
    moddir.mkdir(parents=True)
    for name, content in kernel_files.items():
        target = root / name.format(moddir=moddir.relative_to(root))
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)
    for name, obj in objects.items():
        (root / "usr/lib/bpf/tests").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(obj, root / f"usr/lib/bpf/tests/{name}.bpf.o")
    return root


def _verdicts(root: Path, kver: str = OLD) -> dict[str, Result]:
    report = ops.audit(root, [kver], cache=False)
    return {
        Path(p.program.path).name[: -len(".bpf.o")]: p.results[kver][0] for p in report.programs
    }


def _target_check(result: Result) -> tuple[Outcome, str]:
    [check] = [c for c in result.checks if c.subject.startswith("attach target")]
    return check.outcome, check.detail


# --- a kernel built without the list ------------------------------------------------------------


def test_a_kernel_without_the_list_refuses_all_but_security_hooks(
    tmp_path: Path, old_kernel: tuple[str, Path], objects: dict[str, Path]
) -> None:
    _, unpacked = old_kernel
    config = unpacked / f"boot/config-{OLD}"
    assert "# CONFIG_FUNCTION_ERROR_INJECTION is not set" in config.read_text()
    files: dict[str, Path | bytes] = {
        "{moddir}/vmlinuz": unpacked / f"boot/vmlinuz-{OLD}",
        "{moddir}/config": config,
    }
    verdicts = _verdicts(_root(tmp_path / "root", objects, files))
    usable = {name for name, r in verdicts.items() if r.verdict.usable}
    assert usable == {"fmod_ret_security", "fentry_vfs_read"}, verdicts
    # newer kernels built without the list accept syscall wrappers instead; 6.1 does not
    assert verdicts["fmod_ret_syscall"].verdict is Verdict.UNKNOWN
    outcome, detail = _target_check(verdicts["fmod_ret_vfs_read"])
    assert outcome is Outcome.FAIL
    assert detail == (
        f"{OLD}'s verifier refuses an fmod_ret program at vfs_read: the function must be on its "
        "error-injection list (ALLOW_ERROR_INJECTION) or a security_*() hook, and "
        f"{OLD} is built without that list"
    )
    assert {r.code.value for r in verdicts["fentry_sleepable_listed"].reasons} == {"attach-target"}

    # without the config, the image alone cannot say: unknown, never compatible
    del files["{moddir}/config"]
    verdicts = _verdicts(_root(tmp_path / "no-config", objects, files))
    undecided = {n for n, r in verdicts.items() if r.verdict is Verdict.UNKNOWN}
    assert undecided == set(PROGRAMS) - {"fmod_ret_security", "fentry_vfs_read"}, verdicts
    outcome, detail = _target_check(verdicts["fmod_ret_listed"])
    assert outcome is Outcome.UNDECIDED
    assert "error-injection list is placed by its symbols" in detail


def test_the_kernel_loads_what_is_judged_usable(
    tmp_path: Path, old_kernel: tuple[str, Path], objects: dict[str, Path]
) -> None:
    """Booted under qemu, the older Debian kernel loads each program: the verdicts agree."""
    require_tool("qemu-system-x86_64")
    _, unpacked = old_kernel
    files: dict[str, Path | bytes] = {
        "{moddir}/vmlinuz": unpacked / f"boot/vmlinuz-{OLD}",
        "{moddir}/config": unpacked / f"boot/config-{OLD}",
    }
    verdicts = _verdicts(_root(tmp_path / "root", objects, files))
    report = qemuload.boot_and_load(
        unpacked / f"boot/vmlinuz-{OLD}", None, objects, modules_to_load=()
    )
    loaded = {r.name: r.loaded for r in report.results}
    assert loaded == {name: verdicts[name].verdict.usable for name in PROGRAMS}, report.results
    assert sum(loaded.values()) == 2
    assert (
        "__x64_sys_openat() is not modifiable"
        in report.results[list(PROGRAMS).index("fmod_ret_syscall")].log
    )
    logs = {r.name: r.log for r in report.results}
    assert "vfs_read() is not modifiable" in logs["fmod_ret_vfs_read"]
    assert "vfs_read is not sleepable" in logs["fentry_sleepable_vfs_read"]


# --- a kernel built with the list ---------------------------------------------------------------

# Two functions on the list, one off it, laid out by the linker as in a vmlinux.
FAKE_KERNEL = r"""
struct error_injection_entry { unsigned long addr; int etype; };

int bpf_modify_return_test(void) { return 1; }
int vfs_read(void) { return 2; }
int should_failslab(void) { return 3; }

#define ALLOW(f) static const struct error_injection_entry __attribute__((used, \
	section("_error_injection_whitelist"), aligned(8))) _eil_##f = { (unsigned long)f, 1 }
ALLOW(bpf_modify_return_test);
ALLOW(should_failslab);

void _start(void) { for (;;) ; }
"""


@pytest.fixture(scope="module")
def listed_kernel(old_vmlinux: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An ELF vmlinux carrying the older Debian kernel's BTF, with an error-injection list of
    two functions and a symbol table placing it, and its System.map (nm's output)."""
    for tool in ("gcc", "objcopy", "nm"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("listed-kernel")
    (work / "kernel.c").write_text(FAKE_KERNEL)
    # the older Debian kernel's BTF and .BTF_ids: its sets name should_failslab (the kernel's
    # denylist of sleepable programs) and not bpf_modify_return_test
    image = old_vmlinux.read_bytes()
    btf, btf_ids = section_bytes(image, ".BTF"), section_bytes(image, ".BTF_ids")
    require(btf is not None and btf_ids is not None, f"{old_vmlinux} has no .BTF or .BTF_ids")
    assert btf is not None and btf_ids is not None
    (work / "btf.bin").write_bytes(btf)
    (work / "btf_ids.bin").write_bytes(btf_ids)
    elf = work / "vmlinux"
    defsyms = [
        f"-Wl,--defsym={START}=__start__error_injection_whitelist",
        f"-Wl,--defsym={STOP}=__stop__error_injection_whitelist",
    ]
    subprocess.run(
        ["gcc", "-O1", "-static", "-no-pie", "-nostdlib", *defsyms, "-o", str(elf), "kernel.c"],
        cwd=work, check=True, capture_output=True,
    )  # fmt: skip
    sections = ["--add-section", ".BTF=btf.bin", "--add-section", ".BTF_ids=btf_ids.bin"]
    subprocess.run(["objcopy", *sections, str(elf)], cwd=work, check=True, capture_output=True)
    nm = subprocess.run(["nm", "-n", str(elf)], check=True, capture_output=True, text=True)
    system_map = work / "System.map"
    system_map.write_text(nm.stdout)
    return {"vmlinux": elf, "System.map": system_map}


def _symbol(system_map: Path, name: str) -> int:
    for line in system_map.read_text().splitlines():
        address, _, symbol = line.split()
        if symbol == name:
            return int(address, 16)
    raise AssertionError(f"{name} is not in {system_map}")


def test_the_list_read_from_a_vmlinux(listed_kernel: dict[str, Path]) -> None:
    elf, system_map = listed_kernel["vmlinux"], listed_kernel["System.map"]
    start, stop = _symbol(system_map, START), _symbol(system_map, STOP)
    found = error_injection_addresses(elf.read_bytes(), start, stop, str(elf))
    assert found == {
        _symbol(system_map, "bpf_modify_return_test"),
        _symbol(system_map, "should_failslab"),
    }
    with pytest.raises(ELFError, match="do not hold whole entries"):
        error_injection_addresses(elf.read_bytes(), start, stop - 4, str(elf))
    with pytest.raises(ELFError, match="no section holds the error-injection list"):
        error_injection_addresses(elf.read_bytes(), 16, 32, str(elf))
    entry = struct.pack("<Qi4x", _symbol(system_map, "vfs_read"), 1)
    assert entry not in elf.read_bytes()  # the one function left off the list
    # arm64 leaves the addresses for the boot to fill in (--no-apply-dynamic-relocs)
    listed = struct.pack("<Q", _symbol(system_map, "should_failslab"))
    unrelocated = elf.read_bytes().replace(listed, bytes(8))
    with pytest.raises(ELFError, match="left for the kernel to fill in at boot"):
        error_injection_addresses(unrelocated, start, stop, str(elf))


def test_a_damaged_vmlinux_is_passed_over(tmp_path: Path, listed_kernel: dict[str, Path]) -> None:
    """The list is read from the first vmlinux that holds it; a damaged one before it is passed
    over, and is the error only when nothing else reads."""
    elf, system_map = listed_kernel["vmlinux"], listed_kernel["System.map"]
    start, stop = _symbol(system_map, START), _symbol(system_map, STOP)
    damaged = tmp_path / "vmlinux"
    damaged.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(100))
    found = kernel_data.load_error_injection([damaged, elf], None, start, stop)
    assert found == {
        _symbol(system_map, "bpf_modify_return_test"),
        _symbol(system_map, "should_failslab"),
    }
    with pytest.raises(ELFError, match=re.escape(str(damaged))):
        kernel_data.load_error_injection([damaged], None, start, stop)
    assert kernel_data.load_error_injection([system_map], None, start, stop) is None


@pytest.mark.parametrize("symbols", ["System.map", "symtab"])
def test_a_kernel_with_the_list_allows_the_functions_on_it(
    tmp_path: Path, objects: dict[str, Path], listed_kernel: dict[str, Path], symbols: str
) -> None:
    """Placed by a System.map, or by the vmlinux's own symbol table: the same verdicts."""
    files: dict[str, Path | bytes] = {
        f"boot/vmlinux-{OLD}": listed_kernel["vmlinux"],
        "{moddir}/config": b"CONFIG_FUNCTION_ERROR_INJECTION=y\n",
        "{moddir}/modules.dep": b"",
    }
    if symbols == "System.map":
        files[f"boot/System.map-{OLD}"] = listed_kernel["System.map"]
    verdicts = _verdicts(_root(tmp_path / "root", objects, files))
    usable = {name for name, r in verdicts.items() if r.verdict.usable}
    assert usable == {
        "fmod_ret_security",
        "fmod_ret_listed",
        "fentry_sleepable_listed",
        "fentry_vfs_read",
    }, {n: r.reasons for n, r in verdicts.items()}
    # listed, but .BTF_ids name it: perhaps in the sleepable denylist (it is)
    denied = verdicts["fentry_sleepable_denied"]
    assert denied.verdict is Verdict.UNKNOWN
    assert "may deny sleepable programs there" in _target_check(denied)[1]
    # not in the fake kernel's symbols at all: the verifier finds no address for it
    outcome, detail = _target_check(verdicts["fmod_ret_syscall"])
    assert (outcome, detail.endswith("has no symbol __x64_sys_openat to look it up by")) == (
        Outcome.FAIL,
        True,
    )
    outcome, detail = _target_check(verdicts["fmod_ret_vfs_read"])
    assert (outcome, detail.endswith(f"and {OLD} does not list it")) == (Outcome.FAIL, True)
    outcome, detail = _target_check(verdicts["fmod_ret_listed"])
    assert outcome is Outcome.PASS
    assert detail.endswith(f"where {OLD} lets fmod_ret programs attach")


def test_a_list_no_symbols_place_is_unknown(
    tmp_path: Path, objects: dict[str, Path], listed_kernel: dict[str, Path]
) -> None:
    """A stripped vmlinux and Debian's placeholder System.map: the list cannot be found."""
    stripped = tmp_path / "vmlinux"
    strip = ["objcopy", "--strip-all", "--keep-section=.BTF"]
    subprocess.run([*strip, str(listed_kernel["vmlinux"]), str(stripped)], check=True)
    files: dict[str, Path | bytes] = {
        f"boot/vmlinux-{OLD}": stripped,
        f"boot/System.map-{OLD}": b"ffffffffffffffff B The real System.map is in the linux-image-"
        + OLD.encode()
        + b"-dbg package\n",
        "{moddir}/config": b"CONFIG_FUNCTION_ERROR_INJECTION=y\n",
        "{moddir}/modules.dep": b"",
    }
    verdicts = _verdicts(_root(tmp_path / "root", objects, files))
    undecided = {n for n, r in verdicts.items() if r.verdict is Verdict.UNKNOWN}
    assert undecided == set(PROGRAMS) - {"fmod_ret_security", "fentry_vfs_read"}
    outcome, detail = _target_check(verdicts["fmod_ret_listed"])
    assert outcome is Outcome.UNDECIDED and "install linux-image-" in detail


# --- the running kernel ---------------------------------------------------------------------------

RUNNING_SOURCE = {
    "fmod_ret_mptcp": (
        "fmod_ret/update_socket_protocol",
        ", int family, int type, int protocol, int ret",
    ),
    "fmod_ret_security": ("fmod_ret/security_file_open", ", struct file *file, int ret"),
}


def _btf_names(btf_file: Path) -> str:
    """bpftool's dump of a BTF file: what it has, told by another tool than this one."""
    dump = [require_tool("bpftool"), "btf", "dump", "file", str(btf_file)]
    return subprocess.run(dump, capture_output=True, text=True, check=True).stdout


def test_a_kernel_with_fmod_ret_sets_of_its_own(tmp_path: Path) -> None:
    """Since 6.3 a subsystem may name fmod_ret targets (MPTCP names update_socket_protocol,
    since 6.7), listed in .BTF_ids, which the running kernel's sysfs BTF lacks: unknown, not
    refused, even on a kernel built without the error-injection list. A running kernel older
    than 6.7 has no such function: refused as absent."""
    require(SYSFS_BTF.exists(), f"{SYSFS_BTF} is missing")
    names = _btf_names(SYSFS_BTF)
    # MPTCP's set (6.7) comes after the sets themselves (6.3); before, the target is absent
    has_set = "'update_socket_protocol'" in names
    assert not has_set or "'register_btf_fmodret_id_set'" in names
    root = tmp_path / "root"
    install_running_kernel(root, RUNNING)
    config = root / "usr/lib/modules" / RUNNING / "config"
    config.write_text("# CONFIG_FUNCTION_ERROR_INJECTION is not set\n")
    work = tmp_path / "src"
    work.mkdir()
    objects = {
        name: compile_source(SOURCE % {"section": sec, "args": args}, name, SYSFS_BTF, work)
        for name, (sec, args) in RUNNING_SOURCE.items()
    }
    install_programs(root, objects)
    verdicts = _verdicts(root, RUNNING)
    assert verdicts["fmod_ret_security"].verdict is Verdict.COMPATIBLE
    mptcp = verdicts["fmod_ret_mptcp"]
    if not has_set:  # an older running kernel: no such function to attach to
        assert mptcp.verdict is Verdict.INCOMPATIBLE, mptcp.checks
        detail = f"update_socket_protocol is absent from {RUNNING}"
        assert _target_check(mptcp) == (Outcome.FAIL, detail)
        return
    assert mptcp.verdict is Verdict.UNKNOWN, mptcp.checks
    outcome, detail = _target_check(mptcp)
    assert outcome is Outcome.UNDECIDED
    assert detail.endswith(
        "(register_btf_fmodret_id_set), and whether update_socket_protocol is one cannot be told "
        "from its BTF alone (no .BTF_ids)"
    )


def test_the_running_kernels_own_config(tmp_path: Path) -> None:
    """With no config file installed, the running kernel's config is its /proc/config.gz."""
    require(SYSFS_BTF.exists(), f"{SYSFS_BTF} is missing")
    root = tmp_path / "root"
    install_running_kernel(root, RUNNING)
    proc_config = root / "proc/config.gz"
    proc_config.write_bytes(gzip.compress(b"# CONFIG_FUNCTION_ERROR_INJECTION is not set\n"))
    found = kernel.find_kernel(root, RUNNING)
    assert (found.running, found.config) == (True, proc_config)
    facts = ops.kernel_facts(root, [RUNNING], cache=False)[0]
    assert facts.config is not None and facts.config.get("FUNCTION_ERROR_INJECTION") == "n"
    assert facts.error_injection == frozenset()
    (root / "usr/lib/modules" / RUNNING / "config").write_text("CONFIG_BPF=y\n")
    assert kernel.find_kernel(root, RUNNING).config == root / "usr/lib/modules" / RUNNING / "config"


def test_a_module_function_on_a_kernel_without_the_list(
    tmp_path: Path, old_kernel: tuple[str, Path], old_vmlinux: Path
) -> None:
    """Without the list, a module has none either: fmod_ret on nf_conntrack's function is
    refused, as the older Debian kernel, booted with nf_conntrack inserted, says."""
    _, unpacked = old_kernel
    source = SOURCE % {
        "section": "fmod_ret/nf_conntrack_in",
        "args": ", struct sk_buff *skb, void *state, int ret",
    }
    obj = compile_source(source, "fmod_ret_module", old_vmlinux, tmp_path)
    root = tmp_path / "root"
    exampleroot.install_kernel(root, OLD, unpacked)
    install_programs(root, {"fmod_ret_module": obj})
    result = _verdicts(root)["fmod_ret_module"]
    assert result.verdict is Verdict.INCOMPATIBLE
    outcome, detail = _target_check(result)
    assert outcome is Outcome.FAIL and detail.endswith(f"and {OLD} is built without that list")
    require_tool("qemu-system-x86_64")
    report = qemuload.boot_and_load(
        unpacked / f"boot/vmlinuz-{OLD}", unpacked / "lib/modules" / OLD, {"fmod_ret_module": obj}
    )
    [loaded] = report.results
    assert not loaded.loaded and "nf_conntrack_in() is not modifiable" in loaded.log, loaded.log
