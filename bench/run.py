"""Run every benchmark in bench/ (bench_*.py), each in its own interpreter, and sum up.

Each benchmark prints its figures next to its targets and exits 1 when a target is missed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        proc = subprocess.run([sys.executable, str(script)], cwd=HERE.parent, check=False)
        if proc.returncode != 0:
            failed.append(script.name)
        print(flush=True)
    if failed:
        print(f"targets missed in: {', '.join(failed)}")
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
