"""Renderers: values in, text out. They never print; the CLI writes what they return."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import zip_longest
from typing import TYPE_CHECKING

from weak_bpf.kernel.find import BtfSourceKind
from weak_bpf.model import Area, Outcome, ReasonCode, Result, Verdict
from weak_bpf.ops import AuditReport, KernelSummary, ProgramAudit
from weak_bpf.parsers.btfext import CoreReloKind
from weak_bpf.parsers.objvalues import BpfObject, Extern, ExternKind, Function

if TYPE_CHECKING:  # a warm audit imports no VM code
    from weak_bpf.ops.verify import KernelVerify, VerifyReport

_BTF_SOURCE = {
    BtfSourceKind.SYSFS: "the running kernel",
    BtfSourceKind.VMLINUX: "vmlinux",
    BtfSourceKind.DEBUGINFO: "debuginfo vmlinux",
    BtfSourceKind.VMLINUZ: "inside the kernel image",
}


_KERNELS_LOOKED = " (looked in usr/lib/modules/ and boot/; --root names another system)"


def _row(label: str, value: str) -> str:
    return f"  {label:<11} {value}\n"


def render_kernels(summaries: tuple[KernelSummary, ...], *, verbose: bool = False) -> str:
    if not summaries:
        return f"no kernels installed under this root{_KERNELS_LOOKED}\n"
    out = []
    for s in summaries:
        a = s.artifacts
        if a.installed:
            out.append(f"{a.kver}\n")
        else:
            out.append(f"{a.kver} (running, not installed here: judged, never linked)\n")
        btf = "missing (no vmlinux or vmlinuz): kfunc, ksym, CO-RE and attach checks give 'unknown'"
        if a.btf is not None and a.btf_source_kind is not None:
            btf = f"{a.relative(a.btf)} ({_BTF_SOURCE[a.btf_source_kind]})"
            if s.btf_types is not None:
                tags = f"{s.kfunc_tags} tagged kfuncs" if s.kfunc_tags else "no kfunc tags"
                btf += f": {s.btf_types} types, {tags}"
        out.append(_row("BTF", btf))
        symvers = "missing: greylist CRCs cannot be checked"
        if a.symvers is not None:
            symvers = str(a.relative(a.symvers))
            if s.symvers_entries is not None:
                symvers += f": {s.symvers_entries} exports"
        out.append(_row("symvers", symvers))
        out.append(_row("image", a.relative(a.image) or "missing"))
        # what a missing or stub System.map costs, unless another source lists the symbols
        cost = (
            ""
            if s.symbols_source
            else " (typeless ksyms and kprobe targets outside BTF give 'unknown')"
        )
        system_map = f"missing{cost}"
        if a.system_map is not None:
            system_map = str(a.relative(a.system_map))
            if s.system_map_symbols == 0:
                system_map += f": a placeholder without symbols{cost}"
            elif s.system_map_symbols is not None:
                system_map += f": {s.system_map_symbols} symbols"
        out.append(_row("System.map", system_map))
        if s.symbols_source is not None:
            where = a.relative(s.symbols_source)
            what = "kallsyms of the running kernel" if where == "proc/kallsyms" else where
            if s.symbols_source.name.startswith("vmlinux"):
                what = f"{where} (its symbol table)"
            out.append(_row("symbols", f"{what}: {s.symbols_count} symbols"))
        out.append(_row("config", a.relative(a.config) or "missing"))
        out.append(_row("modules", f"{len(a.modules)} files"))
        out.append(_row("kABI list", a.relative(a.kabi_list) or "none"))
        if verbose and a.arch:
            out.append(_row("arch", a.arch))
        out.extend(_row("problem", p) for p in s.problems)
    return "".join(out)


def _program_line(prog: Function) -> str:
    info = prog.info
    kind = info.prog_type.name.lower() if info.known else "unknown type"
    line = f"{prog.name} [{info.section}] {kind}"
    if info.needs_kernel_target:
        target = f"{info.module}:{info.lookup_name}" if info.module else info.lookup_name
        line += f", attaches to {target}"
    return line


def _extern_line(ext: Extern) -> str:
    notes = [ext.kind.value, "typed" if ext.typed else "typeless"]
    if ext.weak:
        notes.append("weak")
    return f"{ext.name} ({', '.join(notes)})"


def _list(label: str, items: list[str], *, empty: str = "none") -> str:
    if not items:
        return _row(label, empty)
    return _row(label, items[0]) + "".join(_row("", item) for item in items[1:])


def _relo_kind(kind: CoreReloKind | int) -> str:
    return kind.name.lower() if isinstance(kind, CoreReloKind) else f"kind {kind}"


def render_object(
    obj: BpfObject, *, verbose: bool = False, greylist_file: str | None = None
) -> str:
    out = [f"{obj.source}\n", _row("license", obj.license or "none (no license section)")]
    out.append(_list("programs", [_program_line(p) for p in obj.programs]))
    out.append(_list("kfuncs", [_extern_line(e) for e in obj.ksyms if e.kind is ExternKind.FUNC]))
    if verbose:
        calls = Counter(
            call.name or f"btf id {call.btf_id}" for p in obj.programs for call in p.kfunc_calls
        )
        out.append(_list("kfunc calls", [f"{n} x{c}" for n, c in sorted(calls.items())]))
    out.append(_list("ksyms", [_extern_line(e) for e in obj.ksyms if e.kind is ExternKind.VAR]))
    out.append(_list("kconfig", [_extern_line(e) for e in obj.kconfig]))
    out.append(_list("maps", [m.name for m in obj.maps]))
    helpers = sorted({h for p in obj.programs + obj.subprograms for h in p.helper_ids})
    out.append(_row("helpers", ", ".join(map(str, helpers)) or "none"))
    relos = [
        f"{_relo_kind(r.kind)} {r.type_name or '<anonymous>'} ({r.access})" for r in obj.core_relos
    ]
    if verbose:
        out.append(_list("CO-RE", relos))
    else:
        out.append(_row("CO-RE", f"{len(relos)} relocations"))
    if greylist_file is not None:
        out.append(_row("greylist", greylist_file))
    else:
        out.append(_row("greylist", "embedded .greylist section" if obj.greylist else "none"))
    out.extend(_row("problem", p) for p in obj.extern_problems)
    return "".join(out)


# --- audit and explain ---------------------------------------------------------------------------

AUDIT_JSON_VERSION = 1

_UPDATE = "update the package to a build for {k} (ask its vendor if there is none)"
_ADVICE = {
    ReasonCode.MALFORMED: "the file is damaged or not a BPF object: reinstall or update the "
    "package that ships it (or, for your own build, rebuild it)",
    ReasonCode.SYMBOL_MISSING: _UPDATE,
    ReasonCode.CRC_MISMATCH: _UPDATE + ": the kernel interface it uses changed",
    ReasonCode.LICENSE: "the vendor must ship the program under a GPL-compatible license, or "
    "stop using GPL-only kernel functions",
    ReasonCode.KFUNC_MISSING: _UPDATE + "; for your own build, declare optional kfuncs __weak "
    "and test them with bpf_ksym_exists()",
    ReasonCode.KFUNC_PROTO: _UPDATE + ": a kfunc it calls changed; for your own build, rebuild "
    "it against {k}",
    ReasonCode.KSYM_MISSING: _UPDATE + "; for your own build, declare optional ksyms __weak",
    ReasonCode.CORE_RELO: _UPDATE + "; for your own build, test fields, types and enum values "
    "that may be missing (bpf_core_field_exists() and the like) before using them",
    ReasonCode.ATTACH_TARGET: _UPDATE + ": the kernel function, tracepoint or struct_ops it "
    "attaches to is gone in {k}, or {k} refuses the program there",
    ReasonCode.ATTACH_PROTO: _UPDATE + ": the arguments of the function or tracepoint it "
    "attaches to changed in {k}; for your own build, read only the arguments {k} has (or test "
    "for them with CO-RE before reading)",
    ReasonCode.KERNEL_DATA_MISSING: "the undecided checks say what {k} lacks: install it (or "
    "reinstall the package of a file that could not be read), then run 'weak-bpf-progs audit' "
    "again",
}

# a check left undecided for a reason other than missing kernel data (which code
# paths can run, what the loader does): only the kernel can say
_UNDECIDED_ADVICE = (
    "'weak-bpf-progs verify {k}' lets {k}'s own verifier decide, in a VM; or ask the "
    "package's vendor"
)


# a struct_ops map left undecided: what the package's loader does decides
_LOADER_ADVICE = (
    "whether it loads on {k} depends on the loader shipped with the package (see the '??' "
    "line): ask its vendor"
)


def _advice(result: Result, kver: str) -> list[str]:
    """What to do, once per reason: a certain failure's remedy, or for a check left undecided,
    what would decide it."""
    todo: dict[str, None] = {}
    for c in result.checks:
        if c.code is None or c.outcome not in (
            Outcome.FAIL,
            Outcome.UNDECIDED,
            Outcome.CANNOT_ATTACH,
        ):
            continue
        advice = _ADVICE[c.code]
        if c.outcome is Outcome.UNDECIDED and c.code is not ReasonCode.KERNEL_DATA_MISSING:
            # a map's check is about the loader; a program's is settled by loading it on K
            advice = _LOADER_ADVICE if c.program is None else _UNDECIDED_ADVICE
        todo[advice.format(k=kver)] = None
    if result.modules and result.verdict.usable:
        todo[f"load module(s) {', '.join(result.modules)} before loading the program"] = None
    return list(todo)


_MARK = {
    Outcome.PASS: "ok",
    Outcome.FAIL: "FAIL",
    Outcome.UNDECIDED: "??",
    Outcome.UNSTABLE: "unstable",
    Outcome.CANNOT_ATTACH: "no attach",
    Outcome.NOTE: "note",
}


def audit_json(report: AuditReport) -> dict[str, object]:
    """The `audit --json` document, schema version 1 (SPEC §5)."""
    programs = []
    for p in report.programs:
        results = {
            kver: {
                "verdict": result.verdict.value,
                "verified": result.verified,
                "linked": linked,
                "reasons": [reason.to_json() for reason in result.reasons],
            }
            for kver, (result, linked) in p.results.items()
        }
        programs.append(
            {
                "path": p.program.path,
                "package": None,
                "build_kernel": p.build_kernel,
                "results": results,
            }
        )
    return {
        "version": AUDIT_JSON_VERSION,
        "root": str(report.root.absolute()),
        "kernels": list(report.kernels),
        "programs": programs,
    }


def _cell(result: Result) -> str:
    # the reason that decides the verdict: a certain failure before an undecided check
    deciding = [c for c in result.checks if c.outcome is Outcome.FAIL and c.code is not None]
    deciding += [c for c in result.checks if c.outcome is Outcome.UNDECIDED and c.code]
    deciding += [c for c in result.checks if c.outcome is Outcome.CANNOT_ATTACH and c.code]
    if deciding and deciding[0].code is not None:
        return f"{result.verdict.value} ({deciding[0].code.value})"
    notes = ["verified"] if result.verified else []  # K's own verifier loaded it (`verify`)
    if result.modules and result.verdict.usable:
        notes.append(f"needs {', '.join(result.modules)}")
    return f"{result.verdict.value} ({', '.join(notes)})" if notes else result.verdict.value


# ANSI SGR colors for the verdicts in a terminal (render_audit(color=True))
_VERDICT_COLOR = {
    Verdict.COMPATIBLE: "32",  # green
    Verdict.COMPATIBLE_UNSTABLE: "33",  # yellow
    Verdict.COMPATIBLE_PARTIAL: "33",  # yellow
    Verdict.INCOMPATIBLE: "31",  # red
    Verdict.UNKNOWN: "35",  # magenta
    Verdict.NATIVE: "34",  # blue
}


def _paint(text: str, sgr: str | None) -> str:
    return f"\x1b[{sgr}m{text}\x1b[0m" if sgr else text


def _kernel_header(kver: str, marks: Sequence[str]) -> str:
    return f"{kver} ({', '.join(marks)})" if marks else kver


def render_audit(
    report: AuditReport,
    *,
    color: bool = False,
    marks: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The audit table: one row per program, one column per kernel, then one summary line per
    kernel. `marks` adds notes to kernel headers (e.g. {"6.1.0-47": ["running", "default"]});
    `color` paints each verdict with ANSI codes (widths are those of the plain text)."""
    if not report.kernels:
        return f"no kernels installed under this root{_KERNELS_LOOKED}\n"
    if not report.programs:
        return (
            "no BPF programs installed under this root (looked in usr/lib/bpf/ and "
            "usr/lib/modules/K/bpf/extra/)\n"
        )
    marks = marks or {}
    header = ["program", *(_kernel_header(k, marks.get(k, ())) for k in report.kernels)]
    rows = [
        [p.program.path, *(_cell(p.results[k][0]) for k in report.kernels)] for p in report.programs
    ]
    sgrs: list[list[str | None]] = [
        [
            None,
            *(_VERDICT_COLOR[p.results[k][0].verdict] if color else None for k in report.kernels),
        ]
        for p in report.programs
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str], colors: Sequence[str | None] = ()) -> str:
        painted = [
            _paint(c, s) + " " * (w - len(c)) for c, w, s in zip_longest(cells, widths, colors)
        ]
        return "  ".join(painted).rstrip() + "\n"

    out = [line(header), line(["-" * w for w in widths])]
    out.extend(line(r, c) for r, c in zip(rows, sgrs))
    out.append("\n")
    for kver in report.kernels:
        usable = sum(1 for p in report.programs if p.results[kver][0].verdict.usable)
        out.append(f"{kver}: {usable} of {len(report.programs)} programs usable\n")
    return "".join(out)


