"""The command line: runs the verb that cli_parser parsed. The only module that prints to stdout
or chooses an exit code."""

from __future__ import annotations

import argparse
import contextlib
import enum
import gc
import json
import logging
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO

from weak_bpf.cli_parser import Verb, build_parser, normalise
from weak_bpf.errors import ApplyError, WeakBpfError

if TYPE_CHECKING:
    from weak_bpf.ops import KernelRun
    from weak_bpf.ops.verify import VerifyReport

log = logging.getLogger("weak-bpf-progs")


class Exit(enum.IntEnum):
    OK = 0
    FINDINGS = 1  # audit found something incompatible or unknown
    USAGE = 2  # bad usage, or input unreadable for the command as a whole
    APPLY = 3  # the plan could not be applied
    INTERRUPTED = 130


def _cmd_kernels(args: argparse.Namespace) -> int:
    from weak_bpf import ops, report

    infos = ops.list_kernels(args.root, args.kernels)
    sys.stdout.write(report.render_kernels(infos, verbose=args.verbose))
    return Exit.OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    from weak_bpf import ops, report

    status = Exit.OK
    for path in args.objects:
        try:
            obj = ops.inspect_object(args.root, path)
        except WeakBpfError as e:
            _error(e)
            status = Exit.USAGE
            continue
        greylist = ops.greylist_beside(args.root, path)
        sys.stdout.write(report.render_object(obj, verbose=args.verbose, greylist_file=greylist))
    return status


def _print_json(doc: object) -> None:
    """Indented for a person at a terminal; one line for a program (it is read 5 times faster:
    an audit of 10,000 objects prints 16 MB)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(doc, indent=indent) + "\n")


def _print_runs(args: argparse.Namespace, runs: list[KernelRun]) -> int:
    if args.json:
        doc = [run.resolution.to_json() for run in runs]
        _print_json(doc)
    else:
        for run in runs:
            if args.dry_run:
                blocked = {p.link for p in run.resolution.programs if p.blocked and p.link}
                sys.stdout.writelines(f"{line}\n" for line in run.plan.describe(blocked))
            print(run.resolution.summary)
    untold = [r.resolution for r in runs if not r.on_stderr]  # the others' reports said it all
    everywhere = set.intersection(*(set(r.errors) for r in untold)) if untold else set()
    for problem in sorted(everywhere):  # bad input: say it once, not once per kernel
        log.warning("%s", problem)
    for resolution in untold:
        for problem in resolution.errors:
            if problem not in everywhere:
                log.warning("%s: %s", resolution.kernel, problem)
        for program in resolution.programs:
            if program.blocked:
                log.warning("%s", resolution.blocked_error(program))
                log.warning("hint: %s", resolution.blocked_hint())
    return Exit.OK


def _cmd_add_kernel(args: argparse.Namespace) -> int:
    from weak_bpf import ops

    kver = args.kernel or platform.release()
    return _print_resolved(
        args,
        lambda: ops.add_kernel(args.root, kver, dry_run=args.dry_run, journal=not args.no_journal),
    )


def _cmd_remove_kernel(args: argparse.Namespace) -> int:
    from weak_bpf import ops

    runs = ops.remove_kernel(
        args.root, args.kernel, dry_run=args.dry_run, journal=not args.no_journal
    )
    return _print_runs(args, runs)


def _cmd_progs(args: argparse.Namespace) -> int:
    from weak_bpf import ops

    change = ops.add_progs if args.verb == Verb.ADD_PROGS.value else ops.remove_progs
    # bytes, decoded as file names are: under a strict locale (en_US.UTF-8), a non-UTF-8 path
    # from an rpm file trigger would otherwise fail the whole run
    raw = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
    paths = [os.fsdecode(line) for line in raw.splitlines()]
    return _print_resolved(
        args, lambda: change(args.root, paths, dry_run=args.dry_run, journal=not args.no_journal)
    )


def _print_resolved(args: argparse.Namespace, resolve: Callable[[], list[KernelRun]]) -> int:
    """The runs of `resolve`; when some kernels failed, the others' runs, then the error."""
    from weak_bpf import ops

    try:
        runs = resolve()
    except ops.KernelsFailed as e:
        _print_runs(args, e.runs)
        raise
    return _print_runs(args, runs)


