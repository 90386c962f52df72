"""struct_ops maps: a TCP congestion control whose cong_control() callback changed its arguments
between Debian's 6.1 (sk, rs) and 6.10 (sk, ack, flag, rs), members a kernel lacks, and a
struct_ops type no kernel has. Verdicts on the running kernel, expected from what bpftool says
that kernel is, are held against real loads; on the older Debian kernel, against a load in the
kernel booted under qemu."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from weak_bpf import ops
from weak_bpf.model import Outcome, Result, Verdict

import bpfbuild
import exampleroot
import qemuload
from bpfprogs import compile_source
from conftest import require, require_root, require_tool
from realload import SYSFS_BTF, install_programs, install_running_kernel, load_running

OLD = "6.1.0-47-cloud-amd64"
RUNNING = __import__("platform").release()

CC = r"""
#include "common.h"

__u64 delivered;

SEC("struct_ops/wbp_init")
void BPF_PROG(wbp_init, struct sock *sk) {}

SEC("struct_ops/wbp_ssthresh")
__u32 BPF_PROG(wbp_ssthresh, struct sock *sk) { return 10; }

SEC("struct_ops/wbp_undo_cwnd")
__u32 BPF_PROG(wbp_undo_cwnd, struct sock *sk) { return 10; }

SEC("struct_ops/wbp_cong_control")
void BPF_PROG(wbp_cong_control, struct sock *sk, CONG_ARGS const struct rate_sample *rs)
{
	delivered += rs->delivered;
}

SEC(".struct_ops")
struct tcp_congestion_ops wbp_cc = {
	.init = (void *)wbp_init,
	.ssthresh = (void *)wbp_ssthresh,
	.undo_cwnd = (void *)wbp_undo_cwnd,
	.cong_control = (void *)wbp_cong_control,
	.name = "wbp_cc",
};

char LICENSE[] SEC("license") = "GPL";
"""
NEW_ARGS = "#define CONG_ARGS u32 ack, int flag,\n"  # since 6.10
OLD_ARGS = "#define CONG_ARGS\n"

# A member the kernel's tcp_congestion_ops lacks, set to a program or left unset.
EXTRA = r"""
#include "common.h"

struct tcp_congestion_ops___extra {
	u32 (*ssthresh)(struct sock *);
	u32 (*undo_cwnd)(struct sock *);
	void (*no_such_op)(struct sock *);
	char name[16];
};

SEC("struct_ops/wbp_ssthresh")
__u32 BPF_PROG(wbp_ssthresh, struct sock *sk) { return 10; }

SEC("struct_ops/wbp_undo_cwnd")
__u32 BPF_PROG(wbp_undo_cwnd, struct sock *sk) { return 10; }

#ifdef SET
SEC("struct_ops/wbp_other")
void BPF_PROG(wbp_other, struct sock *sk) {}
#endif

SEC(".struct_ops")
struct tcp_congestion_ops___extra wbp_extra = {
	.ssthresh = (void *)wbp_ssthresh,
	.undo_cwnd = (void *)wbp_undo_cwnd,
#ifdef SET
	.no_such_op = (void *)wbp_other,
#endif
	.name = "wbp_extra",
};

char LICENSE[] SEC("license") = "GPL";
"""

# What libbpf refuses whatever the kernel: one program set to two members, a struct_ops program
# no member is set to, a member of another size (even left zero).
REFUSED = r"""
#include "common.h"

struct tcp_congestion_ops___wide {
	u32 (*ssthresh)(struct sock *);
	u32 (*undo_cwnd)(struct sock *);
	__u64 flags;
	char name[16];
};

SEC("struct_ops/wbp_ssthresh")
__u32 BPF_PROG(wbp_ssthresh, struct sock *sk) { return 10; }

#if !defined(REUSE)
SEC("struct_ops/wbp_undo_cwnd")
__u32 BPF_PROG(wbp_undo_cwnd, struct sock *sk) { return 10; }
#endif

#if defined(UNBOUND)
SEC("struct_ops/wbp_unbound")
__u32 BPF_PROG(wbp_unbound, struct sock *sk) { return 10; }
#endif

