"""Benchmark: `verify` of 40 objects on one real kernel under TCG, boot included, then a rerun
served by the cache.

    /usr/bin/python3 bench/bench_verify.py [--objects N]

The root holds the older Debian cloud kernel and N distinct objects: the C test programs and the
examples, compiled against that kernel, topped up with small XDP programs that differ by a
constant. The first run boots the kernel under TCG (KVM is turned off, as on a machine without
it); the rerun is `python3 -m weak_bpf --root R verify K` in a fresh process.
Targets: first run <= 60 s (boot included); cached rerun < 1 s.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from weak_bpf.ops import verify as verify_ops  # noqa: E402
from weak_bpf.verify import vm  # noqa: E402
from weak_bpf.versions import kernel_sort_key  # noqa: E402

import bpfbuild  # noqa: E402
import exampleroot  # noqa: E402

FIRST_TARGET = 60.0
CACHED_TARGET = 1.0
FILLER = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_filler_{n}(struct xdp_md *ctx)
{{
	return ctx->ingress_ifindex == {n} ? XDP_DROP : XDP_PASS;
}}

char LICENSE[] SEC("license") = "GPL";
"""


def build_root(root: Path, count: int, scratch: Path) -> str:
    fetched = subprocess.run(
        [str(REPO / "scripts/fetch-debian-kernels")], capture_output=True, text=True, check=True
    )
    kernels = {k: Path(v) for k, v in (line.split("\t") for line in fetched.stdout.splitlines())}
    kver = min(kernels, key=kernel_sort_key)
    exampleroot.install_kernel(root, kver, kernels[kver])
    include = bpfbuild.vmlinux_h(bpfbuild.vmlinux_of(kernels[kver] / f"boot/vmlinuz-{kver}"))
    progs = REPO / "tests/progs"
    sources = sorted(progs.glob("*.bpf.c")) + exampleroot.example_sources()
    for n in range(max(0, count - len(sources))):
        filler = scratch / f"filler_{n}.bpf.c"
        filler.write_text(FILLER.format(n=n + 1))
        sources.append(filler)
    for i, source in enumerate(sources[:count]):
        obj = bpfbuild.compile_program(source, [include, progs])
        target = root / "usr/lib/bpf" / f"vendor{i:02d}" / obj.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(obj, target)
    return kver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--objects", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wbp-bench-") as tmp:
        root = Path(tmp) / "root"
        kver = build_root(root, args.objects, Path(tmp))
        vm.kvm_usable = lambda: False  # TCG, as on a machine without /dev/kvm
        start = time.perf_counter()
        done = verify_ops.verify(root, [kver])
        first = time.perf_counter() - start
        (run,) = done.kernels
        if run.problem or run.boot is None or run.boot.kvm:
            raise SystemExit(f"the boot failed or was not under TCG: {run}")
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "weak_bpf", "--root", str(root), "verify", kver],
            cwd=REPO,
            capture_output=True,
            check=False,
        )
        cached = time.perf_counter() - start
        if proc.returncode not in (0, 1) or b"from the cache" not in proc.stdout:
            raise SystemExit(f"the rerun failed or booted: {proc.stdout.decode()[:400]}")
    ok = True
    print(f"verify of {run.objects} objects on {kver} under TCG (boot {run.boot.seconds:.1f} s)")
    for label, seconds, target in (
        ("first run", first, FIRST_TARGET),
        ("cached rerun", cached, CACHED_TARGET),
    ):
        verdict = "PASS" if seconds <= target else "FAIL"
        ok &= verdict == "PASS"
        print(f"  {label:<13} {seconds:6.2f} s   target <= {target:.2f} s   {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
