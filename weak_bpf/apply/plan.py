"""The resolver: which object each kernel's weak-updates link should point to. Pure: verdicts and
the current links in, a plan out.

For each link name (`<pkg>/<name>.bpf.o`), among the builds of that program:
- a build native to K stays in K's bpf/extra/ and wins: no link;
- else the newest linkable build wins (build kernels compared with rpm's rules; a build that says
  nothing of its kernel counts as the oldest), so an incompatible newer build never blocks an
  older compatible one;
- else no link.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Collection, Iterable, Mapping

from weak_bpf.model import Result, Verdict
from weak_bpf.versions import kernel_sort_key

WEAK_UPDATES = "usr/lib/modules/{kver}/bpf/weak-updates"


@dataclasses.dataclass(frozen=True)
class Candidate:
    path: str  # the object, relative to the root
    link_name: str
    build_kernel: str | None
    native_kernel: str | None
    result: Result


@dataclasses.dataclass(frozen=True)
class Plan:
    """The link set a kernel should have, and how it differs from what it has."""

    kernel: str
    links: Mapping[str, str]  # link name -> link target (relative to the link's directory)
    chosen: Mapping[str, str]  # link name -> object path
    add: tuple[str, ...]  # link names that appear or change target
    remove: tuple[str, ...]  # link names that go
    native: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> K's own build

    @property
    def changes(self) -> bool:
        return bool(self.add or self.remove)

    def describe(self, blocked: Collection[str] = ()) -> list[str]:
        """The plan, one line per change, as --dry-run prints it; `blocked`: link names that a
        file weak-bpf-progs did not make holds."""
        base = WEAK_UPDATES.format(kver=self.kernel)
        lines = [
            f"skip   {base}/{name} (a file weak-bpf-progs did not make is there, and is kept)"
            if name in blocked
            else f"link   {base}/{name} -> {self.links[name]}"
            for name in self.add
        ]
        lines += [f"unlink {base}/{name}" for name in self.remove]
        return lines or [f"no change to {base}"]


def link_target(kver: str, link_name: str, object_path: str) -> str:
    """The relative target of K's link `link_name` to `object_path` (both relative to the root),
    so that the link resolves inside the root and from outside it alike."""
    link_dir = posixpath.dirname(f"{WEAK_UPDATES.format(kver=kver)}/{link_name}")
    return posixpath.relpath(object_path, link_dir)


def _newest_first(candidate: Candidate) -> tuple[bool, object, str]:
    build = candidate.build_kernel
    return (build is not None, kernel_sort_key(build) if build else (), candidate.path)


def plan(
    kver: str,
    candidates: Iterable[Candidate],
    current: Mapping[str, str],
    *,
    link_unstable: bool,
    link_partial: bool = True,
) -> Plan:
    """The plan for kernel `kver`. `current`: its links now (link name -> target)."""
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.link_name, []).append(c)
    links: dict[str, str] = {}
    chosen: dict[str, str] = {}
    native: dict[str, str] = {}
    for link_name, builds in sorted(groups.items()):
        own = [c for c in builds if c.native_kernel == kver or c.result.verdict is Verdict.NATIVE]
        if own:
            native[link_name] = own[0].path
            continue
        linkable = [
            c
            for c in builds
            if c.result.linkable(link_unstable=link_unstable, link_partial=link_partial)
        ]
        if linkable:
            best = max(linkable, key=_newest_first)
            links[link_name] = link_target(kver, link_name, best.path)
            chosen[link_name] = best.path
    add = tuple(n for n in sorted(links) if current.get(n) != links[n])
    remove = tuple(n for n in sorted(current) if n not in links)
    return Plan(kver, links, chosen, add, remove, native)
