"""The man pages: built from docs/man/*.rst by scripts/make-man, rendered by man(1) without a
warning, and complete: every command and option of the CLI is in weak-bpf-progs(8)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from weak_bpf import cli, cli_parser

from conftest import REPO, require_tool

PAGES = (
    "weak-bpf-progs.8",
    "weak-bpf-progsd.8",
    "weak-bpf-progs.conf.5",
    "weak-bpf-progs-greylist.5",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("rst2man")
    out = tmp_path_factory.mktemp("man")
    subprocess.run([str(REPO / "scripts/make-man"), str(out)], check=True, capture_output=True)
    return out


def render(page: Path) -> str:
    proc = subprocess.run(
        [require_tool("man"), "--warnings", "-l", str(page)],
        env={**os.environ, "MANWIDTH": "100", "LC_ALL": "C", "MANROFFOPT": "-c -rHY=0"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return re.sub(".\x08", "", proc.stdout)  # overstrike bold and underline


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(built: Path, page: str) -> None:
    text = render(built / page)
    name, section = page.rsplit(".", 1)
    assert text.startswith(f"{name.upper()}({section})")
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"):
        assert f"\n{heading}\n" in text, heading


def test_every_command_and_option_is_documented(built: Path) -> None:
    text = render(built / "weak-bpf-progs.8")
    for verb in cli.Verb:
        assert verb.value in text, verb
    for alias in cli_parser.ALIASES:
        assert alias in text, alias
    parser = cli.build_parser()
    for action in parser._actions:
        for option in action.option_strings:
            assert option in text, option
    for code in cli.Exit:
        assert re.search(rf"\n {{7}}{code.value}\s", text), code


def test_the_daemon_page_covers_the_d_bus_api(built: Path) -> None:
    import xml.etree.ElementTree as ET

    text = render(built / "weak-bpf-progsd.8")
    interface = ET.parse(REPO / "dbus/org.weakbpf.Manager1.xml").getroot().find("interface")
    assert interface is not None
    names = [e.get("name", "") for e in interface if e.tag in ("method", "property", "signal")]
    assert len(names) == 10
    for name in names:
        assert name in text, name
    for option in ("--root", "--idle-timeout", "--no-journal", "--debug"):
        assert option in text, option
