"""The license check: GPL-only kernel functions, helpers and exports, and struct_ops programs,
need a GPL-compatible license."""

from __future__ import annotations

from collections.abc import Iterable

from weak_bpf.engine.bpf_helpers import helper_name, is_gpl_only, license_is_gpl_compatible
from weak_bpf.engine.checks.base import CheckerBase
from weak_bpf.model import Area, Check, Outcome, ReasonCode
from weak_bpf.parsers.objvalues import ExternKind
from weak_bpf.parsers.sections import TargetKind


class LicenseChecks(CheckerBase):
    def _license(self) -> Iterable[Check]:
        license = self.obj.license
        if license is not None and license_is_gpl_compatible(license):
            yield self._check(
                Area.LICENSE, Outcome.PASS, "license", f'"{license}" is GPL-compatible'
            )
            return
        shown = f'"{license}"' if license is not None else "no license section"
        gpl_uses = [f"kfunc {e.name}" for e in self.obj.ksyms if e.kind is ExternKind.FUNC]
        helpers = sorted({h for f in self._functions() for h in f.helper_ids if is_gpl_only(h)})
        gpl_uses += [f"GPL-only helper {helper_name(h)}" for h in helpers]
        gpl_uses += [
            f"struct_ops program {p.name}"
            for p in self.obj.programs
            if p.info.target_kind is TargetKind.STRUCT_OPS
        ]
        if self.greylist is not None:
            gpl_uses += [
                f"{e.symbol} ({e.export_type.value})"
                for e in self.greylist.entries
                if e.export_type.gpl_only
            ]
        if not gpl_uses:
            yield self._check(
                Area.LICENSE,
                Outcome.PASS,
                "license",
                f"{shown} is not GPL-compatible, but the program uses nothing GPL-only",
            )
            return
        yield self._check(
            Area.LICENSE,
            Outcome.FAIL,
            "license",
            f"{shown} is not GPL-compatible, and the program uses {', '.join(gpl_uses)}, which "
            "only GPL-compatible programs may use: the kernel refuses to load it",
            code=ReasonCode.LICENSE,
        )
