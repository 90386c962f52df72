"""qemuload: real loads on the older Debian 6.1 kernel, booted under qemu.

The host kernel refuses every fentry program (EPERM, a host policy); on the booted 6.1 kernel the
same object loads. A kfunc that 6.1 lacks fails there, and nf_conntrack's kfuncs load only once the
module is inserted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import bpfbuild
import qemuload
from conftest import require, require_tool

XDP_PASS = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
"""

# bpf_task_acquire and bpf_task_release came in 6.2: libbpf finds no such kfunc in 6.1's BTF.
KFUNC_TOO_NEW = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

SEC("tp_btf/task_newtask")
int BPF_PROG(on_newtask, struct task_struct *task, u64 clone_flags)
{
	struct task_struct *held = bpf_task_acquire(task);

	if (held)
		bpf_task_release(held);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""

FENTRY = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

int last_dfd;

SEC("fentry/do_unlinkat")
int BPF_PROG(on_unlinkat, int dfd, struct filename *name)
{
	last_dfd = dfd;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""

# The verifier, not libbpf, rejects this one: a packet read with no bounds check.
UNCHECKED_PACKET = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_unchecked(struct xdp_md *ctx)
{
	unsigned char *data = (unsigned char *)(long)ctx->data;

	return data[0] == 0xff ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
"""

# nf_conntrack's kfuncs with the one null check that 6.1's verifier follows: it does not know that
# a non-null PTR_TO_BTF_ID stays non-null, so a second `if (ct)` forks a path that leaks ct.
CT_LOOKUP = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct bpf_ct_opts___local {
	s32 netns_id;
	s32 error;
	u8 l4proto;
	u8 dir;
	u8 reserved[2];
} __attribute__((preserve_access_index));

extern struct nf_conn *bpf_xdp_ct_lookup(struct xdp_md *xdp_ctx, struct bpf_sock_tuple *bpf_tuple,
                                         u32 len_tuple, struct bpf_ct_opts___local *opts,
                                         u32 len_opts) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

SEC("xdp")
int xdp_ct_lookup(struct xdp_md *ctx)
{
	struct bpf_ct_opts___local opts = { .netns_id = -1, .l4proto = 6 };
	struct bpf_sock_tuple tuple = {};
	struct nf_conn *ct;

	ct = bpf_xdp_ct_lookup(ctx, &tuple, sizeof(tuple.ipv4), &opts, sizeof(opts));
	if (ct) {
		bpf_ct_release(ct);
		return XDP_DROP;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
"""

SOURCES = {
    "ct_lookup": CT_LOOKUP,
    "xdp_pass": XDP_PASS,
    "kfunc_too_new": KFUNC_TOO_NEW,
    "fentry_unlinkat": FENTRY,
    "unchecked_packet": UNCHECKED_PACKET,
}


def _require_qemu_tools() -> None:
    require_tool("qemu-system-x86_64")
    require_tool("bpftool")
    require(qemuload.busybox(), "busybox is not installed (scripts/install-deps installs it)")


@pytest.fixture(scope="module")
def kernel(old_kernel: tuple[str, Path]) -> tuple[Path, Path]:
    """(vmlinuz, lib/modules/<kver>) of the older Debian kernel."""
    _require_qemu_tools()
    kver, kernel_dir = old_kernel
    return kernel_dir / "boot" / f"vmlinuz-{kver}", kernel_dir / "lib" / "modules" / kver


@pytest.fixture(scope="module")
def objects(
    tmp_path_factory: pytest.TempPathFactory, old_vmlinux: Path, old_progs: dict[str, Path]
) -> dict[str, Path]:
    """The programs above and two of tests/progs, built against the older kernel."""
    require_tool("clang")
    include_dir = bpfbuild.vmlinux_h(old_vmlinux)
    src_dir = tmp_path_factory.mktemp("qemuload-src")
    built = {}
    for name, text in SOURCES.items():
        source = src_dir / f"{name}.bpf.c"
        source.write_text(text)
        built[name] = bpfbuild.compile_program(source, [include_dir])
    built["kfunc_module_ct"] = old_progs["kfunc_module_ct"]
    built["kconfig"] = old_progs["kconfig"]
    return built


@pytest.fixture(scope="module")
def report(kernel: tuple[Path, Path], objects: dict[str, Path]) -> qemuload.BootReport:
    vmlinuz, modules_dir = kernel
    return qemuload.boot_and_load(vmlinuz, modules_dir, objects, timeout=120)


def _result(report: qemuload.BootReport, name: str) -> qemuload.LoadResult:
    return next(r for r in report.results if r.name == name)


def test_modules_inserted_in_dependency_order(report: qemuload.BootReport) -> None:
    names = [module for module, _, _ in report.modules]
    assert names[-1] == "nf_conntrack"
    assert {"nf_defrag_ipv4", "nf_defrag_ipv6", "libcrc32c"} <= set(names[:-1])
    assert all(rc == 0 for _, rc, _ in report.modules)


def test_trivial_xdp_loads(report: qemuload.BootReport) -> None:
    result = _result(report, "xdp_pass")
    assert result.loaded and result.rc == 0, result.log


def test_fentry_loads_on_61(report: qemuload.BootReport) -> None:
    result = _result(report, "fentry_unlinkat")
    assert result.loaded, result.log


def test_module_kfuncs_load_with_nf_conntrack(report: qemuload.BootReport) -> None:
    result = _result(report, "ct_lookup")
    assert result.loaded, result.log


def test_kfunc_module_ct_loads_with_nf_conntrack(report: qemuload.BootReport) -> None:
    """tests/progs/kfunc_module_ct: it must pass 6.1's verifier (only one null check of ct)."""
    result = _result(report, "kfunc_module_ct")
    assert result.loaded, result.log


def test_kfunc_from_62_fails_on_61(report: qemuload.BootReport) -> None:
    result = _result(report, "kfunc_too_new")
    assert not result.loaded and result.rc != 0
    assert "bpf_task_acquire" in result.log, result.log


def test_kconfig_externs_resolve_from_boot_config(report: qemuload.BootReport) -> None:
    """libbpf reads /boot/config-$(uname -r): the guest has the kernel's config there."""
    result = _result(report, "kconfig")
    assert result.loaded, result.log


def test_verifier_log_comes_back(report: qemuload.BootReport) -> None:
    result = _result(report, "unchecked_packet")
    assert not result.loaded
    assert "invalid access to packet" in result.log, result.log


def test_module_kfuncs_fail_without_nf_conntrack(
    kernel: tuple[Path, Path], objects: dict[str, Path]
) -> None:
    vmlinuz, _ = kernel
    wanted = {"kfunc_module_ct": objects["kfunc_module_ct"], "xdp_pass": objects["xdp_pass"]}
    results = qemuload.load_on_kernel(vmlinuz, None, wanted, timeout=120)
    assert results["xdp_pass"].loaded, results["xdp_pass"].log
    ct = results["kfunc_module_ct"]
    assert not ct.loaded
    assert re.search(r"'bpf_(xdp_ct_lookup|ct_release)': not found in kernel or module", ct.log)


def test_second_run_is_cached(
    report: qemuload.BootReport, kernel: tuple[Path, Path], objects: dict[str, Path]
) -> None:
    vmlinuz, modules_dir = kernel

    def no_boot(*args: object, **kwargs: object) -> None:
        raise AssertionError("booted again: the cache was not used")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(qemuload, "run_guest", no_boot)
        again = qemuload.boot_and_load(vmlinuz, modules_dir, objects, timeout=120)
    assert again.results == report.results


def test_cpio_archive_reads_back_with_cpio(tmp_path: Path) -> None:
    cpio = shutil.which("cpio")
    require(cpio, "cpio is not installed (scripts/install-deps installs it)")
    assert cpio is not None
    entries = [
        ("dir", 0o040755, b"", (0, 0)),
        ("dir/file", 0o100644, b"hello", (0, 0)),
        ("dev", 0o040755, b"", (0, 0)),
        ("dev/console", 0o020600, b"", (5, 1)),
    ]
    listing = subprocess.run(
        [cpio, "-itv"], input=qemuload.cpio_newc(entries), capture_output=True, check=True
    ).stdout.decode()
    lines = listing.splitlines()
    assert [line.split()[-1] for line in lines] == ["dir", "dir/file", "dev", "dev/console"]
    assert lines[1].startswith("-rw-r--r--") and " 5 " in lines[1]
    assert lines[3].startswith("crw-------") and "5,   1" in lines[3]


def test_parse_console_rejects_an_unfinished_boot() -> None:
    empty = "da39a3ee5e6b4b0d3255bfef95601890afd80709"  # SHA-1 of nothing
    console = f"@@RESULT a rc=0\n@@END a {empty}\n[   1.0] Kernel panic - not syncing\n"
    # a's result was read: only the end marker, then only b, is reported missing
    with pytest.raises(qemuload.QemuLoadError, match=r"^the guest did not report @@DONE; "):
        qemuload.parse_console(console, ["a"], [])
    with pytest.raises(qemuload.QemuLoadError, match=r"^the guest did not report b; "):
        qemuload.parse_console(console + "@@DONE\n", ["a", "b"], [])


def test_a_boot_past_its_timeout_is_killed(
    kernel: tuple[Path, Path], objects: dict[str, Path]
) -> None:
    vmlinuz, _ = kernel
    started = time.monotonic()
    with pytest.raises(qemuload.QemuLoadError, match="did not finish within"):
        qemuload.load_on_kernel(vmlinuz, None, {"xdp_pass": objects["xdp_pass"]}, timeout=0.5)
    assert time.monotonic() - started < 5
