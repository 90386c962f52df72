"""The command line, in-process through cli.main() and once as `python3 -m weak_bpf`, on an example
root built from the real Debian kernels and the example programs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from weak_bpf import cli
from weak_bpf.cli_parser import normalise

import exampleroot
from conftest import REPO


@pytest.fixture(scope="module")
def example_root(tmp_path_factory: pytest.TempPathFactory, debian_kernels: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("example") / "root"
    exampleroot.build_example_root(root, debian_kernels)
    return root


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(args)
    out, err = capsys.readouterr()
    return status, out, err


def test_module_entry_point_runs_from_the_checkout() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "weak_bpf", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert "kernels" in proc.stdout and "inspect" in proc.stdout


def test_kernels_lists_both_kernels_with_their_artifacts(
    example_root: Path, debian_kernels: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(["--root", str(example_root), "kernels"], capsys)
    assert status == 0, err
    old, new = sorted(debian_kernels)
    assert out.index(old) < out.index(new)
    assert f"usr/lib/modules/{new}/symvers.gz: " in out
    assert "(inside the kernel image): 9" in out  # ~95k types read from the vmlinuz
    assert "a placeholder without symbols" in out  # Debian's System.map
    assert "1121 files" in out


def test_kernels_reads_the_btf_an_audit_cached(
    example_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kernels` reads a kernel's BTF as an audit does: unpacked from the image once, then
    from the cache."""
    assert run(["--root", str(example_root), "kernels"], capsys)[0] == 0

    def no_unpacking(*args: object, **kwargs: object) -> None:
        raise AssertionError("the image was unpacked again")

    monkeypatch.setattr("weak_bpf.kernel.load.load_kernel_btf", no_unpacking)
    status, out, err = run(["--root", str(example_root), "kernels"], capsys)
    assert status == 0, err
    assert out.count("(inside the kernel image): 9") == 2, out


