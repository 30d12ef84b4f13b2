"""Animation latency per stage, ms per 60 FPS video frame, for the cpu-small and paper presets.

    python benchmarks/bench_animate.py [--dataset H5] [--seconds 10] [--device cpu]
                                       [--threads N] [--presets cpu-small,paper]

Models are built from the presets with random weights (timing does not depend on training);
the person (landmark tracks, camera, shoulders, candidates) comes from a real prepped
dataset (default: the sample clip, prepped once into a cache folder). The motion stages run
through the streaming API in 1 s chunks, exactly as ``lsp animate`` does (a push of a few
frames costs the projection one full pass over the database, ~5 ms at 18k x 1024, whatever
its length); the one-off setup (projection index, stream start) is reported apart; the renderer is
timed on batches of feature maps (float32 and bfloat16 autocast), the encoder on frames
piped into ffmpeg. Targets: everything but the renderer >= 20x real time at 60 FPS
(<= 0.83 ms per frame), end-to-end within 1.2x of the renderer alone, peak memory flat in the
audio's length. The paper reports 27.4 ms per frame in total on an RTX 2080.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from lsp_models.config import load_preset
from lsp_models.infer.config import AnimateConfig
from lsp_models.infer.loading import Models, load_person
from lsp_models.infer.predict import render, resized_candidates
from lsp_models.infer.stream import AnimationStream
from lsp_models.infer.video import VideoWriter
from lsp_models.nets.apc import APC
from lsp_models.nets.generator import Generator
from lsp_models.nets.headpose import HeadPoseModel
from lsp_models.nets.mouth import AudioToMouth
from lsp_prep.constants import SAMPLE_RATE

console = Console()
PAPER_TOTAL_MS = 27.4
MOTION = ("mel", "apc", "projection", "mouth", "headpose", "postprocess", "drawing")
SR = SAMPLE_RATE


def default_dataset() -> Path:
    from lsp_prep.pipeline import prep_video
    from lsp_synth.samples import cache_dir, fetch

    out = cache_dir() / "bench_animate"
    final = out / "single_face.h5"
    return final if final.exists() else prep_video(fetch("single_face"), out_dir=out).dataset


def random_models(preset: str, dataset: Path, device: torch.device) -> Models:
    """The preset's networks with random weights, normalised like a trained run."""
    from lsp_models.train.data import load_person as load_training_person
    from lsp_models.train.headpose import pose_features

    torch.manual_seed(0)
    cfg = load_preset(preset)
    apc = APC(cfg.apc).eval().to(device)
    width = 2 * cfg.apc.hidden
    mouth = AudioToMouth(dataclasses.replace(cfg.mouth, audio_dim=width))
    hp = HeadPoseModel(dataclasses.replace(cfg.headpose, audio_dim=width))
    person = load_training_person(dataset)
    pose = pose_features(person)[person.train]
    return Models(
        apc=apc,
        mel_mean=np.zeros(80, np.float32),
        mel_std=np.full(80, 3.0, np.float32),
        database=torch.randn(18000, width, device=device),  # a 5-minute clip's train split
        mouth=mouth.eval().to(device),
        target_mean=np.zeros(75, np.float32),
        headpose=hp.eval().to(device),
        pose_mean=pose.mean(0).astype(np.float64),
        pose_std=pose.std(0).astype(np.float64) + 1e-6,
        generator=Generator(cfg.renderer.generator).eval().to(device),
        device=device,
    )


def speech(seconds: float) -> np.ndarray:
    from lsp_prep.media import load_audio
    from lsp_synth.samples import fetch

    y = load_audio(fetch("speech"), sr=SR)
    return np.resize(y, int(seconds * SR)).astype(np.float32)


def run_stream(models, person, y, *, render: bool, writer=None, chunk_s: float = 1.0):
    stream = AnimationStream(models, person, config=AnimateConfig(), seed=0, render=render)
    chunk, n = int(chunk_s * SR), 0
    pieces = [y[s : s + chunk] for s in range(0, len(y), chunk)]
    for piece in [*pieces, None]:
        frames = stream.push(piece) if piece is not None else stream.finish()
        if writer is not None and frames:
            writer.write(np.stack([f.image for f in frames]))
        n += len(frames)
    return stream, n


def setup_ms(models, person) -> tuple[float, float]:
    """One-off costs the per-frame stages leave out: the projection index (database norms,
    once per loaded model) and starting a stream (pose history, the sampler's weights)."""
    t = time.perf_counter()
    _ = models.manifold  # built on first use, then kept
    index = time.perf_counter() - t
    start = []
    for _ in range(2):  # the first also reads the dataset's pose track from disk: report warm
        t = time.perf_counter()
        AnimationStream(models, person, config=AnimateConfig(), seed=0, render=False)
        start.append(time.perf_counter() - t)
    return 1e3 * index, 1e3 * start[-1]


