"""`audit`'s text output: the aligned table, colors on a terminal (and NO_COLOR), the running
and default-boot kernel marks, progress on a terminal's stderr, and the filters. The CLI runs
in-process, and through real ptys where a terminal matters."""

from __future__ import annotations

import errno
import io
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from weak_bpf import cli, ops, report
from weak_bpf.kernel import bootloader

import exampleroot
from conftest import REPO

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EXAMPLE_PROGRAMS = 11  # the example root's 10 CO-RE builds and one native build
EXTRA_COPIES = 8  # more programs: progress counts them by tens


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, debian_kernels: dict[str, Path]) -> Path:
    """The example root, with extra copies of one program and GRUB + BLS files making the
    newest kernel the default."""
    root = tmp_path_factory.mktemp("audit-output") / "root"
    exampleroot.build_example_root(root, debian_kernels)
    source = root / "usr/lib/bpf/acme-trace/open_count.bpf.o"
    copies = root / "usr/lib/bpf/acme-copies"
    copies.mkdir()
    for i in range(EXTRA_COPIES):
        shutil.copyfile(source, copies / f"copy{i}.bpf.o")
    entries = root / "boot/loader/entries"
    entries.mkdir(parents=True)
    for kver in debian_kernels:
        (entries / f"0123abcd-{kver}.conf").write_text(
            f"title Debian ({kver})\nversion {kver}\nlinux /vmlinuz-{kver}\n"
        )
    (root / "boot/grub2").mkdir(parents=True)
    newest = max(debian_kernels)
    (root / "boot/grub2/grubenv").write_text(
        f"# GRUB Environment Block\nsaved_entry=0123abcd-{newest}\n" + "#" * 900
    )
    return root


@pytest.fixture(scope="module")
def kernels(debian_kernels: dict[str, Path]) -> tuple[str, str]:
    old, new = sorted(debian_kernels)
    return old, new


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(args)
    out, err = capsys.readouterr()
    return status, out, err