def render_explain(audit: ProgramAudit) -> str:
    out = [f"{audit.program.path}\n"]
    if audit.build_kernel:
        out.append(f"  built for {audit.build_kernel}\n")
    if audit.greylist is not None:
        out.append(f"  greylist: {audit.greylist.source} ({len(audit.greylist)} symbols)\n")
    for kver, (result, linked) in audit.results.items():
        state = ", linked" if linked else ""
        if linked and not result.verdict.usable:
            state = (
                f" (still linked from an earlier run: the next 'weak-bpf-progs add-kernel {kver}'"
                " removes the link)"
            )
        verified = " (verified)" if result.verified else ""
        out.append(f"\non {kver}: {result.verdict.value}{verified}{state}\n")
        for area in Area:
            checks = [c for c in result.checks if c.area is area]
            if not checks:
                continue
            out.append(f"  {area.value}\n")
            for c in checks:
                where = f" [{c.program}]" if c.program else ""
                code = f" ({c.code.value})" if c.code else ""
                out.append(f"    {_MARK[c.outcome]:<8} {c.subject}{where}: {c.detail}{code}\n")
        todo = _advice(result, kver)
        if todo:
            out.append("  what to do\n")
            out.extend(f"    - {t}\n" for t in todo)
    if all(result.verified for result, _ in audit.results.values()) and audit.results:
        out.append(
            "\n  Verified: each kernel's own verifier loaded every program, alone, in a VM, and "
            "libbpf attached\n  each one it can ('weak-bpf-progs verify'); not checked: what this "
            "host adds at attach time\n  (lockdown, an LSM policy).\n"
        )
        return "".join(out)
    out.append(
        "\n  Not checked offline (the kernel decides at load time): which program types may call "
        "a kfunc,\n  the verifier's verdict on the program's logic, helpers per program type, "
        "features of the\n  loader's libbpf, and attach-time refusals (kprobe blacklist, "
        "lockdown, LSM policy).\n  'weak-bpf-progs verify' boots each kernel in a VM and lets "
        "its verifier decide.\n"
    )
    return "".join(out)


