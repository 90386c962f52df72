"""Greylist checks: each symbol the vendor declared, against K's symvers and BTF, with its CRC
and the kABI stablelist."""

from __future__ import annotations

from collections.abc import Iterable

from weak_bpf.engine.checks.base import CheckerBase
from weak_bpf.engine.signature import format_crc, signature_crc
from weak_bpf.model import Area, Check, Outcome, ReasonCode
from weak_bpf.parsers.symvers import SymvEntry


class GreylistChecks(CheckerBase):
    def _greylist(self) -> Iterable[Check]:
        if self.greylist is None:
            return
        for entry in self.greylist.entries:
            yield from self._greylist_entry(entry)

    def _greylist_entry(self, entry: SymvEntry) -> Iterable[Check]:
        subject = f"greylist symbol {entry.symbol}"
        if entry.export_type.flagged:
            yield self._check(
                Area.GREYLIST,
                Outcome.NOTE,
                subject,
                f"export type {entry.export_type.value} is obsolete: rebuild the greylist",
                symbol=entry.symbol,
            )
        if self.k.symvers is None and self.k.artifacts is not None and self.k.artifacts.symvers:
            yield self._missing_data(
                Area.GREYLIST,
                subject,
                f"{self.k.kver}'s symvers could not be read ({self._problem('symvers')}): "
                "reinstall the package that owns it",
                entry.symbol,
            )
            return
        provided = self.k.symvers.get(entry.symbol) if self.k.symvers is not None else None
        if provided is not None:
            crc, where = provided.crc, f"{self.k.kver}'s symvers ({provided.module})"
        else:
            found = self._find_func(
                entry.symbol, None if entry.module == "vmlinux" else entry.module
            )
            if found is None:
                if self.k.vmlinux is None or self.k.module_problems:
                    what = "has no BTF" if self.k.vmlinux is None else "has unreadable modules"
                    yield self._missing_data(
                        Area.GREYLIST,
                        subject,
                        f"not in {self.k.kver}'s symvers, and {self.k.kver} {what}: "
                        "whether it provides the symbol is unknown",
                        entry.symbol,
                    )
                else:
                    yield self._check(
                        Area.GREYLIST,
                        Outcome.FAIL,
                        subject,
                        f"{entry.symbol} is provided neither by {self.k.kver}'s symvers "
                        "nor by its BTF",
                        code=ReasonCode.SYMBOL_MISSING,
                        symbol=entry.symbol,
                    )
                return
            btf, func_id, module = found
            crc = signature_crc(btf, func_id)
            where = f"the BTF signature in {module or 'vmlinux'}"
        if crc != entry.crc:
            yield self._check(
                Area.GREYLIST,
                Outcome.FAIL,
                subject,
                f"CRC {format_crc(entry.crc)} in the greylist, {format_crc(crc)} in {where}: "
                "the interface the program was built against changed",
                code=ReasonCode.CRC_MISMATCH,
                symbol=entry.symbol,
            )
            return
        if self.k.kabi is not None and entry.symbol in self.k.kabi.symbols:
            yield self._check(
                Area.GREYLIST,
                Outcome.PASS,
                subject,
                f"CRC matches {where} (the interface is unchanged), and it is on "
                f"{self.k.kver}'s kABI stablelist",
                symbol=entry.symbol,
            )
        else:
            stablelist = (
                f"it is not on {self.k.kver}'s kABI stablelist"
                if self.k.kabi is not None
                else f"{self.k.kver} has no kABI stablelist to keep it stable"
            )
            yield self._check(
                Area.GREYLIST,
                Outcome.UNSTABLE,
                subject,
                f"CRC matches {where} (the interface is unchanged), but {stablelist}: "
                "a kernel update may change it",
                symbol=entry.symbol,
            )
