"""The report of one resolution (add/remove a kernel or programs): what each program's state on
one kernel is now, and what it was. Pure data; the JSON file, the journal and the text reporters
all render this one value.

`Resolution.to_json()` is the document written to `var/lib/weak-bpf-progs/reports/K.json`.
Schema, version 1 (keys are always present; `null` where the text says so):

    {"version": 1,
     "kernel": str, "action": "add-kernel" | "remove-kernel" | "add-progs" | "remove-progs",
     "dry_run": bool,
     "summary": str,                       # one line, the same as the journal's summary entry
     "counts": {"programs": int, "linked": int, "not_linkable": int, "changed": int,
                "errors": int},
     "programs": [{"path": str,            # the object, relative to the root ("usr/lib/...")
                   "package": str|null,    # owning rpm, name-version-release
                   "verdict": str|null,    # null: the object or the kernel is gone
                   "previous_verdict": str|null,   # null: no earlier verdict known
                   "state": "linked" | "not-linkable" | "not-linked",
                   "linked": bool, "was_linked": bool, "changed": bool,
                   "blocked": bool,        # a file weak-bpf-progs did not create holds the link
                   "blocked_by": str|null, # that entry, below weak-updates/ (the link's own
                                           # name, or a directory of its path taken by a file)
                   "link": str|null,       # link name below weak-updates/, "<pkg>/<name>.bpf.o"
                   "superseded_by": str|null,  # the build that got the link instead
                   "reasons": [{"code": str, "symbol": str|null, "detail": str}]}],
     "errors": [str]}                      # why the plan was not fully applied, one sentence
                                           # each; then one per blocked link, in program order

`Resolution.from_json` reads it back, so the next run can tell what changed.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from weak_bpf.model import Reason, ReasonCode, Verdict

SCHEMA_VERSION = 1


class Action(str, enum.Enum):
    ADD_KERNEL = "add-kernel"
    REMOVE_KERNEL = "remove-kernel"
    ADD_PROGS = "add-progs"
    REMOVE_PROGS = "remove-progs"


class State(str, enum.Enum):
    """Where a program stands on the kernel after the run."""

    LINKED = "linked"  # K's weak-updates/ links to it
    NOT_LINKABLE = "not-linkable"  # it has a verdict that keeps it off K: worth a warning
    NOT_LINKED = "not-linked"  # no link and nothing wrong: native, a newer build won, or gone


@dataclasses.dataclass(frozen=True)
class ProgramChange:
    """One program object on the resolved kernel, before and after the run."""

    path: str
    package: str | None
    verdict: Verdict | None  # None: the object (remove-progs) or the kernel (remove-kernel) is gone
    reasons: tuple[Reason, ...] = ()
    linked: bool = False  # after the run (with dry_run: after the plan would be applied)
    was_linked: bool = False
    previous_verdict: Verdict | None = None  # None: not known from an earlier report
    link: str | None = None  # the link name below weak-updates/
    superseded_by: str | None = None  # another build of the same program holds the link
    # a file weak-bpf-progs did not create holds the link's place; in the JSON, the report's
    # "errors" say it (Resolution.blocked_error)
    blocked: bool = False
    blocked_by: str | None = None  # the entry that holds the place, below weak-updates/

    @property
    def state(self) -> State:
        if self.linked:
            return State.LINKED
        if self.verdict is None or self.verdict is Verdict.NATIVE or self.superseded_by is not None:
            return State.NOT_LINKED
        return State.NOT_LINKABLE

    @property
    def changed(self) -> bool:
        return self.linked != self.was_linked or self.verdict != self.previous_verdict

    @property
    def reported(self) -> bool:
        """Whether the journal gets an entry of its own for this program."""
        return self.changed or self.state is State.NOT_LINKABLE

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "package": self.package,
            "verdict": _value(self.verdict),
            "previous_verdict": _value(self.previous_verdict),
            "state": self.state.value,
            "linked": self.linked,
            "was_linked": self.was_linked,
            "changed": self.changed,
            "blocked": self.blocked,
            "blocked_by": self.blocked_by,
            "link": self.link,
            "superseded_by": self.superseded_by,
            "reasons": [r.to_json() for r in self.reasons],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ProgramChange:
        return cls(
            path=doc["path"],
            package=doc["package"],
            verdict=_verdict(doc["verdict"]),
            reasons=tuple(
                Reason(ReasonCode(r["code"]), r["symbol"], r["detail"]) for r in doc["reasons"]
            ),
            linked=bool(doc["linked"]),
            was_linked=bool(doc["was_linked"]),
            previous_verdict=_verdict(doc["previous_verdict"]),
            link=doc["link"],
            superseded_by=doc["superseded_by"],
            blocked=bool(doc["blocked"]),
            blocked_by=doc.get("blocked_by"),
        )


@dataclasses.dataclass(frozen=True)
class Resolution:
    """What one run did (or, with dry_run, would do) to one kernel's programs."""

    kernel: str
    action: Action
    dry_run: bool
    programs: tuple[ProgramChange, ...] = ()
    errors: tuple[str, ...] = ()  # why the plan could not be (fully) applied, but blocked links

    def in_state(self, state: State) -> tuple[ProgramChange, ...]:
        return tuple(p for p in self.programs if p.state is state)

    @property
    def changed(self) -> tuple[ProgramChange, ...]:
        return tuple(p for p in self.programs if p.changed)

    @property
    def reported(self) -> tuple[ProgramChange, ...]:
        return tuple(p for p in self.programs if p.reported)

    @property
    def problems(self) -> tuple[str, ...]:
        """Every reason the plan was not fully applied: `errors`, then each blocked link."""
        return self.errors + tuple(self.blocked_error(p) for p in self.programs if p.blocked)

    def blocked_error(self, program: ProgramChange) -> str:
        """What a blocked link means, in one sentence (the report's "errors" hold it)."""
        verdict = program.verdict.value if program.verdict is not None else "usable"
        base = f"usr/lib/modules/{self.kernel}/bpf/weak-updates"
        holder = program.blocked_by or program.link
        where = f"{base}/{holder}"
        if holder != program.link:  # a directory of the link's path is taken
            where += f", where the directory of its link {base}/{program.link} should be,"
        return (
            f"{program.path} is {verdict} with kernel {self.kernel} but not linked: {where} is "
            "a file weak-bpf-progs did not create, and it is kept"
        )

    def blocked_hint(self) -> str:
        return (
            "if it is not yours to keep, move it away and run "
            f"'weak-bpf-progs add-kernel {self.kernel}'"
        )

    @property
    def summary(self) -> str:
        """One line: the journal's summary MESSAGE and the report's "summary". The program
        counts add up to the total; links removed and errors follow a semicolon."""
        prefix = f"{'dry run: ' if self.dry_run else ''}{self.action.value} {self.kernel}: "
        removed = sum(1 for p in self.programs if p.was_linked and not p.linked)
        would = "would be " if self.dry_run else ""
        changes = []
        if removed or self.action is Action.REMOVE_KERNEL:
            changes.append(f"{_count(removed, 'link')} {would}removed")
        problems = self.problems
        if problems:
            changes.append(_count(len(problems), "error"))
        if self.action is Action.REMOVE_KERNEL:  # the programs are the links: nothing to add up
            return prefix + "; ".join(changes)
        linked = self.in_state(State.LINKED)
        newly = sum(1 for p in linked if not p.was_linked)
        states = [f"{len(linked)} {would}linked" + (f" ({newly} new)" if newly else "")]
        not_linked = self.in_state(State.NOT_LINKED)
        for count, what in (
            (len(self.in_state(State.NOT_LINKABLE)), "not linkable"),
            (sum(1 for p in not_linked if p.superseded_by), "not linked (another build is used)"),
            (
                sum(1 for p in not_linked if p.verdict is Verdict.NATIVE and not p.superseded_by),
                "native (used from bpf/extra/)",
            ),
            (sum(1 for p in not_linked if p.verdict is None), "gone"),
        ):
            if count:
                states.append(f"{count} {what}")
        text = f"{prefix}{_count(len(self.programs), 'program')}: {', '.join(states)}"
        return "; ".join([text, *changes])

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "kernel": self.kernel,
            "action": self.action.value,
            "dry_run": self.dry_run,
            "summary": self.summary,
            "counts": {
                "programs": len(self.programs),
                "linked": len(self.in_state(State.LINKED)),
                "not_linkable": len(self.in_state(State.NOT_LINKABLE)),
                "changed": len(self.changed),
                "errors": len(self.problems),
            },
            "programs": [p.to_json() for p in self.programs],
            "errors": list(self.problems),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Resolution:
        """Raises ValueError on another schema version; KeyError, ValueError or TypeError on a
        document to_json did not write."""
        if doc.get("version") != SCHEMA_VERSION:
            raise ValueError(f"report schema version {doc.get('version')!r}, not {SCHEMA_VERSION}")
        read = cls(
            kernel=doc["kernel"],
            action=Action(doc["action"]),
            dry_run=bool(doc["dry_run"]),
            programs=tuple(ProgramChange.from_json(p) for p in doc["programs"]),
        )
        errors = list(doc["errors"])
        blocked = sum(1 for p in read.programs if p.blocked)  # their sentences come last
        return dataclasses.replace(read, errors=tuple(errors[: len(errors) - blocked]))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _value(verdict: Verdict | None) -> str | None:
    return None if verdict is None else verdict.value


def _verdict(value: str | None) -> Verdict | None:
    return None if value is None else Verdict(value)