SEC(".struct_ops")
#if defined(WIDE)
struct tcp_congestion_ops___wide wbp_refused = {
#else
struct tcp_congestion_ops wbp_refused = {
#endif
	.ssthresh = (void *)wbp_ssthresh,
#if defined(REUSE)
	.undo_cwnd = (void *)wbp_ssthresh,
#else
	.undo_cwnd = (void *)wbp_undo_cwnd,
#endif
	.name = "wbp_refused",
};

char LICENSE[] SEC("license") = "GPL";
"""

# Variations on CC: a license that is not GPL, a second map sharing the programs, a sleepable
# callback, a member set to a subprogram.
SECOND_MAP = r"""
SEC(".struct_ops")
struct tcp_congestion_ops wbp_cc2 = {
	.init = (void *)wbp_init,
	.ssthresh = (void *)wbp_ssthresh,
	.undo_cwnd = (void *)wbp_undo_cwnd,
	.cong_control = (void *)wbp_cong_control,
	.name = "wbp_cc2",
};
"""
SUBPROGRAM = r"""
#include "common.h"

__attribute__((noinline)) __u32 wbp_helper(struct sock *sk) { return 10; }

SEC("struct_ops/wbp_ssthresh")
__u32 BPF_PROG(wbp_ssthresh, struct sock *sk) { return wbp_helper(sk); }

SEC(".struct_ops")
struct tcp_congestion_ops wbp_sub = {
	.ssthresh = (void *)wbp_ssthresh,
	.undo_cwnd = (void *)wbp_helper,
	.name = "wbp_sub",
};

char LICENSE[] SEC("license") = "GPL";
"""

NO_SUCH_TYPE = r"""
#include "common.h"

struct wbp_no_such_ops {
	int (*op)(void);
};

SEC("struct_ops/wbp_op")
int BPF_PROG(wbp_op) { return 0; }

SEC(".struct_ops")
struct wbp_no_such_ops wbp_none = { .op = (void *)wbp_op };

char LICENSE[] SEC("license") = "GPL";
"""


def _bpftool(*args: str) -> str:
    return subprocess.run(
        [require_tool("bpftool"), *args], capture_output=True, text=True, check=True
    ).stdout


class Here(NamedTuple):
    args: int  # of the running kernel's tcp_congestion_ops.cong_control
    link: bool  # it has struct_ops links
    libbpf: tuple[int, int]  # bpftool's


@pytest.fixture(scope="module")
def here() -> Here:
    """What the running kernel and this machine's bpftool are, as bpftool tells: how many
    arguments cong_control takes, whether struct_ops links exist, libbpf's version."""
    require(SYSFS_BTF.exists(), f"{SYSFS_BTF} is missing")
    header = (bpfbuild.vmlinux_h(SYSFS_BTF) / "vmlinux.h").read_text()
    proto = re.search(r"void \(\*cong_control\)\(([^)]*)\);", header)
    assert proto is not None, "the running kernel has no tcp_congestion_ops.cong_control"
    version = re.search(r"libbpf v(\d+)\.(\d+)", _bpftool("version"))
    assert version is not None
    return Here(
        args=len(proto[1].split(",")),
        link="'bpf_struct_ops_link_create'" in _bpftool("btf", "dump", "file", str(SYSFS_BTF)),
        libbpf=(int(version[1]), int(version[2])),
    )


@pytest.fixture(scope="module")
def objects(
    old_vmlinux: Path, tmp_path_factory: pytest.TempPathFactory, here: Here
) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("struct-ops")
    host_args = NEW_ARGS if here.args == 4 else OLD_ARGS
    cc = host_args + CC
    link = CC.replace('SEC(".struct_ops")', 'SEC(".struct_ops.link")')
    return {
        # built against Debian's 6.1, reading the rate sample as 6.10 (cc4) and 6.1 (cc2) pass it
        "cc4": compile_source(NEW_ARGS + CC, "cc4", old_vmlinux, work),
        "cc2": compile_source(OLD_ARGS + CC, "cc2", old_vmlinux, work),
        "cc_link": compile_source(OLD_ARGS + link, "cc_link", old_vmlinux, work),
        # built against the running kernel
        "cc_link_here": compile_source(host_args + link, "cc_link_here", SYSFS_BTF, work),
        "extra_set": compile_source("#define SET\n" + EXTRA, "extra_set", SYSFS_BTF, work),
        "extra_unset": compile_source(EXTRA, "extra_unset", SYSFS_BTF, work),
        "reuse": compile_source("#define REUSE\n" + REFUSED, "reuse", SYSFS_BTF, work),
        "unbound": compile_source("#define UNBOUND\n" + REFUSED, "unbound", SYSFS_BTF, work),
        "wide": compile_source("#define WIDE\n" + REFUSED, "wide", SYSFS_BTF, work),
        "no_such_type": compile_source(NO_SUCH_TYPE, "no_such_type", SYSFS_BTF, work),
        "mit": compile_source(cc.replace('= "GPL"', '= "MIT"'), "mit", SYSFS_BTF, work),
        "two_maps": compile_source(
            cc.replace("char LICENSE", SECOND_MAP + "char LICENSE"), "two_maps", SYSFS_BTF, work
        ),
        "sleepable": compile_source(
            cc.replace('SEC("struct_ops/wbp_ssthresh")', 'SEC("struct_ops.s/wbp_ssthresh")'),
            "sleepable",
            SYSFS_BTF,
            work,
        ),
        "subprogram": compile_source(SUBPROGRAM, "subprogram", SYSFS_BTF, work),
    }


def _verdicts(root: Path, kver: str) -> dict[str, Result]:
    report = ops.audit(root, [kver], cache=False)
    return {
        Path(p.program.path).name[: -len(".bpf.o")]: p.results[kver][0] for p in report.programs
    }


def _failures(result: Result) -> list[tuple[str, str | None]]:
    return [(r.code.value, r.symbol) for r in result.reasons]


def test_on_the_running_kernel_as_it_loads(
    tmp_path: Path, objects: dict[str, Path], here: Here
) -> None:
    require_root()
    root = tmp_path / "root"
    install_running_kernel(root, RUNNING)
    mine = {name: obj for name, obj in objects.items() if name != "cc_link"}
    install_programs(root, mine)
    verdicts = _verdicts(root, RUNNING)
    four = here.args == 4
    yes, no = Verdict.COMPATIBLE, Verdict.INCOMPATIBLE
    assert {n: r.verdict for n, r in verdicts.items()} == {
        "cc4": yes if four else no,
        "cc2": no if four else yes,
        "cc_link_here": yes if here.link else no,
        "extra_set": Verdict.UNKNOWN,
        "extra_unset": yes,  # its flavored name needs libbpf 1.4, which passes over them
        "mit": no,
        "two_maps": yes,
        "sleepable": Verdict.UNKNOWN,
        "subprogram": no,
        "reuse": no,
        "unbound": no,
        "wide": no,
        "no_such_type": no,
    }
    old_reader = "cc2" if four else "cc4"
    assert _failures(verdicts[old_reader]) == [("attach-proto", "tcp_congestion_ops.cong_control")]
    if four:
        [proto] = [c for c in verdicts["cc2"].checks if c.outcome is Outcome.FAIL]
        assert proto.detail.startswith(
            f"it dereferences argument slot 1 at instruction 1, which is u32 on {RUNNING}: a scalar"
        )
        assert "tcp_congestion_ops.cong_control(struct sock *, u32, int, " in proto.detail
    assert _failures(verdicts["reuse"]) == [("attach-target", "wbp_ssthresh")]
    assert _failures(verdicts["unbound"]) == [("attach-target", "wbp_unbound")]
    assert _failures(verdicts["wide"]) == [("attach-target", "tcp_congestion_ops.flags")]
    [wide] = [c for c in verdicts["wide"].checks if c.outcome is Outcome.FAIL]
    assert wide.detail == (
        f"tcp_congestion_ops.flags is 8 bytes in the object and 4 on {RUNNING}: libbpf cannot "
        "register the map"
    )
    [extra] = [c for c in verdicts["extra_set"].checks if c.outcome is Outcome.UNDECIDED]
    assert (extra.symbol, extra.detail) == (
        "tcp_congestion_ops.no_such_op",
        f"the object sets no_such_op, which {RUNNING}'s tcp_congestion_ops lacks: libbpf refuses "
        "the map unless its loader clears them first, as sched_ext schedulers do for the "
        "callbacks a kernel lacks",
    )
    assert _failures(verdicts["no_such_type"]) == [("attach-target", "wbp_no_such_ops")]
    assert _failures(verdicts["mit"]) == [("license", None)]
    assert _failures(verdicts["subprogram"]) == [("malformed", None)]
    [sleeps] = [c for c in verdicts["sleepable"].checks if c.outcome is Outcome.UNDECIDED]
    assert sleeps.symbol == "wbp_ssthresh"
    assert "(kernels before 6.4 let none sleep)" in sleeps.detail

