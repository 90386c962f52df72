"""Campaign 2: SIGKILL add-kernel, remove-progs and remove-kernel at every filesystem step
(WEAK_BPF_FAULT_STEP) and at random moments; each kernel must hold its old or its new link set,
and a rerun must converge on the new one."""

from __future__ import annotations

import concurrent.futures
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SCENARIOS = {
    "add-kernel": (["add-kernel", common.NEW], ""),
    "remove-progs": (["remove-progs"], "usr/lib/bpf/acme-trace/open_count.bpf.o\n"),
    "remove-kernel": (["remove-kernel", common.NEW], ""),
}


def before_root(work: Path) -> Path:
    """Both kernels linked, then programs changed: one went, one came, an admin's file in NEW's
    weak-updates."""
    root = work / "crash-before"
    if root.exists():
        return root
    common.clone(common.example_root(work), root)
    (root / "usr/lib/bpf/acme-trace/open_count.bpf.o").unlink()
    new = root / "usr/lib/bpf/acme-new/exec2.bpf.o"
    new.parent.mkdir(parents=True)
    shutil.copyfile(root / "usr/lib/bpf/acme-trace/exec_state.bpf.o", new)
    (root / "usr/lib/modules" / common.NEW / "bpf/weak-updates/admin.txt").write_text("mine")
    return root


def _admin_file_kept(root: Path) -> bool:
    bpf = root / "usr/lib/modules" / common.NEW / "bpf"
    return any(p.read_text() == "mine" for p in bpf.rglob("admin.txt") if p.is_file())


def _judge(root: Path, old: dict, new: dict, scenario: str, rc: int) -> list[str]:
    args, stdin = SCENARIOS[scenario]
    problems = []
    state = common.link_sets(root)
    for kver in (common.OLD, common.NEW):
        if state[kver] not in (old[kver], new[kver]):
            problems.append(f"{scenario}: {kver} holds a mixed link set")
    if not _admin_file_kept(root):
        problems.append(f"{scenario}: the admin's file is gone")
    if rc != 0:
        again = common.cli(root, *args, stdin=stdin)
        if again.returncode != 0 or common.link_sets(root) != new:
            problems.append(f"{scenario}: the rerun did not converge ({again.stderr.strip()})")
    return problems


def _fault_point(work: Path, scenario: str, step: int, old: dict, new: dict) -> dict[str, Any]:
    args, stdin = SCENARIOS[scenario]
    root = common.clone(before_root(work), work / f"crash-{scenario}-{step}")
    proc = common.cli(root, *args, stdin=stdin, fault=step)
    rc = proc.returncode
    if rc not in (0, -signal.SIGKILL):
        problems = [f"{scenario} step {step}: exit {rc}: {proc.stderr.strip()}"]
    else:
        problems = _judge(root, old, new, scenario, rc)
    shutil.rmtree(root)
    return {"killed": rc == -signal.SIGKILL, "done": rc == 0, "problems": problems}


def _timed_point(  # noqa: PLR0917
    work: Path, scenario: str, n: int, delay: float, old: dict, new: dict
) -> dict:
    args, stdin = SCENARIOS[scenario]
    root = common.clone(before_root(work), work / f"crash-{scenario}-t{n}")
    proc = subprocess.Popen(
        [common.PYTHON, "-m", "weak_bpf", "--root", str(root), "--no-journal", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=common.REPO,
        env=common.env(),
    )
    assert proc.stdin is not None
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    rc = proc.wait()
    problems = _judge(root, old, new, scenario, rc)
    shutil.rmtree(root)
    return {"killed": rc == -signal.SIGKILL, "done": rc == 0, "problems": problems}


def campaign(
    work: Path, *, max_steps: int, timed: int, jobs: int = 2, exhaustive: bool = True
) -> dict[str, Any]:
    """Kill each scenario at steps 1..max_steps; `exhaustive`: every step of a run must be
    reached (the full campaign), else a sample of the first steps is enough (--quick)."""
    before = before_root(work)
    old = common.link_sets(before)
    points = 0
    killed = 0
    problems: list[str] = []
    durations = {}
    for scenario, (args, stdin) in SCENARIOS.items():
        reference = common.clone(before, work / f"crash-{scenario}-reference")
        start = time.monotonic()
        proc = common.cli(reference, *args, stdin=stdin)
        durations[scenario] = time.monotonic() - start
        if proc.returncode != 0:
            problems.append(f"{scenario}: the reference run failed: {proc.stderr.strip()}")
            continue
        new = common.link_sets(reference)
        shutil.rmtree(reference)
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            step = 1
            while step <= max_steps:
                batch = [
                    pool.submit(_fault_point, work, scenario, s, old, new)
                    for s in range(step, min(max_steps, step + jobs * 2 - 1) + 1)
                ]
                results = [f.result() for f in batch]
                step += len(batch)
                for r in results:
                    points += 1
                    killed += r["killed"]
                    problems += r["problems"]
                if any(r["done"] for r in results):
                    break
            else:
                if exhaustive:
                    problems.append(f"{scenario}: not finished after {max_steps} steps")
            rng = random.Random(scenario)
            futures = [
                pool.submit(
                    _timed_point,
                    work,
                    scenario,
                    n,
                    rng.uniform(0.05, durations[scenario] + 0.1),
                    old,
                    new,
                )
                for n in range(timed)
            ]
            for f in futures:
                r = f.result()
                points += 1
                killed += r["killed"]
                problems += r["problems"]
    return {"points": points, "killed": killed, "problems": problems}
