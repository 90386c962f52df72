"""docs/distribution-ci.md, run as written: independent `audit --json` jobs, one per package set
and kernel set, joined by the documented `jq` steps, give what one audit of everything gives."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, audit_json, require_tool
from exampleroot import build_example_root, copy_root

DOC = REPO / "docs/distribution-ci.md"


def jq_steps() -> list[str]:
    """The doc's shell blocks that start with jq: the join, the table, the failures."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return [b for b in blocks if b.startswith("jq ")]


@pytest.fixture(scope="module")
def jobs(
    tmp_path_factory: pytest.TempPathFactory, debian_kernels: dict[str, Path]
) -> tuple[Path, dict]:
    """Four jobs' reports (two package sets x two kernels) in a directory, and the audit of a
    root that holds everything."""
    require_tool("jq")
    work = tmp_path_factory.mktemp("distribution-ci")
    full = work / "full"
    build_example_root(full, debian_kernels)
    vendors = sorted(p.name for p in (full / "usr/lib/bpf").iterdir())
    assert len(vendors) >= 2
    package_sets = [vendors[::2], vendors[1::2]]
    reports = work / "reports"
    reports.mkdir()
    for kver in debian_kernels:
        for n, package_set in enumerate(package_sets):
            root = copy_root(full, work / f"job-{kver}-{n}")
            for other in set(debian_kernels) - {kver}:  # the kernel goes, its native programs stay
                for path in (root / "usr/lib/modules" / other).iterdir():
                    if path.is_dir() and path.name != "bpf":
                        shutil.rmtree(path)
                    elif not path.is_dir():
                        path.unlink()
            for vendor in set(vendors) - set(package_set):
                shutil.rmtree(root / "usr/lib/bpf" / vendor)
            report = audit_json(root)
            assert report["kernels"] == [kver]
            (reports / f"report-{kver}-{n}.json").write_text(json.dumps(report))
    return reports, audit_json(full)


def test_the_doc_has_the_three_jq_steps() -> None:
    steps = jq_steps()
    assert len(steps) == 3
    assert "report-*.json > release.json" in steps[0]


def test_joined_reports_equal_one_audit_of_everything(jobs: tuple[Path, dict]) -> None:
    reports, whole = jobs
    subprocess.run(["sh", "-ec", jq_steps()[0]], cwd=reports, check=True)
    joined = json.loads((reports / "release.json").read_text())
    assert joined["version"] == whole["version"] == 1
    assert joined["kernels"] == sorted(whole["kernels"])
    assert len(whole["programs"]) >= 10
    by_path = {p["path"]: p for p in joined["programs"]}
    assert sorted(by_path) == sorted(p["path"] for p in whole["programs"])
    for program in whole["programs"]:
        assert by_path[program["path"]] == program, program["path"]


def test_table_and_failures_follow_the_joined_report(jobs: tuple[Path, dict]) -> None:
    require_tool("column")
    reports, whole = jobs
    steps = jq_steps()
    subprocess.run(["sh", "-ec", steps[0]], cwd=reports, check=True)
    table = subprocess.run(
        ["sh", "-ec", steps[1]], cwd=reports, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert table[0].split() == ["program", *sorted(whole["kernels"])]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    failures = set()
    for program in whole["programs"]:
        verdicts = [program["results"][k]["verdict"] for k in sorted(whole["kernels"])]
        assert rows[program["path"]] == verdicts
        failures |= {
            (program["path"], k)
            for k, result in program["results"].items()
            if result["verdict"] in ("incompatible", "unknown")
        }
    assert failures, "the example root has programs that do not load on some kernel"
    listed = subprocess.run(
        ["sh", "-ec", steps[2]], cwd=reports, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert {tuple(line.split()[:2]) for line in listed} == failures
