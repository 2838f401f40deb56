"""Run every benchmark in one go (``make bench``); each prints its numbers and ratios.

    .venv/bin/python benchmarks/run_all.py [--threads 1]

Extra arguments are passed to every script (e.g. ``--threads 1``, ``--json``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = ("bench_introduce.py", "bench_inference.py", "bench_node.py")


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in SCRIPTS:
        print(f"\n=== {script} {' '.join(argv)}", flush=True)
        result = subprocess.run([sys.executable, str(here / script), *argv], check=False)
        if result.returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
