"""struct_ops maps: a TCP congestion control whose cong_control() callback changed its arguments
between Debian's 6.1 (sk, rs) and 6.10 (sk, ack, flag, rs), members a kernel lacks, and a
struct_ops type no kernel has. Verdicts on the running kernel are held against real loads; on
the older Debian kernel, against a load in the kernel booted under qemu."""

from __future__ import annotations

from pathlib import Path

import pytest

from weak_bpf import ops
from weak_bpf.model import Outcome, Result, Verdict

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

SEC("struct_ops/wbp_other")
__u32 BPF_PROG(wbp_other, struct sock *sk) { return 10; }

SEC(".struct_ops")
struct tcp_congestion_ops___extra wbp_extra = {
	.ssthresh = (void *)wbp_ssthresh,
	.undo_cwnd = (void *)wbp_ssthresh,
	NO_SUCH_OP
	.name = "wbp_extra",
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


@pytest.fixture(scope="module")
def objects(old_vmlinux: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require(SYSFS_BTF.exists(), f"{SYSFS_BTF} is missing")
    work = tmp_path_factory.mktemp("struct-ops")
    return {
        "cc_new": compile_source(NEW_ARGS + CC, "cc_new", SYSFS_BTF, work),
        "cc_61": compile_source(OLD_ARGS + CC, "cc_61", old_vmlinux, work),
        "extra_set": compile_source(
            EXTRA.replace("NO_SUCH_OP", ".no_such_op = (void *)wbp_other,"),
            "extra_set",
            SYSFS_BTF,
            work,
        ),
        "extra_unset": compile_source(
            EXTRA.replace("NO_SUCH_OP", ""), "extra_unset", SYSFS_BTF, work
        ),
        "no_such_type": compile_source(NO_SUCH_TYPE, "no_such_type", SYSFS_BTF, work),
    }


def _verdicts(root: Path, kver: str) -> dict[str, Result]:
    report = ops.audit(root, [kver], cache=False)
    return {
        Path(p.program.path).name[: -len(".bpf.o")]: p.results[kver][0] for p in report.programs
    }


def _failures(result: Result) -> list[tuple[str, str | None]]:
    return [(r.code.value, r.symbol) for r in result.reasons]


def test_on_the_running_kernel_as_it_loads(tmp_path: Path, objects: dict[str, Path]) -> None:
    require_root()
    root = tmp_path / "root"
    install_running_kernel(root, RUNNING)
    install_programs(root, objects)
    verdicts = _verdicts(root, RUNNING)
    assert {n: r.verdict for n, r in verdicts.items()} == {
        "cc_new": Verdict.COMPATIBLE,
        "cc_61": Verdict.INCOMPATIBLE,
        "extra_set": Verdict.INCOMPATIBLE,
        "extra_unset": Verdict.UNKNOWN,
        "no_such_type": Verdict.INCOMPATIBLE,
    }
    assert _failures(verdicts["cc_61"]) == [("attach-proto", "tcp_congestion_ops.cong_control")]
    [proto] = [c for c in verdicts["cc_61"].checks if c.outcome is Outcome.FAIL]
    assert proto.detail.startswith(
        f"it dereferences argument slot 1 at instruction 1, which is u32 on {RUNNING}: a scalar"
    )
    assert "tcp_congestion_ops.cong_control(struct sock *, u32, int, " in proto.detail
    assert _failures(verdicts["extra_set"]) == [("attach-target", "tcp_congestion_ops.no_such_op")]
    assert _failures(verdicts["no_such_type"]) == [("attach-target", "wbp_no_such_ops")]
    [unset] = [c for c in verdicts["extra_unset"].checks if c.outcome is Outcome.UNDECIDED]
    assert unset.detail == (
        "the object names it tcp_congestion_ops___extra, which libbpf 1.4 and later take for "
        f"tcp_congestion_ops; {RUNNING}'s tcp_congestion_ops lacks no_such_op, which the object "
        "leaves unset and libbpf 1.3 and later pass over: older libbpf refuses the map, so "
        "whether it loads depends on the libbpf of its loader"
    )

    loads = {name: load_running(obj, name) for name, obj in objects.items()}
    for name, result in verdicts.items():
        if result.verdict is not Verdict.UNKNOWN:
            assert loads[name].ok == result.verdict.usable, (name, loads[name].log)
    # this machine's bpftool has a libbpf older than 1.3: it refuses the unknown one
    assert not loads["extra_unset"].ok


def test_on_the_older_debian_kernel_as_it_loads(
    tmp_path: Path, old_kernel: tuple[str, Path], objects: dict[str, Path]
) -> None:
    require_tool("qemu-system-x86_64")
    _, unpacked = old_kernel
    root = tmp_path / "root"
    exampleroot.install_kernel(root, OLD, unpacked)
    cc = {name: objects[name] for name in ("cc_new", "cc_61")}
    install_programs(root, cc)
    verdicts = _verdicts(root, OLD)
    assert {n: r.verdict for n, r in verdicts.items()} == {
        "cc_new": Verdict.INCOMPATIBLE,  # it reads its rate sample from the 4th argument
        "cc_61": Verdict.COMPATIBLE,
    }
    assert _failures(verdicts["cc_new"]) == [("attach-proto", "tcp_congestion_ops.cong_control")]
    report = qemuload.boot_and_load(unpacked / f"boot/vmlinuz-{OLD}", None, cc, modules_to_load=())
    assert {r.name: r.loaded for r in report.results} == {"cc_new": False, "cc_61": True}
