"""Benchmark: reading one BPF object with its relocations (target: under 20 ms each).

    /usr/bin/python3 bench/bench_object.py [--runs N]

Compiles the test programs (tests/progs) and the examples (examples/progs) with clang against the
older real Debian kernel (scripts/fetch-debian-kernels), as a vendor builds them, then times
read_bpf_object() on each file's bytes, in-process, best of N. (Against the running kernel, the
programs that read fields a newer kernel renamed would not compile.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from weak_bpf.parsers.bpfobject import read_bpf_object  # noqa: E402
from weak_bpf.versions import kernel_sort_key  # noqa: E402

import bpfbuild  # noqa: E402

TARGET_MS = 20.0


def build_kernel_vmlinux() -> Path:
    """The older Debian kernel's vmlinux (downloaded and unpacked once, then cached)."""
    fetched = subprocess.run(
        [str(REPO / "scripts/fetch-debian-kernels")], capture_output=True, text=True, check=True
    )
    kernels = dict(line.split("\t") for line in fetched.stdout.splitlines())
    oldest = min(kernels, key=kernel_sort_key)
    return bpfbuild.vmlinux_of(Path(kernels[oldest]) / f"boot/vmlinuz-{oldest}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    include = bpfbuild.vmlinux_h(build_kernel_vmlinux())
    progs = REPO / "tests" / "progs"
    sources = sorted(progs.glob("*.bpf.c")) + sorted((REPO / "examples/progs").glob("*/*.bpf.c"))
    objects = [bpfbuild.compile_program(s, [include, progs]) for s in sources]

    print(f"{'object':<28} {'size':>9} {'relos':>6} {'best ms':>8}")
    worst = 0.0
    for obj in objects:
        data = obj.read_bytes()
        best = float("inf")
        for _ in range(args.runs):
            start = time.perf_counter()
            parsed = read_bpf_object(data, obj.name)
            best = min(best, time.perf_counter() - start)
        worst = max(worst, best * 1000)
        relos = len(parsed.relocations) + len(parsed.core_relos)
        print(f"{obj.name:<28} {len(data):>9} {relos:>6} {best * 1000:>8.2f}")
    verdict = "PASS" if worst < TARGET_MS else "FAIL"
    print(f"slowest object: {worst:.2f} ms (target < {TARGET_MS:.0f} ms): {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
