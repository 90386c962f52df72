"""Campaigns 3 to 5: concurrent runs on one root, root confinement with hostile files, and the
kernel hooks, which must exit 0 and report the problem whatever happens."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import crash


def _reports_ok(root: Path) -> int:
    """How many reports/K.json do not parse."""
    bad = 0
    for report in (root / "var/lib/weak-bpf-progs/reports").glob("*.json"):
        try:
            json.loads(report.read_bytes())
        except ValueError:
            bad += 1
    return bad


def _run(
    run: tuple[str, list[str], str], root: Path, work: Path, daemon: common.Daemon
) -> subprocess.CompletedProcess[str]:
    kind, args, stdin = run
    if kind == "cli":
        return common.cli(root, *args, stdin=stdin)
    if kind == "daemon":
        return daemon.call(args[0], args[1])
    return common.run_hook(kind, root, args, work)


def concurrency(work: Path, rounds: int) -> dict[str, Any]:
    """8 mixed runs at once (CLI, hooks and the daemon's AddKernel); NEW's final set must be the
    one of a serial run with remove-kernel first or last, OLD's the serial one."""
    runs: list[tuple[str, list[str], str]] = [
        ("daemon", ["AddKernel", common.OLD], ""),
        ("cli", ["add-kernel", common.NEW], ""),
        ("cli", ["add-progs"], "usr/lib/bpf/acme-new/exec2.bpf.o\n"),
        ("cli", ["remove-progs"], "usr/lib/bpf/acme-trace/open_count.bpf.o\n"),
        ("postinst", [common.NEW], ""),
        ("kernel-install", ["add", common.OLD], ""),
        ("cli", ["remove-kernel", common.NEW], ""),
        ("cli", ["audit"], ""),
    ]
    before = crash.before_root(work)
    serial = []
    for remove_first in (True, False):
        ref = common.clone(before, work / f"conc-serial-{remove_first}")
        order = sorted(runs, key=lambda r: (r[1][:1] == ["remove-kernel"]) != remove_first)
        daemon = common.Daemon(ref, work)
        try:
            for run in order:
                _run(run, ref, work, daemon)
        finally:
            daemon.stop()
        serial.append(common.link_sets(ref))
        shutil.rmtree(ref)
    mismatches = timeouts = partial = 0
    notes = []
    for n in range(rounds):
        root = common.clone(before, work / f"conc-{n}")
        daemon = common.Daemon(root, work)

        def one(
            run: tuple[str, list[str], str], root: Path = root, daemon: common.Daemon = daemon
        ) -> tuple[int, str]:
            proc = _run(run, root, work, daemon)
            return proc.returncode, proc.stderr

        try:
            with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
                results = list(pool.map(one, runs))
        finally:
            daemon.stop()
        for (rc, err), run in zip(results, runs):
            failed = run[0] == "daemon" and rc != 0
            if failed or "held" in err or rc == 3 or "did not complete" in err:
                timeouts += 1
                notes.append(f"{run[1]}: {err.strip()[:200]}")
        if common.link_sets(root) not in serial:
            mismatches += 1
        partial += _reports_ok(root)
        shutil.rmtree(root)
    return {"rounds": rounds, "mismatches": mismatches, "timeouts": timeouts, "partial": partial,
            "notes": notes[:5]}  # fmt: skip


def _tree_hash(top: Path) -> str:
    digest = hashlib.sha256()
    for directory, subdirs, files in sorted(os.walk(top)):
        subdirs.sort()
        for name in sorted(subdirs + files):
            path = Path(directory, name)
            digest.update(str(path.relative_to(top)).encode(errors="surrogateescape"))
            if path.is_symlink():
                digest.update(b"L" + os.readlink(path).encode())
            elif path.is_file():
                digest.update(b"F" + path.read_bytes())
    return digest.hexdigest()


def _regular_files(root: Path) -> set[str]:
    """Regular files that a user or a package owns (not the tool's own state)."""
    out = set()
    for directory, _subdirs, files in os.walk(root):
        rel = os.path.relpath(directory, root)
        if rel.startswith(("var/", "run")) or "/.weak-updates." in f"/{rel}":
            continue
        for name in files:
            if os.path.isfile(os.path.join(directory, name)) and not os.path.islink(
                os.path.join(directory, name)
            ):
                out.add(os.path.join(rel, name))
    return out


def confinement(work: Path) -> dict[str, Any]:
    root = common.clone(crash.before_root(work), work / "hostile-root")
    sentinel = work / "sentinel"
    shutil.rmtree(sentinel, ignore_errors=True)
    (sentinel / "dir/acme").mkdir(parents=True)
    obj = root / "usr/lib/bpf/acme-trace/exec_state.bpf.o"
    shutil.copyfile(obj, sentinel / "dir/acme/outside.bpf.o")
    (sentinel / "victim.txt").write_text("do not touch")
    lib = root / "usr/lib/bpf"
    (lib / "evil-dir").symlink_to(sentinel / "dir")
    (lib / "acme-trace/outside.bpf.o").symlink_to(sentinel / "dir/acme/outside.bpf.o")
    (lib / "acme-trace/relative.bpf.o").symlink_to("../../../../../" * 4 + str(sentinel)[1:] + "/x")
    wu = root / "usr/lib/modules" / common.NEW / "bpf/weak-updates"
    (wu / "foreign.bpf.o").symlink_to(sentinel / "victim.txt")
    (wu / "acme-trace").mkdir(exist_ok=True)
    # a directory on the path of links that is a link out of the root: nothing may go through it
    shutil.rmtree(wu / "acme-net", ignore_errors=True)
    (wu / "acme-net").symlink_to(sentinel / "dir")
    old_wu = root / "usr/lib/modules" / common.OLD / "bpf"
    (old_wu / "weak-updates").unlink()
    (old_wu / "weak-updates").symlink_to(sentinel / "dir")
    shutil.copyfile(obj, lib / "acme-trace/bad\nname.bpf.o")
    shutil.copyfile(obj, os.fsencode(lib / "acme-trace") + b"/\xff\xfe.bpf.o")
    with open(lib / "acme-new/exec2.bpf.o.greylist", "wb") as big:
        line = b"# padding of a greylist that is far too long\n"
        big.write(line * ((100 << 20) // len(line)))
    files_before = _regular_files(root)
    hash_before = _tree_hash(sentinel)
    bad_k = ["../../../" + str(sentinel)[1:], "a/b", "..", "../" + common.NEW]
    cases: list[tuple[str, Any]] = []
    for k in bad_k:
        cases += [("cli", (["add-kernel", k], "")), ("cli", (["remove-kernel", k], ""))]
        cases += [("postinst", [k]), ("prerm", [k]), ("kernel-install", ["add", k])]
        cases += [("daemon", ["AddKernel", k]), ("daemon", ["RemoveKernel", k])]
    stdin_paths = "\n".join(
        ["../../" + str(sentinel)[1:] + "/dir/acme/outside.bpf.o", "usr/lib/bpf/../../../etc",
         "usr/lib/bpf/acme-trace/bad", "name.bpf.o", str(sentinel / "victim.txt")]
    )  # fmt: skip
    cases += [("cli", (["add-progs"], stdin_paths)), ("cli", (["remove-progs"], stdin_paths))]
    cases += [("cli-bytes", (["add-progs"], b"usr/lib/bpf/acme-trace/\xff\xfe.bpf.o\n"))]
    cases += [("cli", (["add-kernel", common.NEW], "")), ("cli", (["audit", "--json"], ""))]
    cases += [("cli", (["remove-kernel", common.NEW], ""))]
    internal = []
    daemon = common.Daemon(root, work)
    for kind, spec in cases:
        if kind == "daemon":
            proc = daemon.call(spec[0], spec[1])
            # refused before anything is read: the D-Bus error names the bad argument
            err = proc.stdout + proc.stderr
            if proc.returncode == 0 or ("not allowed" not in err and "not a kernel" not in err):
                internal.append(f"daemon {spec}: exit {proc.returncode}: {err.strip()[-300:]}")
            continue
        if kind == "cli":
            args, stdin = spec
            err = common.cli(root, *args, stdin=stdin).stderr
        elif kind == "cli-bytes":
            args, raw = spec
            done = subprocess.run(
                [common.PYTHON, "-m", "weak_bpf", "--root", str(root), "--no-journal", *args],
                input=raw,
                capture_output=True,
                env=common.env(),
                cwd=common.REPO,
                check=False,
            )
            err = done.stderr.decode(errors="replace")
        else:
            err = common.run_hook(kind, root, spec, work).stderr
        if "internal error" in err or "Traceback" in err:
            internal.append(f"{kind} {spec}: {err.strip()[-300:]}")
    daemon_log = daemon.log()
    daemon.stop()
    if "Traceback" in daemon_log:
        internal.append(f"daemon: {daemon_log[-300:]}")
    removed = sorted(files_before - _regular_files(root))
    result = {
        "cases": len(cases),
        "outside_changed": int(_tree_hash(sentinel) != hash_before),
        "regular_removed": len(removed),
        "removed": removed[:5],
        "internal_errors": len(internal),
        "internal": internal[:5],
    }
    shutil.rmtree(root)
    return result


def hooks(work: Path, steps: int) -> dict[str, Any]:
    """Every hook under every fault: a SIGKILL at a step, a held lock with a short timeout, a
    broken configuration, a bad K, a kernel that is not there. Exit 0 and a word on stderr."""
    before = crash.before_root(work)
    calls = [
        ("postinst", [common.NEW]),
        ("prerm", [common.NEW]),
        ("kernel-install", ["add", common.NEW]),
        ("kernel-install", ["remove", common.NEW]),
    ]
    faults: list[tuple[str, dict[str, str], list[str] | None]] = [
        (f"kill@{s}", {"WEAK_BPF_FAULT_STEP": str(s)}, None) for s in range(1, steps + 1)
    ]
    faults += [("bad-k", {}, ["../x"]), ("missing-k", {}, ["9.9.9-none"]), ("lock", {}, None),
               ("config", {}, None)]  # fmt: skip
    nonzero = silent = total = 0
    notes = []
    for name, extra, override in faults:
        for hook, args in calls:
            root = common.clone(before, work / "hook-root")
            if name == "config":
                (root / "etc").mkdir(exist_ok=True)
                (root / "etc/weak-bpf-progs.conf").write_bytes(b"[main\nlock_timeout = \xff\n")
            holder = None
            if name == "lock":
                import fcntl

                (root / "etc").mkdir(exist_ok=True)
                (root / "etc/weak-bpf-progs.conf").write_text("[main]\nlock_timeout = 0.2\n")
                (root / "run").mkdir(exist_ok=True)
                holder = os.open(root / "run/weak-bpf-progs.lock", os.O_RDWR | os.O_CREAT)
                fcntl.flock(holder, fcntl.LOCK_EX)
            hook_args = args if override is None else args[:-1] + override
            proc = common.run_hook(hook, root, hook_args, work, **extra)
            if holder is not None:
                os.close(holder)
            total += 1
            if proc.returncode != 0:
                nonzero += 1
                notes.append(f"{hook} {name}: exit {proc.returncode}")
            killed = name.startswith("kill@") and "did not complete" in proc.stderr
            finished_clean = name.startswith("kill@") and not proc.stderr.strip()
            if not (proc.stderr.strip() or killed or finished_clean):
                silent += 1
                notes.append(f"{hook} {name}: reported nothing")
    shutil.rmtree(work / "hook-root", ignore_errors=True)
    return {"runs": total, "nonzero": nonzero, "silent": silent, "notes": notes[:5]}