def motion_ms(models, person, seconds: float) -> tuple[dict[str, float], int]:
    y = speech(seconds)
    run_stream(models, person, y[: SR // 2], render=False)  # warm-up
    stream, n = run_stream(models, person, y, render=False)
    return {k: 1e3 * stream.timings[k] / n for k in MOTION}, n


def renderer_ms(models, person, frames: int, precision: str) -> float:
    cfg = AnimateConfig(precision=precision)  # type: ignore[arg-type]
    size = models.image_size
    maps = np.zeros((frames, size, size), np.uint8)
    maps[:, size // 4 : 3 * size // 4, size // 2] = 255
    cand = torch.from_numpy(resized_candidates(person, size)).to(models.device)
    render(models, maps[: cfg.render_batch], cand, config=cfg)  # warm-up
    t = time.perf_counter()
    render(models, maps, cand, config=cfg)
    return 1e3 * (time.perf_counter() - t) / frames


def encoding_ms(size: int, frames: int) -> float:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
    img[:] = img[:1]  # a steady picture, like a talking head
    with tempfile.TemporaryDirectory() as tmp:
        w = VideoWriter(Path(tmp) / "x.mp4", fps=60, size=size, audio=None)
        for i in range(0, frames, 4):
            w.write(img[i : i + 4])
        w.close()
        return 1e3 * w.seconds / frames


def end_to_end_ms(models, person, seconds: float) -> tuple[float, int]:
    y = speech(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        w = VideoWriter(Path(tmp) / "x.mp4", fps=60, size=models.image_size, audio=None)
        t = time.perf_counter()
        _, n = run_stream(models, person, y, render=True, writer=w)
        w.close()
        return 1e3 * (time.perf_counter() - t) / n, n


def _peak_rss(args) -> float:
    preset, dataset, seconds = args
    torch.set_num_threads(1)
    models = random_models(preset, dataset, torch.device("cpu"))
    person = load_person(dataset)
    run_stream(models, person, speech(seconds), render=True)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio for the motion stages")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--presets", default="cpu-small,paper")
    ap.add_argument("--render-frames", type=int, default=0, help="0: 32 (cpu-small), 4 (paper)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dataset = args.dataset or default_dataset()
    person = load_person(dataset)
    table = Table(
        title=f"lsp animate, ms per 60 FPS frame on {dev} ({torch.get_num_threads()} "
        f"threads); {args.seconds:g} s of speech"
    )
    table.add_column("stage")
    presets = args.presets.split(",")
    for p in presets:
        table.add_column(p, justify="right")
    rows: dict[str, list[str]] = {}
    notes = []
    for p in presets:
        models = random_models(p, dataset, dev)
        index_ms, start_ms = setup_ms(models, person)
        size = models.image_size
        motion, n = motion_ms(models, person, args.seconds)
        k = args.render_frames or (32 if size <= 256 else 4)
        r32 = renderer_ms(models, person, k, "float32")
        r16 = renderer_ms(models, person, k, "bfloat16")
        enc = encoding_ms(size, 120)
        e2e_s = min(args.seconds, 2.0 if size <= 256 else 0.2)
        e2e, n_e2e = end_to_end_ms(models, person, e2e_s)
        best = min(r32, r16)
        for key, val in motion.items():
            rows.setdefault(key, []).append(f"{val:.3f}")
        rows.setdefault("motion total (target <= 0.83)", []).append(f"{sum(motion.values()):.3f}")
        rows.setdefault("renderer size (px)", []).append(str(size))
        rows.setdefault("renderer float32", []).append(f"{r32:.1f}")
        rows.setdefault("renderer bfloat16 autocast", []).append(f"{r16:.1f}")
        rows.setdefault("encoding (x264 veryfast)", []).append(f"{enc:.2f}")
        rows.setdefault("end-to-end, float32 renderer", []).append(f"{e2e:.1f}")
        rows.setdefault("end-to-end / renderer (target <= 1.2)", []).append(f"{e2e / r32:.2f}")
        rows.setdefault("x real time, motion only", []).append(
            f"{1000 / 60 / sum(motion.values()):.0f}x"
        )
        notes.append(
            f"{p}: motion over {n} frames, end-to-end over {n_e2e} frames, "
            f"best renderer {best:.1f} ms; once: projection index "
            f"({len(models.database)} entries) {index_ms:.0f} ms, stream start "
            f"{start_ms:.0f} ms"
        )
    for key, vals in rows.items():
        table.add_row(key, *vals)
    table.add_row("paper total, RTX 2080", *[f"{PAPER_TOTAL_MS}"] * len(presets))
    console.print(table)
    for line in notes:
        console.print(line)
    ctx = mp.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        rss = {s: pool.map(_peak_rss, [("cpu-small", dataset, s)])[0] for s in (10.0, 30.0)}
    console.print(
        "peak RSS of a process streaming cpu-small with rendering: "
        + ", ".join(f"{s:g} s of audio {m:.0f} MB" for s, m in rss.items())
    )


if __name__ == "__main__":
    main()