def audit_doc(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    _, out, _ = run(["--root", str(root), "audit", "--json", *extra], capsys)
    return json.loads(out)


# --- the table ---------------------------------------------------------------------------------


def test_table_is_aligned_with_one_summary_per_kernel(
    root: Path, kernels: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    doc = audit_doc(root, capsys)
    status, out, err = run(["--root", str(root), "audit"], capsys)
    assert status == cli.Exit.FINDINGS, err  # task_guard is proprietary: incompatible
    assert "\x1b" not in out and "\x1b" not in err  # not a terminal: no color, no progress
    lines = out.splitlines()
    header, rule = lines[0], lines[1]
    rows = lines[2 : 2 + len(doc["programs"])]
    assert lines[2 + len(doc["programs"])] == ""
    # the rule's dashes give each column's start and width
    spans = [m.span() for m in re.finditer(r"-+", rule)]
    assert len(spans) == 3
    starts = [s for s, _ in spans]
    assert [s - 2 for s in starts[1:]] == [e for _, e in spans[:-1]]  # two spaces apart
    assert [header[s:e].strip() for s, e in spans] == [
        "program",
        kernels[0],
        f"{kernels[1]} (default)",
    ]
    widest = [len(header[s:e].rstrip()) for s, e in spans]
    for program, line in zip(doc["programs"], rows):
        cells = re.split(r"  +", line)  # no cell holds two spaces in a row
        assert [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", line)] == starts
        assert cells[0] == program["path"]
        for kver, cell in zip(kernels, cells[1:]):
            assert cell.split(" ")[0] == program["results"][kver]["verdict"]
        widest = [max(w, len(c)) for w, c in zip(widest, cells)]
    assert [e - s for s, e in spans] == widest  # each column as wide as its widest cell
    assert all(line == line.rstrip() for line in lines)
    # the summary agrees with the JSON's verdicts
    total = len(doc["programs"])
    assert total == EXAMPLE_PROGRAMS + EXTRA_COPIES
    usable = {"compatible", "compatible-unstable", "native"}
    expected = [
        f"{k}: {sum(p['results'][k]['verdict'] in usable for p in doc['programs'])} of {total} "
        "programs usable"
        for k in kernels
    ]
    assert lines[-2:] == expected
    # task_guard is proprietary everywhere; on the newer kernel, buddy_load, padata_offline and
    # epoll_leak also break
    assert f"{kernels[0]}: {total - 1} of {total} programs usable" in out
    assert f"{kernels[1]}: {total - 4} of {total} programs usable" in out


def test_color_paints_each_verdict_and_nothing_else(root: Path, kernels: tuple[str, str]) -> None:
    audit = ops.audit(root, cache=False)
    plain = report.render_audit(audit)
    colored = report.render_audit(audit, color=True)
    assert "\x1b" not in plain
    assert ANSI.sub("", colored) == plain  # same text, same widths
    assert "\x1b[32mcompatible\x1b[0m" in colored
    assert "\x1b[31mincompatible (license)\x1b[0m" in colored
    assert "\x1b[34mnative (needs nf_conntrack)\x1b[0m" in colored
    # one painted cell per program and kernel
    assert len(re.findall(r"\x1b\[3[1-5]m", colored)) == len(audit.programs) * len(kernels)


def test_color_choice_follows_the_terminal_and_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert cli._wants_color(Tty())
    assert not cli._wants_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not cli._wants_color(Tty())
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: only a non-empty value counts
    assert cli._wants_color(Tty())


# --- through real terminals --------------------------------------------------------------------


def _drain(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as e:  # EIO: the other side is closed
            assert e.errno == errno.EIO
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def run_on_terminals(
    root: Path, *, stdout_tty: bool, stderr_tty: bool, no_color: bool = False
) -> tuple[str, str]:
    """`python3 -m weak_bpf audit --dry-run` (cold, the cache left alone) with stdout and stderr
    each on its own pty, or a pipe."""
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm"
    if no_color:
        env["NO_COLOR"] = "1"
    streams: list[tuple[int, int] | None] = [
        pty.openpty() if tty else None for tty in (stdout_tty, stderr_tty)
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "weak_bpf", "--root", str(root), "audit", "--dry-run"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=streams[0][1] if streams[0] else subprocess.PIPE,
        stderr=streams[1][1] if streams[1] else subprocess.PIPE,
    )
    for pair in streams:
        if pair:
            os.close(pair[1])
    texts = []
    for pair, pipe in zip(streams, (proc.stdout, proc.stderr)):
        # output is a few KiB, below a pty's buffer: reading one after the other is safe
        data = _drain(pair[0]) if pair else (pipe.read() if pipe else b"")
        texts.append(data.decode().replace("\r\n", "\n"))
    assert proc.wait(timeout=60) == cli.Exit.FINDINGS
    return texts[0], texts[1]


def test_a_terminal_gets_colors_and_progress(root: Path, kernels: tuple[str, str]) -> None:
    out, err = run_on_terminals(root, stdout_tty=True, stderr_tty=True)
    assert "\x1b[32mcompatible" in out and "\x1b[31mincompatible" in out
    assert f"{kernels[1]} (default)" in out
    for kver in kernels:
        assert f"\r\x1b[Kreading kernel {kver}..." in err
    assert f"checking {EXAMPLE_PROGRAMS + EXTRA_COPIES} programs..." in err
    assert f"checked 10 of {EXAMPLE_PROGRAMS + EXTRA_COPIES} programs" in err
    assert err.endswith("\r\x1b[K")  # the status line is wiped before the table
    assert "\n" not in err  # nothing but the one overwritten line


def test_no_color_on_a_terminal_and_no_progress_on_a_pipe(root: Path) -> None:
    out, err = run_on_terminals(root, stdout_tty=True, stderr_tty=False, no_color=True)
    assert "\x1b" not in out and "programs usable" in out
    assert err == ""
    out, err = run_on_terminals(root, stdout_tty=False, stderr_tty=True)
    assert "\x1b" not in out and "programs usable" in out  # a pipe: plain
    assert "reading kernel" in err


def test_progress_callback_hears_each_kernel_and_every_ten_programs(
    root: Path, kernels: tuple[str, str]
) -> None:
    heard: list[str] = []
    audit = ops.audit(root, cache=False, progress=heard.append)
    total = len(audit.programs)
    assert heard == [
        *(f"reading kernel {k}..." for k in kernels),
        f"checking {total} programs...",
        f"checked 10 of {total} programs",
    ]


# --- running and default-boot kernels ----------------------------------------------------------


def test_marks_running_and_default_kernels(
    root: Path,
    kernels: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old, new = kernels
    assert cli._running_kernel(root) is None  # not this system
    assert cli._running_kernel(Path("/")) == os.uname().release
    monkeypatch.setattr(cli, "_running_kernel", lambda _root: old)
    _, out, _ = run(["--root", str(root), "audit"], capsys)
    header = out.splitlines()[0].split()
    assert header == ["program", old, "(running)", new, "(default)"]
    monkeypatch.setattr(cli, "_running_kernel", lambda _root: new)
    _, out, _ = run(["--root", str(root), "audit"], capsys)
    assert out.splitlines()[0].split() == ["program", old, new, "(running,", "default)"]
    assert f"{new}: " in out  # summary lines keep the bare release


def test_default_kernel_from_grubenv_and_bls(root: Path, kernels: tuple[str, str]) -> None:
    assert bootloader.default_kernel(root) == kernels[1]
    assert bootloader.bls_entries(root) == {f"0123abcd-{k}": k for k in kernels}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_default_kernel_from_systemd_boot(tmp_path: Path) -> None:
    write(tmp_path / "boot/loader/entries/arch.conf", "title A\nlinux /vmlinuz-6.9.1-arch1\n")
    write(tmp_path / "boot/loader/entries/lts.conf", "title L\nversion 6.6.30-lts\n")
    assert bootloader.default_kernel(tmp_path) is None  # nothing says which
    write(tmp_path / "boot/loader/loader.conf", "timeout 3\ndefault arch.conf\n")
    assert bootloader.default_kernel(tmp_path) == "6.9.1-arch1"  # from the linux line
    write(tmp_path / "boot/loader/loader.conf", "default *lts*\n")
    assert bootloader.default_kernel(tmp_path) == "6.6.30-lts"
    write(tmp_path / "boot/loader/loader.conf", "default *\n")
    assert bootloader.default_kernel(tmp_path) is None  # ambiguous
    write(tmp_path / "boot/loader/loader.conf", "default @saved\n")
    assert bootloader.default_kernel(tmp_path) is None  # kept in an EFI variable


def test_default_kernel_unknown_or_outside_the_root(tmp_path: Path) -> None:
    assert bootloader.default_kernel(tmp_path) is None  # no boot loader files
    write(tmp_path / "boot/loader/entries/m-6.1.conf", "version 6.1\n")
    write(tmp_path / "boot/grub2/grubenv", "saved_entry=m-5.14\n")
    assert bootloader.default_kernel(tmp_path) is None  # saved entry is gone
    # Fedora's grubenv is a link into the ESP: followed, inside the root
    write(tmp_path / "boot/efi/EFI/fedora/grubenv", "saved_entry=m-6.1\n")
    (tmp_path / "boot/grub2/grubenv").unlink()
    (tmp_path / "boot/grub2/grubenv").symlink_to("../efi/EFI/fedora/grubenv")
    assert bootloader.default_kernel(tmp_path) == "6.1"
    # an absolute link means the root's own /boot, never the host's
    host = tmp_path / "host"
    write(host / "entries/m-9.9.conf", "version 9.9\n")
    inner = tmp_path / "inner"
    write(inner / "boot/grub2/grubenv", "saved_entry=m-9.9\n")
    (inner / "boot/loader").mkdir(parents=True)
    (inner / "boot/loader/entries").symlink_to(host / "entries")
    assert bootloader.default_kernel(inner) is None


# --- filters -----------------------------------------------------------------------------------


def test_kernel_and_program_filters(
    root: Path, kernels: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = kernels
    status, out, err = run(
        ["--root", str(root), "audit", "--kernel", new, "--program", "acme-net/*"], capsys
    )
    assert status == cli.Exit.OK, err
    lines = out.splitlines()
    assert lines[0].split() == ["program", new, "(default)"]
    assert old not in lines[0]
    paths = [line.split()[0] for line in lines[2:5]]
    assert paths == [
        "usr/lib/bpf/acme-net/tcp_retrans.bpf.o",
        "usr/lib/bpf/acme-net/xdp_ct.bpf.o",  # matched by its path's tail via the link name
        f"usr/lib/modules/{old}/bpf/extra/acme-net/xdp_ct.bpf.o",
    ]
    assert lines[5:] == ["", f"{new}: 3 of 3 programs usable"]
    # a positional kernel and a full-path glob, repeatable
    status, out, _ = run(
        [
            "--root",
            str(root),
            "audit",
            old,
            "--program",
            "usr/lib/bpf/acme-sec/*",
            "--program",
            "*/copy1.bpf.o",
        ],
        capsys,
    )
    assert status == cli.Exit.FINDINGS
    assert out.splitlines()[0].split() == ["program", old]
    assert "task_guard.bpf.o" in out and "copy1.bpf.o" in out and "copy2" not in out
    assert out.endswith(f"{old}: 1 of 2 programs usable\n")


def test_what_to_do_follows_how_a_check_ended() -> None:
    """A failure's remedy; for a check left undecided by missing kernel data, what to install;
    for a program's that only the kernel can decide, verify; for a struct_ops map's, which the
    package's loader decides, its vendor."""
    from weak_bpf.model import Area, Check, Outcome, ReasonCode, Result, Verdict
    from weak_bpf.ops.audited import ProgramAudit
    from weak_bpf.program.installed import InstalledProgram

    def advice(*checks: Check) -> list[str]:
        result = Result(Verdict.UNKNOWN, checks)
        audit = ProgramAudit(InstalledProgram("usr/lib/bpf/x.bpf.o", "x.bpf.o", None), None, {})
        audit.results["K"] = (result, False)
        doc = report.explain_json(audit)
        return doc["kernels"]["K"]["advice"]  # type: ignore[index]

    fail = Check(Area.ATTACH, Outcome.FAIL, "s", "d", ReasonCode.ATTACH_TARGET, "f")
    kernel = Check(Area.ATTACH, Outcome.UNDECIDED, "s", "d", ReasonCode.ATTACH_TARGET, "f", "p")
    loader = Check(Area.ATTACH, Outcome.UNDECIDED, "struct_ops m", "d", ReasonCode.ATTACH_TARGET)
    data = Check(Area.ATTACH, Outcome.UNDECIDED, "s", "d", ReasonCode.KERNEL_DATA_MISSING, "f")
    verify = (
        "'weak-bpf-progs verify K' lets K's own verifier decide, in a VM; or ask the package's "
        "vendor"
    )
    assert advice(kernel) == [verify]
    assert advice(kernel, kernel) == [verify]
    assert advice(loader) == [
        "whether it loads on K depends on the loader shipped with the package (see the '??' "
        "line): ask its vendor"
    ]
    assert advice(fail)[0].startswith("update the package to a build for K")
    assert advice(data)[0].startswith("the undecided checks say what K lacks")
    assert len(advice(fail, kernel, loader, data)) == 4