def test_kernels_unknown_version_is_a_usage_error(
    example_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(["--root", str(example_root), "kernels", "9.9.9"], capsys)
    assert status == cli.Exit.USAGE
    assert "9.9.9 is not installed" in err and "hint:" in err


def test_inspect_shows_kfuncs_and_attach_targets(
    example_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        [
            "inspect",
            "usr/lib/bpf/acme-net/xdp_ct.bpf.o",
            "usr/lib/bpf/acme-trace/open_count.bpf.o",
            "--root",  # global options work after the command too
            str(example_root),
        ],
        capsys,
    )
    assert status == 0, err
    assert out.startswith("usr/lib/bpf/acme-net/xdp_ct.bpf.o\n")
    assert "bpf_xdp_ct_lookup (func, typed)" in out
    assert "open_count [fentry/do_sys_openat2] tracing, attaches to do_sys_openat2" in out
    assert re.search(r"^  greylist +none$", out, re.MULTILINE)


def test_inspect_names_the_greylist_shipped_beside_the_object(
    example_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = "usr/lib/bpf/globex-net/ct_keepalive.bpf.o"
    status, out, err = run(["--root", str(example_root), "inspect", obj], capsys)
    assert status == 0, err
    assert re.search(rf"^  greylist +{re.escape(obj)}\.greylist$", out, re.MULTILINE), out


@pytest.mark.parametrize(
    ("link", "shown"),
    [
        ("real.greylist", "{obj}.greylist"),  # a link inside the root: the name beside it
        ("/etc/passwd", "{obj}.greylist: the greylist is not a readable file"),  # absent in root
        ("{outside}", "{obj}.greylist: the greylist is not a readable file"),  # a real file
        (None, "none"),
    ],
    ids=["inside", "dangling-in-root", "out-of-root", "none"],
)
def test_inspect_and_audit_find_the_same_sidecar_greylist(
    example_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    link: str | None,
    shown: str,
) -> None:
    """`inspect` looks the greylist up as the installed programs are read: inside the root."""
    from weak_bpf.program.installed import InstalledProgram, load_program

    root, obj = tmp_path / "root", "usr/lib/bpf/vendor/ct_keepalive.bpf.o"
    shipped = example_root / "usr/lib/bpf/globex-net/ct_keepalive.bpf.o"
    (root / obj).parent.mkdir(parents=True)
    shutil.copyfile(shipped, root / obj)
    shutil.copyfile(f"{shipped}.greylist", (root / obj).parent / "real.greylist")
    (tmp_path / "outside").write_text("vmlinux 0x12345678 outside_of_the_root\n")
    if link is not None:
        # "{outside}": a relative link that climbs out of the root to a real greylist
        outside = os.path.relpath(tmp_path / "outside", (root / obj).parent)
        (root / f"{obj}.greylist").symlink_to(link.format(outside=outside))
        if link == "{outside}":  # followed on the host, it reaches a readable greylist
            assert (root / f"{obj}.greylist").is_file()
    status, out, err = run(["--root", str(root), "inspect", obj], capsys)
    assert status == 0, err
    row = re.search(r"^  greylist +(.*)$", out, re.MULTILINE)
    assert row is not None and row[1].startswith(shown.format(obj=obj)), out
    loaded = load_program(root, InstalledProgram(obj, "ct_keepalive.bpf.o", None))
    if link is None:
        assert (loaded.error, loaded.greylist) == (None, None)
    elif link == "real.greylist":
        assert loaded.error is None and loaded.greylist is not None
    else:
        assert loaded.error is not None and row[1] == loaded.error


def test_inspect_verbose_names_core_relocations(
    example_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(
        ["--root", str(example_root), "-v", "inspect", "usr/lib/bpf/acme-trace/exec_state.bpf.o"],
        capsys,
    )
    assert status == 0
    assert "field_exists task_struct (0:1)" in out


def test_inspect_bad_object_reports_and_goes_on(
    example_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.bpf.o"
    bad.write_bytes(b"\x7fELF" + b"\0" * 10)
    status, out, err = run(
        ["--root", str(example_root), "inspect", str(bad), "usr/lib/bpf/acme-sec/task_guard.bpf.o"],
        capsys,
    )
    assert status == cli.Exit.USAGE
    assert str(bad) in err
    assert "license     Proprietary" in out  # the good object after the bad one is still shown


# --- audit, explain, greylist, symvers: exit codes and bad input --------------------------------


def test_audit_exit_codes_and_json(example_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["--root", str(example_root), "audit", "--json"], capsys)
    assert status == cli.Exit.FINDINGS  # the proprietary program is incompatible
    doc = json.loads(out)  # exactly one JSON document
    assert doc["version"] == 1 and doc["root"] == str(example_root)
    assert all(p["path"].startswith("usr/lib/") for p in doc["programs"])
    status, out, _ = run(
        ["--root", str(example_root), "audit", "--program", "acme-trace/*"], capsys
    )
    assert status == cli.Exit.OK
    assert "exec_state" in out and "task_guard" not in out
    assert "2 of 2 programs usable" in out


OLD, NEW = "6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"
C, INC, UNSTABLE = "compatible", "incompatible", "compatible-unstable"
# Each example program's verdicts and reason codes, as its comment states them; checked once by
# hand against real loads on both kernels under qemu (the automated real loads are of their
# break_* counterparts in test_matrix).
EXAMPLE_VERDICTS = {
    "usr/lib/bpf/acme-fs/buddy_load.bpf.o": {OLD: (C, ()), NEW: (INC, ("core-relo",))},
    "usr/lib/bpf/acme-net/tcp_retrans.bpf.o": {OLD: (C, ()), NEW: (C, ())},
    "usr/lib/bpf/acme-net/xdp_ct.bpf.o": {OLD: (C, ()), NEW: (C, ())},
    "usr/lib/bpf/acme-power/padata_offline.bpf.o": {OLD: (C, ()), NEW: (INC, ("core-relo",))},
    "usr/lib/bpf/acme-sec/task_guard.bpf.o": {
        # bpf_task_acquire and bpf_task_release came after 6.1
        OLD: (INC, ("kfunc-missing", "license")),
        NEW: (INC, ("kfunc-missing", "license")),
    },
    "usr/lib/bpf/acme-trace/exec_state.bpf.o": {OLD: (C, ()), NEW: (C, ())},
    "usr/lib/bpf/acme-trace/open_count.bpf.o": {OLD: (C, ()), NEW: (C, ())},
    # its greylist, made against OLD: no kABI stablelist on Debian
    "usr/lib/bpf/globex-net/ct_keepalive.bpf.o": {OLD: (UNSTABLE, ()), NEW: (UNSTABLE, ())},
    "usr/lib/bpf/globex-obs/epoll_leak.bpf.o": {OLD: (C, ()), NEW: (INC, ("attach-target",))},
    "usr/lib/bpf/globex-storage/bitmap_release.bpf.o": {OLD: (C, ()), NEW: (C, ())},
    f"usr/lib/modules/{OLD}/bpf/extra/acme-net/xdp_ct.bpf.o": {
        OLD: ("native", ()),
        NEW: (C, ()),
    },
}


def test_the_example_programs_verdicts(
    example_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The story the demo tells: what works on the old kernel, and what the new one breaks."""
    status, out, _ = run(["--root", str(example_root), "audit", "--json"], capsys)
    assert status == cli.Exit.FINDINGS
    got = {
        p["path"]: {
            kver: (r["verdict"], tuple(sorted({reason["code"] for reason in r["reasons"]})))
            for kver, r in p["results"].items()
        }
        for p in json.loads(out)["programs"]
    }
    assert got == EXAMPLE_VERDICTS
    status, out, _ = run(
        ["--root", str(example_root), "explain", "usr/lib/bpf/globex-net/ct_keepalive.bpf.o"],
        capsys,
    )
    assert status == cli.Exit.OK
    assert "greylist: usr/lib/bpf/globex-net/ct_keepalive.bpf.o.greylist (3 symbols)" in out


def test_audit_jobs_must_be_a_number_of_processes(
    example_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("0", "many", "-3"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["--root", str(example_root), "audit", "--jobs", bad])
        assert exit_info.value.code == cli.Exit.USAGE
        assert "is not a number of processes" in capsys.readouterr().err
    status, out, _ = run(["--root", str(example_root), "audit", "-j", "1", "--json"], capsys)
    assert status == cli.Exit.FINDINGS and json.loads(out)["programs"]


def test_audit_of_a_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["--root", str(tmp_path / "nowhere"), "audit"], capsys)
    assert status == cli.Exit.USAGE and "no such directory" in err


def test_explain_of_a_file_that_is_no_bpf_object(
    example_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(b"not an object")
    status, out, _ = run(["--root", str(example_root), "explain", str(junk)], capsys)
    assert status == cli.Exit.OK
    assert "malformed" in out and "not an ELF file" in out
    status, _, err = run(["--root", str(example_root), "explain", "nowhere.bpf.o"], capsys)
    assert status == cli.Exit.USAGE and "no such BPF object" in err


def test_greylist_and_symvers_usage_errors(
    example_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = "usr/lib/bpf/acme-net/xdp_ct.bpf.o"
    status, _, err = run(
        [
            "--root",
            str(example_root),
            "greylist",
            obj,
            "--kernel",
            "6.1.0-47-cloud-amd64",
            "--symvers",
            "x",
        ],
        capsys,
    )
    assert status == cli.Exit.USAGE and "--symvers needs --btf" in err
    assert "hint: drop --symvers" in err
    status, _, err = run(["--root", str(example_root), "symvers", "9.9.9"], capsys)
    assert status == cli.Exit.USAGE and "9.9.9 is not installed" in err
    status, out, _ = run(
        ["--root", str(example_root), "greylist", obj, "--kernel", "6.1.0-47-cloud-amd64"], capsys
    )
    assert status == cli.Exit.OK
    assert "bpf_xdp_ct_lookup\tnf_conntrack\tEXPORT_SYMBOL_BPF_GPL__acquires" in out
    assert "# build-kernel: 6.1.0-47-cloud-amd64" in out


def test_weak_modules_spellings() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(normalise(["--basedir", "/srv/root", "--add-kernel", "5.14.0"]))
    assert (args.verb, args.kernel, args.root) == ("add-kernel", "5.14.0", Path("/srv/root"))
    args = parser.parse_args(normalise(["--remove-kernel", "5.14.0", "--dry-run"]))
    assert (args.verb, args.kernel, args.dry_run) == ("remove-kernel", "5.14.0", True)
    for spelling, verb in (("--add-modules", "add-progs"), ("--remove-modules", "remove-progs")):
        assert parser.parse_args(normalise([spelling])).verb == verb


def test_regression_a_nul_byte_in_an_argument(
    example_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by the CLI fuzzing (harden/fuzz.py): main() called from Python with a NUL in a
    path ended in an internal ValueError ("embedded null byte")."""
    for args in (["inspect", "usr/lib/bpf\0x"], ["explain", "\0"], ["add-kernel", "6.1\0"]):
        status, _, err = run(["--root", str(example_root), *args], capsys)
        assert status == cli.Exit.USAGE
        assert "NUL byte" in err and "internal error" not in err


def test_inspect_of_an_endless_file_stops_at_the_object_limit(
    example_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(["--root", str(example_root), "inspect", "/dev/zero"], capsys)
    assert status == cli.Exit.USAGE
    assert "/dev/zero: larger than 64 MiB, the most it reads" in err


def test_inspect_of_an_object_with_the_longest_file_name(
    example_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NAME.greylist is too long a name there (ENAMETOOLONG): no greylist, no error."""
    obj = tmp_path / ("x" * 248 + ".bpf.o")
    shutil.copyfile(example_root / "usr/lib/bpf/acme-trace/open_count.bpf.o", obj)
    status, out, err = run(["--root", str(example_root), "inspect", str(obj)], capsys)
    assert status == cli.Exit.OK, err
    assert re.search(r"^  greylist +none$", out, re.MULTILINE)


def test_greylist_of_a_program_whose_weak_kfuncs_the_kernel_lacks(
    example_root: Path, old_progs: dict[str, Path]
) -> None:
    """Weak kfuncs are tested with bpf_ksym_exists(): missing ones are no reason to fail."""
    args = ["--root", str(example_root), "greylist", str(old_progs["kfunc_weak"])]
    proc = subprocess.run(  # the warnings go through logging, to the process's stderr
        [sys.executable, "-m", "weak_bpf", *args, "--kernel", "6.1.0-47-cloud-amd64"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    status, err = proc.returncode, proc.stderr
    assert status == cli.Exit.OK
    assert "bpf_task_acquire is not provided by kernel 6.1.0-47-cloud-amd64" in err
    assert "a weak kfunc: the program runs without it" in err
    assert "cannot load" not in err and "hint:" not in err
