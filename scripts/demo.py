"""The demo: build an example root from two real Debian kernels and example BPF programs, then
show what weak-bpf-progs reads from it.  Run by `make demo`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from weak_bpf import cli  # noqa: E402

import exampleroot  # noqa: E402

# The program the story follows: it works on the older kernel, and the newer one renamed a field
# it reads; GUARDED reads the same field the robust way.
BROKEN = "usr/lib/bpf/acme-fs/buddy_load.bpf.o"
GUARDED = "globex-storage/bitmap_release"
# Unknown offline on Debian's kernels, settled by `verify` (examples/verify/)
PROBE = "usr/lib/bpf/acme-probe/queue_probe.bpf.o"


def _say(text: str) -> None:
    print(f"\n### {text}", flush=True)


def _run(args: list[str]) -> None:
    print(f"$ weak-bpf-progs {' '.join(args)}", flush=True)
    cli.main(args)
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--root", type=Path, default=REPO / "build" / "demo-root")
    args = parser.parse_args()

    _say("Fetching two real Debian kernels (once, into the cache)")
    fetched = subprocess.run(
        [str(REPO / "scripts" / "fetch-debian-kernels")], capture_output=True, text=True, check=True
    )
    kernels = dict(line.split("\t") for line in fetched.stdout.splitlines())
    for kver in kernels:
        print(f"  {kver}")

    _say(f"Building the example root in {args.root}")
    objects = exampleroot.build_example_root(args.root, {k: Path(v) for k, v in kernels.items()})
    for obj in objects:
        print(f"  {obj.relative_to(args.root)}")

    root = str(args.root)
    new = max(kernels)
    _say("Installed kernels, and what was found for each")
    _run(["--root", root, "kernels"])

    _say("What a program needs from a kernel: here, a field of struct ext4_buddy")
    _run(["--root", root, "-v", "inspect", BROKEN])

    _say("Which programs will work on which kernel")
    _run(["--root", root, "audit"])

    _say(f"What installing {new} would do (nothing is changed)")
    _run(["--root", root, "--no-journal", "--dry-run", "add-kernel", new])

    _say(f"Installing {new}: its kernel hook runs this")
    _run(["--root", root, "--no-journal", "add-kernel", new])
    weak = args.root / "usr/lib/modules" / new / "bpf/weak-updates"
    for link in sorted(weak.rglob("*.bpf.o")):
        print(f"  {link.relative_to(args.root)} -> {os.readlink(link)}")

    _say(f"Why acme-fs/buddy_load is left out: {new} changed under it")
    _run(["--root", root, "explain", BROKEN, new])
    print(f"  ({GUARDED} reads the field only where bpf_core_field_exists finds it: linked above)")

    _say(f"The report kept in var/lib/weak-bpf-progs/reports/{new}.json")
    report = json.loads((args.root / f"var/lib/weak-bpf-progs/reports/{new}.json").read_text())
    print(f"  {report['summary']}")

    _verify(args.root, min(kernels), kernels[min(kernels)])
    return 0


def _verify(root: Path, kver: str, unpacked: str) -> None:
    """A program the offline checks cannot decide, settled by the kernel's own verifier."""
    from weak_bpf.verify import tools

    import bpfbuild

    source = REPO / "examples/verify/acme-probe/queue_probe.bpf.c"
    vmlinux = bpfbuild.vmlinux_of(Path(unpacked) / f"boot/vmlinuz-{kver}")
    obj = bpfbuild.compile_program(source, [bpfbuild.vmlinux_h(vmlinux)])
    target = root / PROBE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(obj.read_bytes())

    _say(f"A kprobe on a function only a symbol table knows: unknown offline on {kver}")
    _run(["--root", str(root), "explain", PROBE, kver])
    try:
        tools.find_tools()
    except tools.MissingTool as e:
        print(f"  (skipped: {e}; {e.hint})")
        return
    _say(f"So ask {kver} itself: boot it in a throwaway VM, let its verifier load the program")
    _run(["--root", str(root), "verify", "--program", "acme-probe/*", kver])
    _run(["--root", str(root), "explain", PROBE, kver])


if __name__ == "__main__":
    sys.exit(main())
