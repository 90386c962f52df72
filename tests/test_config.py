"""The configuration file: values, drop-in order, and errors that name the file at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from weak_bpf.config import Config, load_config, parse_config
from weak_bpf.errors import FormatError


def test_defaults_and_values(tmp_path: Path) -> None:
    assert load_config(tmp_path) == Config()
    (tmp_path / "etc/weak-bpf-progs.conf.d").mkdir(parents=True)
    (tmp_path / "etc/weak-bpf-progs.conf").write_text(
        "[main]\nlink_unstable = no  # comment\nlock_timeout = 5\n"
    )
    (tmp_path / "etc/weak-bpf-progs.conf.d/20-late.conf").write_text("[main]\nlock_timeout = 9\n")
    (tmp_path / "etc/weak-bpf-progs.conf.d/10-kabi.conf").write_text(
        "[kernel 5.14.0-427.el9.x86_64]\nkabi_stablelist = /usr/lib/kabi/list\n"
    )
    (tmp_path / "etc/weak-bpf-progs.conf.d/30-daemon.conf").write_text(
        "[main]\ndaemon_max_reads = 3\n"
    )
    config = load_config(tmp_path)
    assert (config.link_unstable, config.lock_timeout) == (False, 9.0)
    assert config.daemon_max_reads == 3
    assert Config().daemon_max_reads == 8
    assert config.kabi_override("5.14.0-427.el9.x86_64") == "usr/lib/kabi/list"
    assert config.kabi_override("other") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[main]\nlink_unstable = perhaps\n", "link_unstable = 'perhaps': expected yes or no"),
        ("[main]\nlock_timeout = soon\n", "lock_timeout = 'soon': not a number of seconds"),
        ("[main]\ncolour = yes\n", "unknown option 'colour' (known: link_unstable"),
        ("[main]\ndaemon_max_reads = 0\n", "daemon_max_reads = '0': expected a whole number"),
        ("[main]\ndaemon_max_reads = many\n", "daemon_max_reads = 'many': expected a whole"),
        ("[main]\ndaemon_max_reads = 2.5\n", "daemon_max_reads = '2.5': expected a whole"),
        ("[kernel K]\nlink_unstable = no\n", "[kernel K]: unknown option 'link_unstable'"),
        ("[misc]\n", "unknown section [misc]"),
        ("link_unstable = no\n", "File contains no section headers"),
    ],
)
def test_errors_name_the_file(text: str, message: str) -> None:
    good = ("etc/weak-bpf-progs.conf", "[main]\nlink_unstable = yes\n")
    with pytest.raises(FormatError) as caught:
        parse_config([good, ("etc/weak-bpf-progs.conf.d/bad.conf", text)])
    assert caught.value.source == "etc/weak-bpf-progs.conf.d/bad.conf"
    assert message in str(caught.value)
    assert caught.value.hint and "uses the defaults" in caught.value.hint
