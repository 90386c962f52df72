"""What weak-bpf-progsd knows of its root between calls: the stamp every run rewrites and the
reports, to tell what another run changed; the Audit answers cached until then; the listings
behind the Kernels and Programs properties. No D-Bus here: manager.py announces what `news`
returns (PropertiesChanged, Resolved).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from weak_bpf.apply import writer as actions
from weak_bpf.kernel import find as kernel
from weak_bpf.program import installed as programs

AUDIT_CACHE_BYTES = 16 << 20  # Audit answers kept, oldest dropped first (idle RSS < 60 MB)
LISTING_TTL = 1.0  # seconds a property's listing is reused (a walk of 1000 programs: ~70 ms)
PROPERTIES = ("Kernels", "Programs")

StatKey = Optional[tuple[int, int, int]]


def _stat_key(path: Path) -> StatKey:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


@dataclasses.dataclass(frozen=True)
class News:
    """What runs changed: properties with their new values, then (kernel, report) to announce."""

    properties: dict[str, list[str]]
    resolved: list[tuple[str, dict[str, Any]]]


class RootState:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0  # +1 whenever the stamp moves: older answers are not cached
        self.changing = False  # our own change runs: its end (news(own)) looks at the stamp
        self._audits: collections.OrderedDict[tuple[str, ...], str] = collections.OrderedDict()
        self._stamp = _stat_key(root / actions.STAMP)
        self._reports = self._report_keys()
        self._listings: dict[str, tuple[float, list[str]]] = {}  # name -> (when, value)
        self._announced = {name: self.listing(name, fresh=True) for name in PROPERTIES}

    # -- the Audit cache --

    def audit(self, kvers: tuple[str, ...]) -> str | None:
        answer = self._audits.get(kvers)
        if answer is not None:
            self._audits.move_to_end(kvers)
        return answer

    def keep_audit(self, kvers: tuple[str, ...], answer: str, generation: int) -> None:
        """Cache an answer computed from the state of `generation`, if that is still now."""
        if generation != self.generation or len(answer) > AUDIT_CACHE_BYTES:
            return
        self._audits[kvers] = answer
        self._audits.move_to_end(kvers)
        while sum(len(a) for a in self._audits.values()) > AUDIT_CACHE_BYTES:
            self._audits.popitem(last=False)

    # -- the properties --

    def listing(self, name: str, *, fresh: bool = False) -> list[str]:
        """A property's value: listed again if `fresh` or older than LISTING_TTL, so that a
        burst of reads walks the directories once (a run's end lists them afresh)."""
        now = time.monotonic()
        listed = self._listings.get(name)
        if fresh or listed is None or now - listed[0] > LISTING_TTL:
            if name == "Kernels":
                value = list(kernel.installed_kernels(self.root))
            else:
                value = [p.path for p in programs.installed_programs(self.root)]
            listed = self._listings[name] = (now, value)
        return listed[1]

    # -- runs: ours and others' --

    def news(self, own: Mapping[str, dict[str, Any]] | None = None) -> News | None:
        """If a run changed the stamp (or `own`, the reports of our own run, just ended): drop
        the cache and say what changed (a kernel whose report changed is announced with it,
        ours with `own`). None if nothing did, or while our own change runs."""
        if self.changing:
            return None
        stamp = _stat_key(self.root / actions.STAMP)
        if stamp == self._stamp and not own:
            return None
        self._stamp = stamp
        self.generation += 1
        self._audits.clear()
        values = {name: self.listing(name, fresh=True) for name in PROPERTIES}
        changed = {k: v for k, v in values.items() if self._announced.get(k) != v}
        self._announced = values
        resolved = []
        reports = self._report_keys()
        for kver, key in sorted(reports.items()):
            if (own and kver in own) or self._reports.get(kver) == key:
                continue
            try:
                doc = json.loads((self.root / actions.REPORTS / f"{kver}.json").read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict):
                resolved.append((kver, doc))
        resolved.extend((own or {}).items())
        self._reports = reports
        return News(changed, resolved)

    def _report_keys(self) -> dict[str, StatKey]:
        directory = self.root / actions.REPORTS
        try:
            names = [n for n in os.listdir(directory) if n.endswith(".json")]
        except OSError:
            return {}
        return {n[: -len(".json")]: _stat_key(directory / n) for n in names}