EXPLAIN_JSON_VERSION = 1


def explain_json(audit: ProgramAudit) -> dict[str, object]:
    """`explain` as one JSON document (the daemon's Explain answer): every check of one program
    on each kernel, with the advice render_explain gives in words."""
    kernels = {}
    for kver, (result, linked) in audit.results.items():
        advice = _advice(result, kver)
        kernels[kver] = {
            "verdict": result.verdict.value,
            "verified": result.verified,
            "linked": linked,
            "modules": list(result.modules),
            "reasons": [reason.to_json() for reason in result.reasons],
            "checks": [
                {
                    "area": c.area.value,
                    "outcome": c.outcome.value,
                    "subject": c.subject,
                    "detail": c.detail,
                    "code": c.code.value if c.code else None,
                    "symbol": c.symbol,
                    "program": c.program,
                }
                for c in result.checks
            ],
            "advice": advice,
        }
    greylist = None
    if audit.greylist is not None:
        greylist = {"source": audit.greylist.source, "symbols": len(audit.greylist)}
    return {
        "version": EXPLAIN_JSON_VERSION,
        "path": audit.program.path,
        "link_name": audit.program.link_name,
        "build_kernel": audit.build_kernel,
        "greylist": greylist,
        "kernels": kernels,
    }


# --- verify ------------------------------------------------------------------------------------

