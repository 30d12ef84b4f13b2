"""Model speed: forward time per stage at the paper preset, training steps/s at the
cpu-small preset, and the head-pose sampler cached vs naive.

    python benchmarks/bench_models.py [--device auto|cpu|cuda] [--threads N]

The paper reports 27.4 ms per frame for the whole animation on an RTX 2080; the forward
times here are per frame (the renderer) or per 60-frame second of audio (the sequence
models), so a GPU user can compare.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from lsp_models.apc import APC, APCConfig
from lsp_models.headpose import HeadPoseConfig, HeadPoseModel, benchmark_samplers
from lsp_models.mouth import AudioToMouth, MouthConfig
from lsp_models.renderer import Generator, GeneratorConfig

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()
