"""Time of ``lsp doctor`` in a fresh process (imports included, as a user runs it), against
the issue's target of 5 s.

Prints wall seconds and CPU seconds (user + system) of the doctor process itself and of
its MediaPipe child. On a busy machine the wall time follows the load; the process's own
CPU time is the critical path on an idle one (the child runs beside it, on another core).

    python benchmarks/bench_doctor.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

TARGET_S = 5.0

# Runs the CLI in this child and reports its own CPU time beside the grandchild's.
PROBE = """
import resource, sys, time
from cli.main import app
try:
    app(["doctor"])
except SystemExit as exc:
    code = exc.code
own = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"CPU {own.ru_utime + own.ru_stime:.3f} {kids.ru_utime + kids.ru_stime:.3f} {code}")
"""


def run_once() -> tuple[float, float, float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )
    wall = time.perf_counter() - t0
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("CPU "))
    own, child, code = line.split()[1:]
    return wall, float(own), float(child), int(code or 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs = [run_once() for _ in range(args.repeat)]
    table = Table(title=f"lsp doctor, fresh process x{args.repeat}", title_justify="left")
    for col in ("measure", "median s", "min s", "max s", "target s", "ratio"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    rows = {
        "wall": [r[0] for r in runs],
        "CPU, doctor process": [r[1] for r in runs],
        "CPU, MediaPipe child": [r[2] for r in runs],
    }
    for name, values in rows.items():
        med = statistics.median(values)
        table.add_row(
            name,
            f"{med:.2f}",
            f"{min(values):.2f}",
            f"{max(values):.2f}",
            f"{TARGET_S:g}",
            f"{med / TARGET_S:.2f}",
        )
    Console().print(table)
    load = os.getloadavg()[0]
    print(f"exit codes {[r[3] for r in runs]}; load average {load:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
