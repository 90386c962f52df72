"""`verify`: the two real Debian kernels booted in a VM, their own verifier loading every program.

What `verify` says must agree with the independent real loads the suite records (tests/qemuload.py,
`bpftool prog loadall` of each whole object on the same kernel), including what no offline check can
decide: a kfunc called from a program type it is not registered for, a helper a program type may
not call, code the verifier rejects, and kprobe targets on Debian's placeholder System.map.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from vmprocs import qemu_children, require_verify_tools, zombie

from weak_bpf import cli, ops
from weak_bpf.engine.verified import ProgramLoad, Verification, fold
from weak_bpf.model import Area, Check, Outcome, ReasonCode, Result, Verdict
from weak_bpf.ops import verify as verify_ops
from weak_bpf.verify import guest, initramfs, tools, vm

import bpfbuild
import exampleroot
import qemuload
from conftest import REPO
from realload import install_programs

OLD, NEW = "6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"
GREYLIST_CODES = {"crc-mismatch", "symbol-missing"}

# What the offline checks cannot decide, each in a program they call compatible.
SOURCES = {
    # the verifier, not libbpf, rejects this one: a packet read with no bounds check
    "unchecked_packet": """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_unchecked(struct xdp_md *ctx)
{
	unsigned char *data = (unsigned char *)(long)ctx->data;

	return data[0] == 0xff ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
""",
    # bpf_skb_store_bytes is a helper for socket buffers: XDP programs may not call it
    "helper_not_allowed": """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_store(struct xdp_md *ctx)
{
	char byte = 0;

	bpf_skb_store_bytes((void *)ctx, 0, &byte, 1, 0);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
""",
    # nf_conntrack registers its kfuncs for XDP and tc programs, not for socket filters
    "kfunc_wrong_type": """
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

SEC("socket")
int sock_ct_lookup(struct __sk_buff *skb)
{
	struct bpf_ct_opts___local opts = { .netns_id = -1, .l4proto = 6 };
	struct bpf_sock_tuple tuple = {};
	struct nf_conn *ct;

	ct = bpf_xdp_ct_lookup((struct xdp_md *)skb, &tuple, sizeof(tuple.ipv4), &opts, sizeof(opts));
	if (ct) {
		bpf_ct_release(ct);
		return 1;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
""",
    # two programs, one of them broken: the other still loads, alone
    "one_of_two": """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_fine(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_broken(struct xdp_md *ctx)
{
	unsigned char *data = (unsigned char *)(long)ctx->data;

	return data[3];
}

char LICENSE[] SEC("license") = "GPL";
""",
}
UNDECIDABLE = ("unchecked_packet", "helper_not_allowed", "kfunc_wrong_type", "one_of_two")

# What only attaching decides; bpftool's load of the whole object (real_loads) says nothing of it.
ATTACHING = {
    # NOKPROBE_SYMBOL: a BTF function, so offline it is a kprobe target; the kernel refuses it
    "kprobe_refused": """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("kprobe/notify_die")
int on_notify_die(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
""",
    # a function of module nf_conntrack: the guest must insert it before attaching there
    "kprobe_module": """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("kprobe/nf_conntrack_free")
int on_ct_free(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
""",
    # a section name with spaces: its record must come back whole
    "odd_section": """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("kprobe/vfs_read and more")
int odd(void *ctx)
{
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int plain(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
""",
}


@pytest.fixture(scope="module")
def verify_tools() -> None:
    require_verify_tools()


@pytest.fixture(scope="module")
def programs(
    tmp_path_factory: pytest.TempPathFactory, old_vmlinux: Path, old_progs: dict[str, Path]
) -> dict[str, Path]:
    """Every program of tests/progs and those above, built against the older kernel."""
    include = bpfbuild.vmlinux_h(old_vmlinux)
    src = tmp_path_factory.mktemp("verify-src")
    built = dict(old_progs)
    for name, text in SOURCES.items():
        (src / f"{name}.bpf.c").write_text(text)
        built[name] = bpfbuild.compile_program(src / f"{name}.bpf.c", [include])
    return built


@pytest.fixture(scope="module")
def attaching(tmp_path_factory: pytest.TempPathFactory, old_vmlinux: Path) -> dict[str, Path]:
    include = bpfbuild.vmlinux_h(old_vmlinux)
    src = tmp_path_factory.mktemp("verify-attach-src")
    built = {}
    for name, text in ATTACHING.items():
        (src / f"{name}.bpf.c").write_text(text)
        built[name] = bpfbuild.compile_program(src / f"{name}.bpf.c", [include])
    return built


@pytest.fixture(scope="module")
def root(
    tmp_path_factory: pytest.TempPathFactory,
    debian_kernels: dict[str, Path],
    programs: dict[str, Path],
    attaching: dict[str, Path],
) -> Path:
    root = tmp_path_factory.mktemp("verify") / "root"
    for kver, unpacked in debian_kernels.items():
        exampleroot.install_kernel(root, kver, unpacked)
    install_programs(root, {**programs, **attaching})
    return root


def _by_name(report: ops.AuditReport) -> dict[str, ops.ProgramAudit]:
    return {Path(p.program.path).name[: -len(".bpf.o")]: p for p in report.programs}


@pytest.fixture(scope="module")
def static(root: Path) -> dict[str, ops.ProgramAudit]:
    return _by_name(ops.audit(root, [OLD, NEW]))


@pytest.fixture(scope="module")
def verified(
    verify_tools: None, root: Path, static: dict[str, ops.ProgramAudit]
) -> verify_ops.VerifyReport:
    """Both kernels, each in two boots (their outcomes together must agree, as one would)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify_ops, "BATCH", len(static) // 2 + 1)
        return verify_ops.verify(root, [OLD, NEW])


@pytest.fixture(scope="module")
def real_loads(
    verify_tools: None, debian_kernels: dict[str, Path], programs: dict[str, Path]
) -> dict[str, dict[str, qemuload.LoadResult]]:
    """bpftool loadall of each whole object, on each kernel."""
    return {
        kver: qemuload.load_on_kernel(
            unpacked / f"boot/vmlinuz-{kver}", unpacked / "lib/modules" / kver, programs
        )
        for kver, unpacked in debian_kernels.items()
    }


def _codes(result: Result) -> set[str]:
    return {r.code.value for r in result.reasons}


@pytest.mark.parametrize("kver", [OLD, NEW])
def test_verify_agrees_with_real_loads(
    kver: str,
    verified: verify_ops.VerifyReport,
    real_loads: dict[str, dict[str, qemuload.LoadResult]],
) -> None:
    """Every program is decided (no unknown left), and usable exactly when bpftool loads it
    (a greylist's CRCs are policy: the kernel never reads them)."""
    runs = {run.kver: run for run in verified.kernels}
    assert runs[kver].problem is None and runs[kver].boot is not None, runs[kver]
    assert runs[kver].boots == 2
    lines, wrong = [], 0
    for name, audit in sorted(_by_name(verified.audit).items()):
        if name in ATTACHING:
            continue  # decided by attaching, which bpftool's load does not do
        result = audit.results[kver][0]
        loaded = real_loads[kver][name].loaded
        lines.append(f"{name}: {result.verdict.value}, real load {'ok' if loaded else 'failed'}")
        assert result.verified, name
        assert result.verdict is not Verdict.UNKNOWN, (name, result.reasons)
        codes = _codes(result)
        if codes and codes <= GREYLIST_CODES:
            assert loaded, name
            continue
        if result.verdict.usable != loaded:
            wrong += 1
            lines.append(f"  reasons {result.reasons}\n  log {real_loads[kver][name].log[-800:]}")
    assert wrong == 0, "\n".join(lines)


@pytest.mark.parametrize("name", UNDECIDABLE)
def test_what_offline_checks_cannot_decide(
    name: str, static: dict[str, ops.ProgramAudit], verified: verify_ops.VerifyReport
) -> None:
    """Offline: compatible; K's verifier: incompatible, with the log's reason in the detail."""
    before = static[name].results[OLD][0]
    assert before.verdict.usable and not before.verified, before.reasons
    after = _by_name(verified.audit)[name].results[OLD][0]
    assert after.verdict is Verdict.INCOMPATIBLE and _codes(after) == {"verifier"}
    expected = {
        "unchecked_packet": "invalid access to packet",
        "helper_not_allowed": "unknown func bpf_skb_store_bytes#9",
        "kfunc_wrong_type": "calling kernel function bpf_xdp_ct_lookup is not allowed",
        "one_of_two": "invalid access to packet",
    }[name]
    assert any(expected in r.detail for r in after.reasons), after.reasons


def test_each_program_is_loaded_on_its_own(verified: verify_ops.VerifyReport) -> None:
    result = _by_name(verified.audit)["one_of_two"].results[OLD][0]
    verdicts = {c.program: c.outcome for c in result.checks if c.area is Area.VERIFIER}
    assert verdicts == {"xdp_fine": Outcome.PASS, "xdp_broken": Outcome.FAIL}


def test_unknown_settled_by_the_kernel(
    static: dict[str, ops.ProgramAudit], verified: verify_ops.VerifyReport
) -> None:
    """Debian's System.map is a placeholder: typeless ksyms and kprobe targets outside BTF are
    unknown offline; the booted kernel settles them (and refuses a kprobe on a function 6.1
    does not have: an object with alternatives)."""
    after = _by_name(verified.audit)
    for name in ("ksyms", "kprobe_nobtf", "alt_kprobe"):
        assert static[name].results[OLD][0].verdict is Verdict.UNKNOWN, name
    assert after["ksyms"].results[OLD][0].verdict is Verdict.COMPATIBLE
    assert after["kprobe_nobtf"].results[OLD][0].verdict is Verdict.COMPATIBLE
    alt = after["alt_kprobe"].results[OLD][0]
    assert alt.verdict is Verdict.COMPATIBLE_PARTIAL
    assert [(r.code.value, r.symbol) for r in alt.reasons] == [("attach-target", "swap_read_folio")]


def test_only_the_kernel_decides_attaching(
    static: dict[str, ops.ProgramAudit], verified: verify_ops.VerifyReport
) -> None:
    """Each loaded program is attached in the VM. A kprobe on a NOKPROBE function is a BTF
    function offline, and refused by the kernel; a kprobe on a module's function attaches once
    the guest inserted the module; a section name with spaces comes back whole."""
    after = _by_name(verified.audit)
    refused_before = static["kprobe_refused"].results[OLD][0]
    assert refused_before.verdict is Verdict.COMPATIBLE, refused_before.reasons
    refused = after["kprobe_refused"].results[OLD][0]
    assert refused.verified and refused.verdict is Verdict.INCOMPATIBLE
    assert [(r.code.value, r.symbol) for r in refused.reasons] == [("attach-target", "notify_die")]

    assert static["kprobe_module"].results[OLD][0].verdict is Verdict.UNKNOWN
    module = after["kprobe_module"].results[OLD][0]
    assert module.verdict is Verdict.COMPATIBLE and module.verified, module.reasons
    assert "nf_conntrack" in module.modules or any(
        "attached it" in c.detail for c in module.checks if c.area is Area.ATTACH
    )

    odd = after["odd_section"].results[OLD][0]
    assert odd.verified and odd.verdict is Verdict.COMPATIBLE, odd.reasons
    checks = {(c.area, c.program): c.outcome for c in odd.checks if c.program}
    assert checks == {  # libbpf reads "vfs_read and more" as a kprobe on vfs_read
        (Area.VERIFIER, "odd"): Outcome.PASS,
        (Area.ATTACH, "odd"): Outcome.PASS,
        (Area.VERIFIER, "plain"): Outcome.PASS,
        (Area.ATTACH, "plain"): Outcome.PASS,
    }


def test_a_second_verify_and_audit_boot_nothing(
    root: Path, verified: verify_ops.VerifyReport, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_boot(*args: object, **kwargs: object) -> None:
        raise AssertionError("booted again: the cache was not used")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("weak_bpf.verify.vm.boot", no_boot)
        again = verify_ops.verify(root, [OLD, NEW])
        assert all(run.boot is None and run.problem is None for run in again.kernels)
        assert again.audit.programs == verified.audit.programs
        assert cli.main(["--root", str(root), "audit", "--json", OLD]) == cli.Exit.FINDINGS
        doc = json.loads(capsys.readouterr().out)
        results = {Path(p["path"]).name: p["results"][OLD] for p in doc["programs"]}
        assert results["ksyms.bpf.o"]["verdict"] == "compatible"
        assert results["ksyms.bpf.o"]["verified"] is True
        packet = results["unchecked_packet.bpf.o"]
        assert packet["verdict"] == "incompatible"
        assert packet["reasons"][0]["code"] == "verifier"
        assert "invalid access to packet" in packet["reasons"][0]["detail"]

        path = "usr/lib/bpf/tests/kprobe_nobtf.bpf.o"
        assert cli.main(["--root", str(root), "explain", path, OLD]) == cli.Exit.OK
        text = capsys.readouterr().out
        assert f"on {OLD}: compatible (verified)" in text
        assert "attached it (in a VM)" in text
        assert "libbpf attached\n  each one it can" in text and "(lockdown, an LSM policy)" in text
        assert cli.main(["--root", str(root), "audit", OLD]) == cli.Exit.FINDINGS
        assert "compatible (verified)" in capsys.readouterr().out


def test_verify_cli_renders_the_boots(
    root: Path, verified: verify_ops.VerifyReport, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["--root", str(root), "verify", "--json", OLD])
    assert status == cli.Exit.FINDINGS
    doc = json.loads(capsys.readouterr().out)
    assert doc["kernels"][OLD]["booted"] is False  # every outcome from the cache
    assert doc["audit"]["kernels"] == [OLD]


def test_missing_loader_is_a_clear_error(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEAK_BPF_VERIFY_LOADER", "/nonexistent/verify-loader")
    assert cli.main(["--root", str(root), "verify", OLD]) == cli.Exit.USAGE
    err = capsys.readouterr().err
    assert "the verify loader is not installed" in err and "make loader" in err


def test_missing_qemu_is_a_clear_error(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(tools, "_SBIN", "/nonexistent")
    monkeypatch.setattr(tools.os, "access", lambda path, mode: False)
    assert cli.main(["--root", str(root), "audit", "--verify", OLD]) == cli.Exit.USAGE
    err = capsys.readouterr().err
    assert "qemu-system-x86_64 is not installed" in err and "qemu-system-x86" in err


def test_a_kernel_that_does_not_boot_in_time_is_unknown(
    verify_tools: None, tmp_path: Path, root: Path
) -> None:
    """A time limit too short for any boot: that kernel's verdicts are unknown, with the
    console's tail; nothing is cached, and no qemu is left behind."""
    other = tmp_path / "root"
    exampleroot.copy_root(root, other)
    shutil.rmtree(other / "var/cache", ignore_errors=True)  # no outcome of another test
    (other / "etc").mkdir(parents=True, exist_ok=True)
    (other / "etc/weak-bpf-progs.conf").write_text("[main]\nverify_timeout = 0.5\n")
    started = time.monotonic()
    qemus: list[int] = []
    real_popen = vm.subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> Any:
        proc = real_popen(*args, **kwargs)
        qemus.append(proc.pid)
        return proc

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vm.subprocess, "Popen", popen)
        done = verify_ops.verify(other, [OLD], programs=["*/kconfig.bpf.o"])
    assert time.monotonic() - started < 30
    (run,) = done.kernels
    assert run.problem is not None and "did not finish within 0 s" in run.problem
    (program,) = done.audit.programs
    result = program.results[OLD][0]
    assert result.verdict is Verdict.UNKNOWN and not result.verified
    assert _codes(result) == {"verifier"}
    assert not list((other / "var/cache/weak-bpf-progs/verify").glob("*/*.json"))
    assert qemus and not [q for q in qemus if Path(f"/proc/{q}").exists()]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killing_verify_leaves_no_vm(
    verify_tools: None, root: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGKILL, SIGTERM or Ctrl-C to weak-bpf-progs mid-boot: its qemu dies with it, and no
    file is left behind (the initrd is an anonymous memory file)."""
    other = tmp_path / "root"
    before = set(Path(tempfile.gettempdir()).iterdir())
    exampleroot.copy_root(root, other)
    shutil.rmtree(other / "var/cache", ignore_errors=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "weak_bpf", "--root", str(other), "verify", OLD],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    qemus: list[int] = []
    while time.monotonic() < deadline and not qemus:
        qemus = qemu_children(proc.pid)
        time.sleep(0.1)
    assert qemus, "verify never started qemu"
    proc.send_signal(sig)
    assert proc.wait(timeout=30) != 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{q}").exists() for q in qemus):
        time.sleep(0.1)
    alive = [q for q in qemus if Path(f"/proc/{q}").exists() and zombie(q) is False]
    assert not alive, f"qemu {alive} outlived weak-bpf-progs"
    left = [p for p in set(Path(tempfile.gettempdir()).iterdir()) - before if "weak-bpf" in p.name]
    assert not left, left
    assert not list((other / "var/cache/weak-bpf-progs/verify").glob("*/*.json"))


# --- the fold and the guest's output, without a VM --------------------------------------------


# --- the modules a boot inserts -----------------------------------------------------------------


def _debian_modules(kernel: tuple[str, Path]) -> list[Path]:
    kver, unpacked = kernel
    return sorted((unpacked / "lib/modules" / kver / "kernel").rglob("*.ko*"))


def test_module_order_from_modinfo_and_from_modules_dep(
    old_kernel: tuple[str, Path], tmp_path: Path
) -> None:
    """Debian's package holds no modules.dep (depmod writes it on install): the modules' own
    `depends=` order them. With a modules.dep, its list does, the last one first."""
    kos = _debian_modules(old_kernel)
    by_modinfo = initramfs.module_order(kos, None, ["nf_conntrack"])
    assert [name for name, _ in by_modinfo] == [
        "nf_defrag_ipv4", "nf_defrag_ipv6", "libcrc32c", "nf_conntrack"
    ]  # fmt: skip
    assert all(path.name == f"{name}.ko" for name, path in by_modinfo)
    dep = tmp_path / "modules.dep"
    dep.write_text(
        "kernel/net/netfilter/nf_conntrack.ko: kernel/lib/libcrc32c.ko "
        "kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko\n"
        "kernel/lib/libcrc32c.ko:\nnot a module line\n"
    )
    by_dep = initramfs.module_order(kos, dep, ["nf-conntrack"])
    assert [name for name, _ in by_dep] == ["nf_defrag_ipv6", "libcrc32c", "nf_conntrack"]


def test_module_order_errors_are_initramfs_errors(
    old_kernel: tuple[str, Path], tmp_path: Path
) -> None:
    """A module that is missing or corrupt, or an unreadable modules.dep, spoils the boot's
    modules with a sentence naming the file, never with a crash."""
    kos = _debian_modules(old_kernel)
    with pytest.raises(initramfs.InitramfsError, match="module no_such is not among"):
        initramfs.module_order(kos, None, ["no_such"])
    corrupt = tmp_path / "nf_conntrack.ko"
    corrupt.write_bytes(b"\x7fELF" + b"\0" * 60)
    others = [ko for ko in kos if ko.name != "nf_conntrack.ko"]
    with pytest.raises(initramfs.InitramfsError, match=re.escape(str(corrupt))):
        initramfs.module_order([*others, corrupt], None, ["nf_conntrack"])
    with pytest.raises(initramfs.InitramfsError, match=r"modules\.dep: cannot read"):
        initramfs.module_order(kos, tmp_path / "modules.dep", ["nf_conntrack"])


def test_fold_never_makes_an_offline_failure_pass() -> None:
    failed = Check(Area.GREYLIST, Outcome.FAIL, "symbol x", "gone", ReasonCode.SYMBOL_MISSING, "x")
    result = Result(Verdict.INCOMPATIBLE, (failed,))
    loaded = Verification((ProgramLoad("p", "xdp", 0, ""),))
    folded = fold(result, loaded, "K")
    assert folded.verdict is Verdict.INCOMPATIBLE and folded.verified
    assert _codes(folded) == {"symbol-missing"}


def test_fold_keeps_greylist_undecided_and_settles_the_rest() -> None:
    grey = Check(
        Area.GREYLIST, Outcome.UNDECIDED, "symvers", "none", ReasonCode.KERNEL_DATA_MISSING
    )
    ksym = Check(Area.KSYM, Outcome.UNDECIDED, "ksym y", "no map", ReasonCode.KERNEL_DATA_MISSING)
    loaded = Verification((ProgramLoad("p", "xdp", 0, ""),))
    assert fold(Result(Verdict.UNKNOWN, (ksym,)), loaded, "K").verdict is Verdict.COMPATIBLE
    assert fold(Result(Verdict.UNKNOWN, (grey, ksym)), loaded, "K").verdict is Verdict.UNKNOWN
    rejected = Verification((ProgramLoad("p", "xdp", 13, "R1 invalid mem access"),))
    folded = fold(Result(Verdict.UNKNOWN, (ksym,)), rejected, "K")
    assert folded.verdict is Verdict.INCOMPATIBLE
    assert [c.outcome for c in folded.checks[:1]] == [Outcome.UNDECIDED]  # not settled


def _target(outcome: Outcome, symbol: str = "f") -> Check:
    code = None if outcome is Outcome.PASS else ReasonCode.KERNEL_DATA_MISSING
    return Check(Area.ATTACH, outcome, f"attach target kprobe/{symbol}", "?", code, symbol, "p")


def test_fold_with_every_kprobe_refused_is_incompatible() -> None:
    outcome = Verification((ProgramLoad("p", "kprobe/f", 0, "", attach=22),))
    for offline in (Outcome.UNDECIDED, Outcome.PASS):  # the kernel's word beats a BTF function
        folded = fold(Result(Verdict.UNKNOWN, (_target(offline),)), outcome, "K")
        assert folded.verdict is Verdict.INCOMPATIBLE
        assert [(r.code.value, r.symbol) for r in folded.reasons] == [("attach-target", "f")]


def test_fold_settles_a_target_only_by_attaching() -> None:
    """A kprobe or tracepoint program loads whatever its target: only attaching settles it. A
    kind libbpf cannot auto-attach (attach None) leaves the target as it was."""
    target = _target(Outcome.UNDECIDED)
    loaded = Verification((ProgramLoad("p", "kprobe/f", 0, "", attach=None),))
    assert fold(Result(Verdict.UNKNOWN, (target,)), loaded, "K").verdict is Verdict.UNKNOWN
    attached = Verification((ProgramLoad("p", "kprobe/f", 0, "", attach=0),))
    assert fold(Result(Verdict.UNKNOWN, (target,)), attached, "K").verdict is Verdict.COMPATIBLE
    fentry = dataclasses.replace(target, subject="attach target fentry/f")
    by_load = Verification((ProgramLoad("p", "fentry/f", 0, "", attach=None),))
    assert fold(Result(Verdict.UNKNOWN, (fentry,)), by_load, "K").verdict is Verdict.COMPATIBLE


def test_fold_without_a_whole_report_is_unknown() -> None:
    for outcome in (
        Verification(failure="module nf_conntrack was not inserted"),
        Verification(open_error="error 22: bad ELF"),
    ):
        folded = fold(Result(Verdict.COMPATIBLE, ()), outcome, "K")
        assert folded.verdict is Verdict.UNKNOWN and not folded.verified


def test_fold_out_of_memory_is_not_a_verdict_and_native_is_no_shield() -> None:
    oom = Verification((ProgramLoad("p", "xdp", errno.ENOMEM, "map create failed"),))
    assert fold(Result(Verdict.COMPATIBLE, ()), oom, "K").verdict is Verdict.UNKNOWN
    rejected = Verification((ProgramLoad("p", "xdp", errno.EACCES, "invalid access"),))
    assert fold(Result(Verdict.NATIVE, ()), rejected, "K").verdict is Verdict.INCOMPATIBLE
    accepted = Verification((ProgramLoad("p", "xdp", 0, ""),))
    assert fold(Result(Verdict.NATIVE, ()), accepted, "K").verdict is Verdict.NATIVE


def _loader(*records: str, done: bool = True) -> str:
    body = "".join(records)
    count = sum(r.startswith("@prog ") for r in records)
    return f"@loader 2 libbpf 1.1\n@object /objects/a.o\n@count {count}\n{body}" + (
        f"@done {count}\n" if done else ""
    )


def test_loader_output_is_read_per_program() -> None:
    text = _loader(
        "@prog 0 0 one xdp\n@end\n",
        "@prog 13 - two kprobe/a\\x20b\n| libbpf: prog 'two': failed\n| 0: R1=ctx()\n@end\n",
    )
    outcome = guest.read_loader_output(text, 1, ["one", "two"])
    assert outcome.failure is None, outcome.failure
    assert [(p.name, p.section, p.error, p.attach) for p in outcome.programs] == [
        ("one", "xdp", 0, 0),
        ("two", "kprobe/a b", 13, None),
    ]
    assert outcome.programs[1].log == "libbpf: prog 'two': failed\n0: R1=ctx()"
    opened = guest.read_loader_output(
        "@loader 2 libbpf 1.1\n@object /o/b.o\n@open 22\n| libbpf: bad elf\n@end\n@done 0\n", 1
    )
    assert opened.open_error is not None and "bad elf" in opened.open_error


@pytest.mark.parametrize(
    ("text", "status", "why"),
    [
        (_loader("@prog 0 0 one xdp\n@end\n"), 139, "exit status 139"),  # a crash
        (_loader("@prog 0 0 one xdp\n@end\n", done=False), 0, "done line None"),  # cut short
        (_loader("@prog 0 0 one xdp\n@end\n"), 1, "does not match"),
        (_loader("@prog 0 0 one xdp\n@end\n"), 0, "no record of program two"),
        (_loader("@prog 0 0 one x y z\n@end\n"), 0, "garbled"),
        ("@object /objects/a.o\n", 0, "did not run"),
        (guest.GARBLED, 0, "did not run"),
    ],
)
def test_a_loader_report_that_is_not_whole_is_unknown(text: str, status: int, why: str) -> None:
    outcome = guest.read_loader_output(text, status, ["one", "two"] if "two" in why else ["one"])
    assert outcome.failure is not None and why in outcome.failure and not outcome.programs


def test_console_blocks_are_checked() -> None:
    """A kernel message cut into a block on the console garbles it: its SHA-1 no longer holds."""
    data = b"@loader 2 libbpf 1.1\n" * 8
    encoded = base64.encodebytes(data).decode().splitlines()
    good = [
        "@@RESULT a rc=0",
        *encoded,
        f"@@END a {hashlib.sha1(data).hexdigest()}",
        "@@DONE",
    ]
    assert guest.parse_console("\n".join(good), ["a"], []).results["a"] == (0, data.decode())
    cut = [line for i, line in enumerate(good) if i != 2]  # a line lost to a kernel message
    assert guest.parse_console("\n".join(cut), ["a"], []).results["a"][1] == guest.GARBLED


def test_fold_settles_what_loading_a_program_decides_but_not_a_loaders_doing() -> None:
    """A sleepable struct_ops callback or an fmod_ret target that loads on K is settled; a
    struct_ops map's check, which depends on the package's own loader, is not."""
    sleeps = Check(
        Area.ATTACH,
        Outcome.UNDECIDED,
        "struct_ops program p",
        "?",
        ReasonCode.ATTACH_TARGET,
        "p",
        "p",
    )
    fmod = Check(
        Area.ATTACH, Outcome.UNDECIDED, "attach target", "?", ReasonCode.ATTACH_TARGET, "f", "q"
    )
    loader = Check(Area.ATTACH, Outcome.UNDECIDED, "struct_ops m", "?", ReasonCode.ATTACH_TARGET)
    loaded = Verification(
        (ProgramLoad("p", "struct_ops.s/p", 0, ""), ProgramLoad("q", "fmod_ret/f", 0, ""))
    )
    assert fold(Result(Verdict.UNKNOWN, (sleeps, fmod)), loaded, "K").verdict is Verdict.COMPATIBLE
    assert fold(Result(Verdict.UNKNOWN, (sleeps, loader)), loaded, "K").verdict is Verdict.UNKNOWN