VERIFY_JSON_VERSION = 1


def _boot_line(run: KernelVerify) -> str:
    objects = f"{run.objects} object{'' if run.objects == 1 else 's'}"
    if run.problem:
        return f"{run.kver}: not verified: {run.problem}\n"
    if run.boot is None:
        return f"{run.kver}: {objects}, every outcome from the cache (no boot)\n"
    accel = "KVM" if run.boot.kvm else "TCG"
    boots = f" in {run.boots} boots" if run.boots > 1 else ""
    return f"{run.kver}: {objects}, booted{boots} in {run.boot.seconds:.1f} s ({accel})\n"


def render_verify(
    done: VerifyReport, *, color: bool = False, marks: Mapping[str, Sequence[str]] | None = None
) -> str:
    """How each kernel was verified, then the audit table with the verified verdicts."""
    head = "".join(_boot_line(run) for run in done.kernels)
    return head + "\n" + render_audit(done.audit, color=color, marks=marks)


def verify_json(done: VerifyReport) -> dict[str, object]:
    """`verify --json`: the boots, and the audit document (`audit --json`'s schema)."""
    kernels = {
        run.kver: {
            "objects": run.objects,
            "booted": run.boot is not None,
            "boots": run.boots,
            "seconds": round(run.boot.seconds, 1) if run.boot else 0.0,
            "kvm": bool(run.boot and run.boot.kvm),
            "problem": run.problem,
        }
        for run in done.kernels
    }
    return {"version": VERIFY_JSON_VERSION, "kernels": kernels, "audit": audit_json(done.audit)}