    loads = {name: load_running(obj, name) for name, obj in mine.items()}
    # bpftool's own libbpf may predate what these objects' loaders have: .struct_ops.link (1.2),
    # flavored struct_ops names (1.4)
    libbpf = here.libbpf
    too_old = {n for n, v in (("cc_link_here", (1, 2)), ("extra_unset", (1, 4))) if libbpf < v}
    compared = 0
    for name, result in verdicts.items():
        if result.verdict is not Verdict.UNKNOWN and name not in too_old:
            assert loads[name].ok == result.verdict.usable, (name, loads[name].log)
            compared += 1
    assert compared >= 9
    assert not loads["extra_set"].ok  # bpftool's libbpf clears nothing
    # and where they say why, it is the reason given here (in older and newer libbpf's words)
    said = {
        "reuse": ("cannot use prog wbp_ssthresh", "invalid reuse of prog wbp_ssthresh"),
        "unbound": ("prog 'wbp_unbound': failed to load: -524", "isn't referenced anywhere"),
        "no_such_type": ("struct wbp_no_such_ops is not found in kernel BTF",),
        "mit": ("must have a GPL compatible license",),
        "subprogram": ("is not struct_ops BPF program",),
    }
    if four:
        said["cc2"] = ("R1 invalid mem access 'scalar'",)
    for name, words in said.items():
        assert any(w in loads[name].log for w in words), (name, loads[name].log)


def test_on_the_older_debian_kernel_as_it_loads(
    tmp_path: Path, old_kernel: tuple[str, Path], objects: dict[str, Path]
) -> None:
    require_tool("qemu-system-x86_64")
    _, unpacked = old_kernel
    root = tmp_path / "root"
    exampleroot.install_kernel(root, OLD, unpacked)
    cc = {name: objects[name] for name in ("cc4", "cc2", "cc_link")}
    install_programs(root, cc)
    verdicts = _verdicts(root, OLD)
    assert {n: r.verdict for n, r in verdicts.items()} == {
        "cc4": Verdict.INCOMPATIBLE,  # it reads its rate sample from the 4th argument
        "cc2": Verdict.COMPATIBLE,
        "cc_link": Verdict.INCOMPATIBLE,  # struct_ops links came in 6.4
    }
    assert _failures(verdicts["cc4"]) == [("attach-proto", "tcp_congestion_ops.cong_control")]
    assert _failures(verdicts["cc_link"]) == [("attach-target", "tcp_congestion_ops")]
    report = qemuload.boot_and_load(unpacked / f"boot/vmlinuz-{OLD}", None, cc, modules_to_load=())
    assert {r.name: r.loaded for r in report.results} == {
        "cc4": False,
        "cc2": True,
        "cc_link": False,
    }


def test_verify_leaves_alone_what_its_loader_cannot_open(objects: dict[str, Path]) -> None:
    """verify's loader is linked with the host's libbpf: an object that needs a newer one, as
    its own loader has, is not judged by the VM, whose failure would be the loader's."""
    from weak_bpf.ops.verify import loader_can_open
    from weak_bpf.parsers.bpfobject import read_bpf_object

    def opens(name: str, libbpf: str) -> bool:
        obj = read_bpf_object(objects[name].read_bytes(), name)
        return loader_can_open(obj, f"@loader 1 libbpf {libbpf}")

    assert [opens("cc_link", v) for v in ("1.1", "1.2", "2.0")] == [False, True, True]
    assert [opens("extra_unset", v) for v in ("1.3", "1.4")] == [False, True]
    assert opens("cc2", "0.8") and opens("no_such_type", "1.0")
