"""The command line's parser: the verbs, their weak-modules aliases and the options."""

from __future__ import annotations

import argparse
import enum
from collections.abc import Sequence
from pathlib import Path

from weak_bpf import __version__


class Verb(str, enum.Enum):
    ADD_KERNEL = "add-kernel"
    REMOVE_KERNEL = "remove-kernel"
    ADD_PROGS = "add-progs"
    REMOVE_PROGS = "remove-progs"
    AUDIT = "audit"
    EXPLAIN = "explain"
    GREYLIST = "greylist"
    SYMVERS = "symvers"
    KERNELS = "kernels"
    INSPECT = "inspect"
    VERIFY = "verify"

    @property
    def help(self) -> str:
        return _VERB_HELP[self]


_VERB_HELP = {
    Verb.ADD_KERNEL: "link the compatible programs into a new kernel's weak-updates (default: "
    "the running kernel)",
    Verb.REMOVE_KERNEL: "take away a kernel's weak-updates links (before the kernel goes)",
    Verb.ADD_PROGS: "resolve every kernel again for new or updated objects (paths on stdin)",
    Verb.REMOVE_PROGS: "unlink objects being removed (paths on stdin); the best remaining build "
    "takes their place",
    Verb.AUDIT: "check every installed program against every (or the given) kernel",
    Verb.EXPLAIN: "every check of one program on a kernel, passed or failed, in words",
    Verb.GREYLIST: "print the greylist of a BPF object against its build kernel (for packagers)",
    Verb.SYMVERS: "print a kernel's BPF symvers, derived from its BTF",
    Verb.KERNELS: "list installed kernels and the artifacts found for each",
    Verb.INSPECT: "show what BPF objects need from a kernel (programs, kfuncs, ksyms, CO-RE)",
    Verb.VERIFY: "boot each (or the given) kernel in a throwaway VM and let its own verifier "
    "load every program",
}

# weak-modules spellings, normalised to verbs before parsing.
ALIASES: dict[str, str] = {
    "--add-kernel": Verb.ADD_KERNEL.value,
    "--remove-kernel": Verb.REMOVE_KERNEL.value,
    "--add-progs": Verb.ADD_PROGS.value,
    "--remove-progs": Verb.REMOVE_PROGS.value,
    "--add-modules": Verb.ADD_PROGS.value,
    "--remove-modules": Verb.REMOVE_PROGS.value,
    "--basedir": "--root",
}


def normalise(argv: Sequence[str]) -> list[str]:
    """`argv` with the weak-modules spellings turned into verbs and options."""
    return [ALIASES.get(arg, arg) for arg in argv]


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Options accepted before and after the command; after it, they override."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--root",
        type=Path,
        default=default(Path("/")),
        metavar="DIR",
        help="operate on the system installed under DIR (default: /)",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", default=default(False), help="say more"
    )
    parser.add_argument(
        "--debug", action="store_true", default=default(False), help="show tracebacks on errors"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document on stdout instead of text",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=default(False),
        help="change nothing anywhere (no links, cache, lock, report or journal); print the plan",
    )
    parser.add_argument(
        "--no-journal",
        action="store_true",
        default=default(False),
        help="do not write the report to the systemd journal (the report file is still written)",
    )


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes (1-1024)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weak-bpf-progs",
        description="Keep installed BPF programs working across kernel updates.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    def verb(v: Verb) -> argparse.ArgumentParser:
        return sub.add_parser(v.value, help=v.help, parents=[common], allow_abbrev=False)

    verb(Verb.ADD_KERNEL).add_argument(
        "kernel", nargs="?", metavar="K", help="the kernel release (default: uname -r)"
    )
    verb(Verb.REMOVE_KERNEL).add_argument("kernel", metavar="K", help="the kernel release")
    verb(Verb.ADD_PROGS)
    verb(Verb.REMOVE_PROGS)

    audit = verb(Verb.AUDIT)
    audit.add_argument("kernels", nargs="*", metavar="K", help="kernel versions (default: all)")
    audit.add_argument(
        "--kernel",
        action="append",
        default=[],
        metavar="K",
        dest="kernel_filter",
        help="only this kernel (repeatable)",
    )
    audit.add_argument(
        "--program",
        action="append",
        default=[],
        metavar="GLOB",
        help="only programs whose path or <pkg>/<name> matches (repeatable)",
    )
    audit.add_argument(
        "--jobs",
        "-j",
        type=_jobs,
        default=None,
        metavar="N",
        help="judge with N processes (default: one per processor)",
    )
    audit.add_argument(
        "--verify",
        action="store_true",
        help="first boot each kernel in a VM and let its verifier load every program "
        "(as 'verify' does)",
    )
    verify = verb(Verb.VERIFY)
    verify.add_argument(
        "kernels", nargs="*", metavar="K", help="kernel versions (default: all with an image)"
    )
    verify.add_argument(
        "--program",
        action="append",
        default=[],
        metavar="GLOB",
        help="only programs whose path or <pkg>/<name> matches (repeatable)",
    )
    explain = verb(Verb.EXPLAIN)
    explain.add_argument(
        "object",
        type=Path,
        metavar="OBJECT",
        help="a BPF object: installed (relative to --root) or any file",
    )
    explain.add_argument("kernels", nargs="*", metavar="K", help="kernel versions (default: all)")

    grey = verb(Verb.GREYLIST)
    grey.add_argument("object", type=Path, metavar="OBJECT", help="the BPF object")
    source = grey.add_mutually_exclusive_group(required=True)
    source.add_argument("--kernel", metavar="K", help="an installed build kernel")
    source.add_argument(
        "--btf",
        type=Path,
        metavar="FILE",
        help="the build kernel's BTF: vmlinux, vmlinuz or raw BTF",
    )
    grey.add_argument(
        "--symvers",
        type=Path,
        metavar="FILE",
        help="the build kernel's Module.symvers (with --btf)",
    )
    verb(Verb.SYMVERS).add_argument("kernel", metavar="K", help="an installed kernel")

    verb(Verb.KERNELS).add_argument(
        "kernels", nargs="*", metavar="K", help="kernel versions (default: all installed)"
    )
    verb(Verb.INSPECT).add_argument(
        "objects",
        nargs="+",
        metavar="OBJECT",
        type=Path,
        help="BPF object files (relative to --root when they are there, or absolute)",
    )
    return parser
