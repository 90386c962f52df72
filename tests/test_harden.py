"""The hardening campaigns (harden/) in their small form, and the bugs they found."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from weak_bpf.apply.writer import current_links

from conftest import REPO, require

HARDEN = REPO / "harden"


def test_quick_campaigns_meet_every_bound(debian_kernels: dict, tmp_path: Path) -> None:
    require(debian_kernels, "the Debian kernels")
    proc = subprocess.run(
        ["/usr/bin/python3", str(HARDEN / "harden.py"), "--quick", "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert "[FAIL]" not in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # every campaign printed its figures, the counts of cases run among them (bounded below)
    for campaign, count in (
        ("fuzz", "readers fuzzed"),
        ("fuzz", "corrupt objects among valid ones"),
        ("crash", "kill points"),
        ("crash", "runs really killed"),
        ("concurrency", "rounds of 8 runs"),
        ("confinement", "hostile cases"),
        ("hooks", "hook runs under faults"),
    ):
        assert f"[ok  ] {campaign}: {count} = " in proc.stdout, proc.stdout


def _linked_root(root: Path) -> dict[str, str]:
    """A kernel with a generation of three links, made by the tool's own layout."""
    kver = "6.1.0-1-test"
    gen = root / "usr/lib/modules" / kver / "bpf/.weak-updates.1"
    (gen / "acme").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (root / "usr/lib/bpf/acme").mkdir(parents=True, exist_ok=True)
        (root / f"usr/lib/bpf/acme/{name}.bpf.o").write_bytes(b"")
        (gen / f"acme/{name}.bpf.o").symlink_to(f"/usr/lib/bpf/acme/{name}.bpf.o")
    (gen / ".weak-bpf-progs").write_text("ours\n")
    (gen.parent / "weak-updates").symlink_to(".weak-updates.1")
    return current_links(root, kver)


def test_regression_remove_kernel_killed_midway_leaves_no_partial_set(tmp_path: Path) -> None:
    """Bug found by the crash campaign: remove_links unlinks weak-updates, then drops the
    generation link by link; a kill in between leaves a partial generation, which
    _current_set then takes for the current set (a mixed state)."""
    old = _linked_root(tmp_path)
    code = (
        "import sys; from pathlib import Path; from weak_bpf.apply import writer as actions;"
        "actions.remove_links(Path(sys.argv[1]), '6.1.0-1-test')"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "WEAK_BPF_FAULT_STEP": "2"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert current_links(tmp_path, "6.1.0-1-test") in (old, {})


def test_regression_non_utf8_program_name_does_not_break_a_run(tmp_path: Path) -> None:
    """Bug found by the confinement campaign: one object whose file name is not UTF-8 makes
    every run that lists programs (add-kernel, add-progs, audit) fail with an internal
    UnicodeEncodeError in cache.content_key (the stat key encodes the name strictly)."""
    kver = "6.1.0-1-test"
    bpf = tmp_path / "usr/lib/bpf/acme"
    bpf.mkdir(parents=True)
    (tmp_path / "usr/lib/modules" / kver).mkdir(parents=True)
    (tmp_path / "usr/lib/modules" / kver / "modules.dep").touch()  # an installed kernel
    with open(os.fsencode(bpf) + b"/\xff.bpf.o", "wb") as f:
        f.write(b"not an object")
    (bpf / "plain.bpf.o").write_bytes(b"not an object either")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    command = [sys.executable, "-m", "weak_bpf", "--root", str(tmp_path), "--no-journal", "audit"]
    text_then_json: list[list[str]] = [[], ["--json"]]
    for args in text_then_json:
        proc = subprocess.run(
            [*command, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        assert "internal error" not in proc.stderr, proc.stderr
        # both programs judged on the kernel: malformed, so the audit has findings (exit 1)
        assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["kernels"] == [kver]
    got = {
        (p["path"], k): (r["verdict"], [reason["code"] for reason in r["reasons"]])
        for p in doc["programs"]
        for k, r in p["results"].items()
    }
    malformed = ("incompatible", ["malformed"])
    assert got == {
        ("usr/lib/bpf/acme/" + os.fsdecode(b"\xff") + ".bpf.o", kver): malformed,
        ("usr/lib/bpf/acme/plain.bpf.o", kver): malformed,
    }


def test_regression_non_utf8_path_on_stdin_under_a_strict_locale(tmp_path: Path) -> None:
    """Bug found by the CLI fuzzing: add-progs read stdin as text, and under en_US.UTF-8 (strict
    decoding, as on Fedora and RHEL) one non-UTF-8 path from an rpm trigger failed the whole run
    with an internal UnicodeDecodeError."""
    (tmp_path / "usr/lib/modules/6.1.0-1-test").mkdir(parents=True)
    for verb in ("add-progs", "remove-progs"):
        proc = subprocess.run(
            [sys.executable, "-m", "weak_bpf", "--root", str(tmp_path), "--no-journal", verb],
            input=b"usr/lib/bpf/acme/\xff\xfe.bpf.o\n", cwd=REPO, capture_output=True,
            env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, check=False,
        )  # fmt: skip
        assert b"internal error" not in proc.stderr, proc.stderr
        assert proc.returncode == 0, proc.stderr
