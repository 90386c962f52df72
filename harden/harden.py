"""Run every hardening campaign and print its figures; exit 1 if a bound is missed.

/usr/bin/python3 harden/harden.py [--quick] [--work DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import crash
import fuzz
import hostile

FULL = {"fuzz": 10_000, "corrupt": 100, "steps": 200, "timed": 50, "rounds": 5, "hook_steps": 10}
QUICK = {"fuzz": 60, "corrupt": 3, "steps": 6, "timed": 1, "rounds": 1, "hook_steps": 1}
# Every hostile case of the confinement campaign runs at every size (34 when written).
CONFINEMENT_CASES = 34
# Each command of the crash campaign takes more filesystem steps than this, so it is killed at
# each of its first min(steps, CRASH_FIRST_STEPS) steps at every size.
CRASH_FIRST_STEPS = 6


def minimum_cases(sizes: dict[str, int]) -> dict[str, int]:
    """The fewest cases each campaign must run at `sizes` (never 0): one that ran fewer (none at
    all, a command, a round or a hook left out, kills that never happened) fails its count
    instead of passing with nothing tested. The crash campaign goes on until each command
    finishes (full) or stops after `steps` (--quick), then adds `timed` kills per command; the
    hooks run 4 calls under each of `hook_steps` kills and 4 other faults."""
    commands = len(crash.SCENARIOS)
    first = max(1, min(sizes["steps"], CRASH_FIRST_STEPS))
    return {
        "fuzz": max(1, sizes["fuzz"]),
        "corrupt": max(1, sizes["corrupt"]),
        "crash points": commands * (first + sizes["timed"]),
        "crash killed": commands * first,
        "rounds": max(1, sizes["rounds"]),
        "confinement": CONFINEMENT_CASES,
        "hooks": 4 * (sizes["hook_steps"] + 4),
    }


def _at_least(campaign: str, name: str, value: int, minimum: int) -> common.Figure:
    return common.Figure(campaign, name, value, f">= {minimum}", value >= minimum)


def figures(work: Path, sizes: dict[str, int], only: set[str]) -> list[common.Figure]:
    out: list[common.Figure] = []
    F = common.Figure
    least = minimum_cases(sizes)
    if "fuzz" in only:
        results = fuzz.fuzz_all(sizes["fuzz"], work)
        fuzzed = len({r["reader"] for r in results} & set(fuzz.READERS))
        out.append(_at_least("fuzz", "readers fuzzed", fuzzed, len(fuzz.READERS)))
        for r in results:
            bad = r.get("traceback", 0) + r.get("hang", 0) + r.get("memory", 0)
            out.append(_at_least("fuzz", f"{r['reader']} inputs", r["inputs"], least["fuzz"]))
            out.append(F("fuzz", f"{r['reader']} tracebacks/hangs/memory", bad, "0", bad == 0))
            for failure in r["failures"][:2]:
                print(f"  {r['reader']}: {failure}", file=sys.stderr)
        c = fuzz.corrupt_among_valid(work, sizes["corrupt"])
        out.append(_at_least("fuzz", "corrupt objects among valid ones", c["variants"],
                             least["corrupt"]))  # fmt: skip
        for key in ("differing", "not_malformed"):
            out.append(F("fuzz", f"corrupt among valid: {key}", c[key], "0", c[key] == 0))
        for problem in c["problems"]:
            print(f"  corrupt among valid: {problem}", file=sys.stderr)
    if "crash" in only:
        r = crash.campaign(
            work, max_steps=sizes["steps"], timed=sizes["timed"], exhaustive=sizes is FULL
        )
        out.append(_at_least("crash", "kill points", r["points"], least["crash points"]))
        out.append(_at_least("crash", "runs really killed", r["killed"], least["crash killed"]))
        out.append(F("crash", "mixed states or failed reruns", len(r["problems"]), "0",
                     not r["problems"]))  # fmt: skip
        for p in r["problems"][:5]:
            print(f"  crash: {p}", file=sys.stderr)
    if "concurrency" in only:
        r = hostile.concurrency(work, sizes["rounds"])
        out.append(_at_least("concurrency", "rounds of 8 runs", r["rounds"], least["rounds"]))
        for key in ("mismatches", "timeouts", "partial"):
            out.append(F("concurrency", key, r[key], "0", r[key] == 0))
    if "confinement" in only:
        r = hostile.confinement(work)
        out.append(_at_least("confinement", "hostile cases", r["cases"], least["confinement"]))
        for key in ("outside_changed", "regular_removed", "internal_errors"):
            out.append(F("confinement", key, r[key], "0", r[key] == 0))
        for note in r["internal"][:3]:
            print(f"  confinement: {note[:300]}", file=sys.stderr)
    if "hooks" in only:
        r = hostile.hooks(work, sizes["hook_steps"])
        out.append(_at_least("hooks", "hook runs under faults", r["runs"], least["hooks"]))
        out.append(F("hooks", "non-zero exits", r["nonzero"], "0", r["nonzero"] == 0))
        out.append(F("hooks", "problems not reported", r["silent"], "0", r["silent"] == 0))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the small, time-bounded version")
    parser.add_argument("--work", type=Path, help="keep the example roots here (default: temp)")
    parser.add_argument("--only", nargs="*", default=["fuzz", "crash", "concurrency",
                        "confinement", "hooks"])  # fmt: skip
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="weak-bpf-harden-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        results = figures(work, QUICK if args.quick else FULL, set(args.only))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for figure in results:
        print(figure.line())
    print(f"total time: {time.monotonic() - start:.0f} s")
    return 0 if all(f.ok for f in results) else 1


if __name__ == "__main__":
    sys.exit(main())
