"""Benchmark: `audit` of 200 programs against 3 real kernels, cold and warm cache.

    /usr/bin/python3 bench/bench_audit.py [--programs N]

The root holds the two Debian cloud kernels (as the demo lays them out) and the running kernel
(its sysfs BTF and kallsyms), and N programs: the C test programs and the examples, compiled
against the older Debian kernel and installed under as many packages as it takes. Each run is
`python3 -m weak_bpf --root R audit --json` in a fresh process, as a sysadmin runs it.
Targets: cold <= 3 s; warm <= 0.3 s + 2 ms per program; peak memory < 200 MB.
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from weak_bpf.versions import kernel_sort_key  # noqa: E402

import bpfbuild  # noqa: E402
import exampleroot  # noqa: E402

COLD_TARGET = 3.0
MEMORY_TARGET_MB = 200


def build_root(root: Path, count: int) -> None:
    fetched = subprocess.run(
        [str(REPO / "scripts/fetch-debian-kernels")], capture_output=True, text=True, check=True
    )
    kernels = {k: Path(v) for k, v in (line.split("\t") for line in fetched.stdout.splitlines())}
    for kver, unpacked in kernels.items():
        exampleroot.install_kernel(root, kver, unpacked)
    running = platform.release()
    (root / "usr/lib/modules" / running).mkdir(parents=True)
    (root / "usr/lib/modules" / running / "modules.dep").touch()
    (root / "sys/kernel/btf").mkdir(parents=True)
    shutil.copyfile("/sys/kernel/btf/vmlinux", root / "sys/kernel/btf/vmlinux")
    (root / "proc").mkdir()
    shutil.copyfile("/proc/kallsyms", root / "proc/kallsyms")
    oldest = min(kernels, key=kernel_sort_key)
    include = bpfbuild.vmlinux_h(bpfbuild.vmlinux_of(kernels[oldest] / f"boot/vmlinuz-{oldest}"))
    progs = REPO / "tests/progs"
    sources = sorted(progs.glob("*.bpf.c")) + exampleroot.example_sources()
    objects = [bpfbuild.compile_program(s, [include, progs]) for s in sources]
    for i in range(count):
        obj = objects[i % len(objects)]
        target = root / "usr/lib/bpf" / f"vendor{i // len(objects):02d}" / obj.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(obj, target)


def run_audit(root: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "weak_bpf", "--root", str(root), "audit", "--json"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"audit failed: {proc.stderr.decode()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--programs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wbp-bench-") as tmp:
        root = Path(tmp) / "root"
        build_root(root, args.programs)
        cache = root / "var/cache/weak-bpf-progs"
        cold = []
        for _ in range(args.runs):
            shutil.rmtree(cache, ignore_errors=True)
            cold.append(run_audit(root))
        warm = [run_audit(root) for _ in range(args.runs)]
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    warm_target = 0.3 + 0.002 * args.programs
    rows = [
        ("cold cache", min(cold), COLD_TARGET),
        ("warm cache", min(warm), warm_target),
    ]
    ok = True
    print(f"audit of {args.programs} programs x 3 kernels (best of {args.runs})")
    for label, seconds, target in rows:
        verdict = "PASS" if seconds <= target else "FAIL"
        ok &= verdict == "PASS"
        print(f"  {label:<11} {seconds:6.2f} s   target <= {target:.2f} s   {verdict}")
    verdict = "PASS" if peak_mb < MEMORY_TARGET_MB else "FAIL"
    ok &= verdict == "PASS"
    print(f"  peak memory {peak_mb:6.0f} MB  target < {MEMORY_TARGET_MB} MB    {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
