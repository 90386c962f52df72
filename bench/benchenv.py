"""How the benchmarks run the tool: byte-compiled, as a package installs it.

A development shell may set PYTHONDONTWRITEBYTECODE; every run would then compile the whole
package again, some 50 ms that no installed system pays. The runs get a byte-code cache of their
own, outside the tree, filled once here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYCACHE = Path(tempfile.gettempdir()) / f"weak-bpf-progs-bench-pycache-{os.getuid()}"


def tool_env() -> dict[str, str]:
    """The environment for a run of the tool, its byte code compiled."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "weak_bpf")],
        env=env,
        check=True,
    )
    return env


def profile(argv: list[str], env: dict[str, str], top: int = 12) -> str:
    """The functions of weak_bpf that one run of the tool spends most time in (cumulative)."""
    script = (
        "import cProfile, pstats, io, runpy, sys\n"
        f"sys.argv = {['weak_bpf', *argv]!r}\n"
        "p = cProfile.Profile()\n"
        "try:\n"
        "    p.runcall(runpy.run_module, 'weak_bpf', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "out = io.StringIO()\n"
        f"pstats.Stats(p, stream=out).sort_stats('cumulative').print_stats('weak_bpf', {top})\n"
        "sys.stderr.write(out.getvalue())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), len(lines))
    return "\n".join(lines[start : start + top + 1])


def import_times(argv: list[str], env: dict[str, str], top: int = 6) -> str:
    """The slowest imports of one run (python3 -X importtime), cumulative microseconds."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "weak_bpf", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit():
                rows.append((int(cumulative), name.rstrip()))
    rows.sort(reverse=True)
    return "\n".join(f"  {us / 1000:7.1f} ms {name}" for us, name in rows[:top])
