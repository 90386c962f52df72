"""weak-bpf-progsd: the D-Bus daemon (SPEC §7).

    python3 -m weak_bpf.daemon [--root DIR] [--idle-timeout SECONDS] [--debug]

It connects to the system bus, or to the one DBUS_SYSTEM_BUS_ADDRESS names.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from weak_bpf import __version__
from weak_bpf.apply import journal

log = logging.getLogger("weak-bpf-progsd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weak-bpf-progsd",
        description="Serve org.weakbpf.Manager1 on the system bus.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="serve the system installed under DIR (default: /)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="exit after this long without a call (default: 60; 0: never)",
    )
    parser.add_argument(
        "--no-journal",
        action="store_true",
        help="do not send resolution reports to the journal (they go to stderr)",
    )
    parser.add_argument("--debug", action="store_true", help="log every call, with tracebacks")
    return parser


def _setup_logging(debug: bool) -> None:
    """Run by systemd (JOURNAL_STREAM: stderr goes to the journal), log structured entries
    through systemd.journal, as the reports are sent; else, or where journal.py finds no journal
    (no python3-systemd, no journald socket), one line per record on stderr."""
    level = logging.DEBUG if debug else logging.INFO
    handler = journal.log_handler("weak-bpf-progsd") if os.environ.get("JOURNAL_STREAM") else None
    if handler is not None:  # PRIORITY and SYSLOG_IDENTIFIER say the rest
        logging.basicConfig(level=level, handlers=[handler], format="%(message)s")
    else:
        logging.basicConfig(level=level, format="weak-bpf-progsd: %(levelname)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.debug)
    if args.idle_timeout < 0:
        log.error("--idle-timeout must be 0 (never) or more")
        return 2
    root = Path(os.path.abspath(args.root))
    if not root.is_dir():
        log.error("%s: no such directory", root)
        log.error("hint: --root names an installed system")
        return 2
    from weak_bpf.daemon.service import Service  # gi loads only here

    service = Service(root, idle_timeout=args.idle_timeout, journal=not args.no_journal)
    return service.run()


if __name__ == "__main__":
    sys.exit(main())
