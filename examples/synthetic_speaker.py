"""A mouth that follows speech: the pipeline on a synthetic speaker whose lip sync is known.

Run with `make demo-speaker`, or `python examples/synthetic_speaker.py [OUT_DIR]`. The
real-person demo (examples/quickstart.py, `make demo`) shows a real face, but its voice is
borrowed, so its mouth cannot follow the sound. This example shows the other half: a face
whose mouth is driven by its own voice through a known rule, so you can see (and measure)
whether the trained models learned lip sync.

1. fetch real speech of one speaker from a Debian package (asterisk-core-sounds-en-wav:
   25 minutes of telephone prompts read by one woman; cached outside the repository);
2. render a synthetic speaker (lsp_synth): a real photo's face (scikit-image's astronaut)
   as a textured 3D head that speaks 60 s of those prompts. Jaw, lips and mouth width
   follow the audio by the documented rule of lsp_synth/speaker.py (the mouth 40 ms ahead
   of the sound), the eyes blink and the head moves -> OUT/speaker.mp4;
3. `lsp prep` -> OUT/data/speaker.h5;
4. `lsp train all --preset cpu-small --corpus OUT/corpus` -> OUT/run/ (APC on the prompts
   that were not rendered: a speech corpus, as a user without one can take from Debian);
5. `lsp animate --save-intermediates` on 10 s of another speaker (pyannote's sample, never
   heard in training) -> OUT/animated.mp4, and prints how well the animated lip opening
   follows the opening the rule gives for that audio (Pearson r; 1 = perfect lip sync).

The cpu-small models train in minutes and do not reach the paper's quality; benchmarks/
lipsync.py measures the same thing at length (README, "Lip sync").
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lsp_prep.constants import FPS, SAMPLE_RATE
from lsp_prep.layout import load_layout
from lsp_prep.media import load_audio, run_ffmpeg
from lsp_synth import render3d
from lsp_synth.audio import write_wav
from lsp_synth.mesh import face_model
from lsp_synth.pinhole import Camera
from lsp_synth.portraits import astronaut_portrait
from lsp_synth.samples import fetch, fetch_package
from lsp_synth.speaker import SpeakerRule, lip_opening_cm

SECONDS = 60.0
"""Rendered speech: long enough for the mouth model to see every prompt sound."""


def lsp(*args: str) -> None:
    """Run one `lsp` command; stop the example if it fails (it printed why)."""
    print(f"\n$ lsp {' '.join(args)}", flush=True)
    code = subprocess.run([sys.executable, "-m", "cli.main", *args]).returncode
    if code:
        raise SystemExit(code)


def speaker_voice(out: Path) -> tuple[np.ndarray, Path]:
    """SECONDS of prompts (16 kHz) in a fixed order, and a corpus folder of the others."""
    root = fetch_package("asterisk_prompts")
    files = sorted(root.rglob("*.wav"))
    order = np.random.default_rng(0).permutation(len(files))
    parts, n, used = [], 0, set()
    for i in order:
        if n >= SECONDS * SAMPLE_RATE:
            break
        y = load_audio(files[i], sr=SAMPLE_RATE)
        parts += [y, np.zeros(SAMPLE_RATE // 4, np.float32)]
        n += len(y) + SAMPLE_RATE // 4
        used.add(i)
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        link = corpus / "_".join(f.relative_to(root).parts)
        if i not in used and not link.exists():
            link.symlink_to(f)
    return np.concatenate(parts)[: int(SECONDS * SAMPLE_RATE)], corpus


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out-speaker")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    y, corpus = speaker_voice(out)
    voice, video = out / "speaker.wav", out / "speaker.mp4"
    write_wav(voice, y, sr=SAMPLE_RATE)
    rule = SpeakerRule()
    model = face_model(astronaut_portrait().image)
    print(f"rendering {SECONDS:.0f} s of a synthetic speaker -> {video}", flush=True)
    render3d.render_head_clip(
        video,
        model=model,
        camera=Camera(focal=700.0, size=(640, 360)),
        duration_s=SECONDS,
        fps=30,
        motion=render3d.HeadMotion(yaw_deg=15, pitch_deg=8, roll_deg=4, distance_cm=55, seed=2),
        audio=y,
        speaker=rule,
    )
    lsp("prep", str(video), "-o", str(out / "data"), "--audio", str(voice))
    dataset, run = out / "data" / "speaker.h5", str(out / "run")
    lsp(
        "train",
        "all",
        "--run-dir",
        run,
        "--dataset",
        str(dataset),
        "--preset",
        "cpu-small",
        "--corpus",
        str(corpus),
    )
    heard = out / "new_speaker.wav"
    run_ffmpeg(["-y", "-i", str(fetch("speech")), "-ss", "20", "-t", "10", str(heard)])
    animated = out / "animated.mp4"
    lsp(
        "animate",
        "--run-dir",
        run,
        "--audio",
        str(heard),
        "-o",
        str(animated),
        "--save-intermediates",
    )
    r = lip_sync_r(animated, heard, rule, model)
    print(
        f"\n{video}: the synthetic speaker (its mouth follows its own voice by a known rule)"
        f"\n{animated}: the trained models animating a voice they never heard; its lip "
        f"opening follows the rule's with r = {r:.2f} (1 = perfect lip sync)"
        f"\ndone in {time.perf_counter() - t0:.0f} s"
    )


def lip_sync_r(animated: Path, audio: Path, rule: SpeakerRule, model) -> float:
    """Pearson r of the animated inner-lip opening (OUTPUT.npz) with the rule's opening for
    the same audio on the same face."""
    points = np.load(animated.with_name(animated.name + ".npz"))["points3d"]  # (N, 73, 3)
    layout = load_layout()
    lips = [int(np.flatnonzero(layout.mediapipe_index == m)[0]) for m in (13, 14)]
    got = np.linalg.norm(points[:, lips[0]] - points[:, lips[1]], axis=-1)
    y = load_audio(audio, sr=SAMPLE_RATE)
    params = rule.params(y, sr=SAMPLE_RATE, fps=FPS, n_frames=len(got))
    want = lip_opening_cm(rule.deform(model, params))
    return float(np.corrcoef(got, want)[0, 1])


if __name__ == "__main__":
    main()
