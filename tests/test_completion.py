"""Shell completion: bash for real (the completion function run on a command line), zsh for its
syntax and its helpers, both on an example root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import REPO, require_tool

BASH = REPO / "completions/weak-bpf-progs.bash"
ZSH = REPO / "completions/_weak-bpf-progs"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("completion")
    for kver in ("6.1.0-47-cloud-amd64", "5.14.0-427.el9.x86_64"):
        (root / "usr/lib/modules" / kver).mkdir(parents=True)
        (root / "usr/lib/modules" / kver / "modules.dep").touch()
    (root / "usr/lib/modules/not-a-kernel").mkdir()  # nothing in it: not installed
    (root / "boot").mkdir()
    (root / "boot/vmlinuz-6.1.0-56-cloud-amd64").touch()
    for path in (
        "usr/lib/bpf/acme/lb.bpf.o",
        "usr/lib/modules/6.1.0-47-cloud-amd64/bpf/extra/acme/nat.bpf.o",
    ):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).touch()
    return root


def complete(*words: str) -> list[str]:
    """COMPREPLY for `weak-bpf-progs WORDS...`, the cursor on the last word."""
    bash = require_tool("bash")
    script = (
        f"source {BASH}\n"
        f"COMP_WORDS=(weak-bpf-progs {' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words)}\n"
        "_weak_bpf_progs\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run([bash, "-c", script], capture_output=True, text=True, check=True)
    return sorted(line for line in proc.stdout.splitlines() if line)


def test_commands_and_options(root: Path) -> None:
    assert complete("a") == ["add-kernel", "add-progs", "audit"]
    assert "--dry-run" in complete("--d")
    assert complete("audit", "--p") == ["--program"]


def test_installed_kernels(root: Path) -> None:
    kernels = ["5.14.0-427.el9.x86_64", "6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"]
    assert complete("--root", str(root), "add-kernel", "") == kernels
    assert complete("--root", str(root), "remove-kernel", "6.1") == kernels[1:]
    assert complete("--basedir", str(root), "--remove-kernel", "5") == kernels[:1]
    assert complete("--root", str(root), "audit", "--kernel", "6.1.0-5") == kernels[2:]


def test_program_paths(root: Path) -> None:
    programs = [
        "usr/lib/bpf/acme/lb.bpf.o",
        "usr/lib/modules/6.1.0-47-cloud-amd64/bpf/extra/acme/nat.bpf.o",
    ]
    assert complete("--root", str(root), "explain", "") == programs
    assert complete("--root", str(root), "explain", programs[0], "5") == ["5.14.0-427.el9.x86_64"]
    assert complete("--root", str(root), "inspect", "usr/lib/bpf/") == programs[:1]


def test_zsh_completion(root: Path) -> None:
    zsh = require_tool("zsh")
    subprocess.run([zsh, "-n", str(ZSH)], check=True)
    # the helpers, run by zsh itself (the completion function needs an interactive zle)
    helpers = "/^_weak_bpf_progs_kernels()/,/^}/p;/^_weak_bpf_progs_programs()/,/^}/p"
    script = (
        f"eval \"$(sed -n '{helpers}' {ZSH})\"\n"
        f"_weak_bpf_progs_kernels {root}; _weak_bpf_progs_programs {root}\n"
    )
    proc = subprocess.run([zsh, "-f", "-c", script], capture_output=True, text=True, check=True)
    assert sorted(proc.stdout.split()) == sorted(
        [
            "5.14.0-427.el9.x86_64",
            "6.1.0-47-cloud-amd64",
            "6.1.0-56-cloud-amd64",
            "usr/lib/bpf/acme/lb.bpf.o",
            "usr/lib/modules/6.1.0-47-cloud-amd64/bpf/extra/acme/nat.bpf.o",
        ]
    )