def _wants_color(stream: TextIO) -> bool:
    """Color on a terminal, unless NO_COLOR (https://no-color.org) is set or TERM is dumb."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _running_kernel(root: Path) -> str | None:
    """The running kernel's release when the audited root is this very system, or shows the
    running kernel (its sysfs BTF: a chroot with /sys bound in, a container's root)."""
    from weak_bpf.kernel import find as kernel

    if root.resolve() == Path("/"):
        return kernel.running_release()
    return kernel.running_kernel(root)


def _kernel_marks(root: Path, kvers: Sequence[str]) -> dict[str, list[str]]:
    """{kver: ["running", "default"]}, as far as they are known, for the audit's headers."""
    from weak_bpf.kernel import bootloader
    from weak_bpf.kernel import find as kernel

    running, default = _running_kernel(root), bootloader.default_kernel(root)
    marks: dict[str, list[str]] = {}
    for kver in kvers:
        notes = [n for n, k in (("running", running), ("default", default)) if k == kver]
        if kver == running and not kernel.is_installed(root, kver):
            notes.append("not installed: never linked")
        if notes:
            marks[kver] = notes
    return marks


class _Progress:
    """One self-overwriting status line on a terminal's stderr; nothing elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream if stream.isatty() else None
        self.shown = False

    def __call__(self, message: str) -> None:
        if self.stream is not None:
            self.stream.write(f"\r\x1b[K{message}")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.stream is not None and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _cmd_audit(args: argparse.Namespace) -> int:
    from weak_bpf import ops, report

    kernels = [*args.kernels, *args.kernel_filter]
    progress = _Progress(sys.stderr)
    try:
        if args.verify:  # --- verify: boot each kernel first ---
            result = _verified(args, kernels, progress, bootable_only=False).audit
        else:
            result = ops.audit(
                args.root,
                kernels,
                programs=args.program,
                cache=not args.dry_run,
                progress=progress,
                jobs=args.jobs,
            )
    finally:
        progress.clear()
    if args.json:
        _print_json(report.audit_json(result))
    else:
        marks = _kernel_marks(args.root, result.kernels)
        sys.stdout.write(report.render_audit(result, color=_wants_color(sys.stdout), marks=marks))
    return Exit.OK if result.clean else Exit.FINDINGS


def _verified(
    args: argparse.Namespace,
    kernels: Sequence[str],
    progress: _Progress,
    *,
    bootable_only: bool = True,
) -> VerifyReport:
    """Run `verify`; each kernel that could not be verified is reported on stderr."""
    from weak_bpf.ops import verify

    done = verify.verify(
        args.root,
        kernels,
        programs=args.program,
        cache=not args.dry_run,
        progress=progress,
        jobs=getattr(args, "jobs", None),
        bootable_only=bootable_only,
    )
    progress.clear()
    for run in done.kernels:
        if run.problem:
            log.warning("%s: not verified: %s", run.kver, run.problem)
    return done


def _cmd_verify(args: argparse.Namespace) -> int:
    from weak_bpf import report

    progress = _Progress(sys.stderr)
    try:
        done = _verified(args, args.kernels, progress)
    finally:
        progress.clear()
    if args.json:
        _print_json(report.verify_json(done))
    else:
        marks = _kernel_marks(args.root, done.audit.kernels)
        sys.stdout.write(report.render_verify(done, color=_wants_color(sys.stdout), marks=marks))
    return Exit.OK if done.audit.clean else Exit.FINDINGS


def _cmd_explain(args: argparse.Namespace) -> int:
    from weak_bpf import ops, report

    sys.stdout.write(report.render_explain(ops.explain(args.root, args.object, args.kernels)))
    return Exit.OK


def _cmd_greylist(args: argparse.Namespace) -> int:
    from weak_bpf import ops

    if args.symvers is not None and args.btf is None:
        raise WeakBpfError(
            "--symvers needs --btf", hint="drop --symvers: with --kernel, K's own symvers is used"
        )
    result = ops.greylist(
        args.root, args.object, kver=args.kernel, btf_file=args.btf, symvers_file=args.symvers
    )
    where = f"kernel {args.kernel}" if args.kernel else "the given files"
    for name in result.missing:
        if name.endswith(" (weak)"):  # the program tests it with bpf_ksym_exists()
            log.warning(
                "%s is not provided by %s: it is left out of the greylist (a weak kfunc: the "
                "program runs without it)",
                name.removesuffix(" (weak)"),
                where,
            )
        else:
            log.warning(
                "%s is not provided by %s: it is left out of the greylist, and the program "
                "cannot load on that kernel",
                name,
                where,
            )
    if any(not name.endswith(" (weak)") for name in result.missing):
        log.warning(
            "hint: make the greylist against the kernel the program was built for "
            "(--kernel K, or the --btf and --symvers of that kernel)"
        )
    sys.stdout.write(result.text)
    return Exit.OK


def _cmd_symvers(args: argparse.Namespace) -> int:
    from weak_bpf import ops

    sys.stdout.write(ops.bpf_symvers(args.root, args.kernel))
    return Exit.OK


_COMMANDS: dict[Verb, Callable[[argparse.Namespace], int]] = {
    Verb.ADD_KERNEL: _cmd_add_kernel,
    Verb.REMOVE_KERNEL: _cmd_remove_kernel,
    Verb.ADD_PROGS: _cmd_progs,
    Verb.REMOVE_PROGS: _cmd_progs,
    Verb.GREYLIST: _cmd_greylist,
    Verb.SYMVERS: _cmd_symvers,
    Verb.AUDIT: _cmd_audit,
    Verb.EXPLAIN: _cmd_explain,
    Verb.KERNELS: _cmd_kernels,
    Verb.INSPECT: _cmd_inspect,
    Verb.VERIFY: _cmd_verify,
}


def _error(e: WeakBpfError) -> None:
    print(f"weak-bpf-progs: {e}", file=sys.stderr)
    if e.hint:
        print(f"weak-bpf-progs: hint: {e.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    # A run makes millions of small objects that form no cycles (results, checks, BTF types):
    # collecting every 700 allocations took a third of a warm audit of 10,000 objects.
    gc.set_threshold(200_000, 20, 20)
    # file names need not be UTF-8: show undecodable bytes escaped rather than fail
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[attr-defined]
    words = list(sys.argv[1:] if argv is None else argv)
    if any("\0" in word for word in words):  # only from a caller in Python: exec cannot pass one
        print("weak-bpf-progs: an argument holds a NUL byte", file=sys.stderr)
        return Exit.USAGE
    args = build_parser().parse_args(normalise(words))
    logging.basicConfig(
        format="weak-bpf-progs: %(message)s",
        level=logging.DEBUG if args.verbose else logging.WARNING,
    )
    try:
        return _COMMANDS[Verb(args.verb)](args)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except WeakBpfError as e:
        if args.debug:
            raise
        _error(e)
        return Exit.APPLY if isinstance(e, ApplyError) else Exit.USAGE
    except OSError as e:  # the disk, permissions: the plan could not be carried out
        if args.debug:
            raise
        print(f"weak-bpf-progs: {e}", file=sys.stderr)
        return Exit.APPLY
    except Exception as e:  # a bug: say so plainly, with the way to a traceback
        if args.debug:
            raise
        print(
            f"weak-bpf-progs: internal error: {type(e).__name__}: {e}\n"
            "weak-bpf-progs: hint: run again with --debug for a traceback, and report it",
            file=sys.stderr,
        )
        return Exit.USAGE
