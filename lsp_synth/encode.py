"""Clip files: frame times, H.264 (+ AAC) encoding through ffmpeg, audio muxing.

Frames go to ffmpeg (the imageio-ffmpeg binary) through a stdin pipe and are encoded with
libx264. Even sizes use yuv420p. H.264 cannot code an odd width or height in 4:2:0 (its
cropping unit is two pixels), so odd sizes are encoded in yuv444p instead, which keeps the
decoded size exactly as requested. Audio, when given, is encoded as AAC. Every file
appears atomically (:func:`lsp_synth.files.atomic_path`).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from lsp_prep.constants import SAMPLE_RATE
from lsp_prep.errors import InputError, ToolError
from lsp_prep.media import ffmpeg_exe, run_ffmpeg
from lsp_synth.audio import write_wav
from lsp_synth.files import atomic_path

ROTATIONS = (0, 90, 180, 270)
"""Display rotations (degrees, counter-clockwise) that can be written as metadata."""


def frame_times(*, duration_s: float, fps: float) -> np.ndarray:
    """Times (N,) ``i / fps`` of the ``round(duration_s * fps)`` frames of a clip."""
    if not (np.isfinite(duration_s) and duration_s > 0):
        raise InputError(f"duration_s must be positive, got {duration_s}")
    if not (np.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be positive, got {fps}")
    n = max(1, round(duration_s * fps))
    return np.arange(n, dtype=np.float64) / fps


def _rate(fps: float) -> str:
    """ffmpeg rate string for ``fps``: 30 -> '30/1', 30000/1001 -> '30000/1001'."""
    r = Fraction(fps).limit_denominator(1001)
    return f"{r.numerator}/{r.denominator}"


def write_clip(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float,
    size: tuple[int, int],
    audio: np.ndarray | None = None,
    sr: int = SAMPLE_RATE,
    rotation_metadata: int = 0,
    crf: int = 18,
    preset: str = "veryfast",
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Encode RGB ``frames`` (each (H, W, 3) uint8 at displayed ``size`` (W, H)) to ``path``.

    H.264 (yuv420p, or yuv444p when a side is odd) at a constant ``fps``; ``audio`` (S,)
    float at ``sr`` is added as AAC, as given (neither trimmed nor padded). With
    ``rotation_metadata`` r, the pixels are stored rotated by -r and the file says "display
    rotated by r counter-clockwise", so a decoder honouring it shows ``frames`` upright and a
    decoder ignoring it shows them turned. The file appears atomically.
    """
    w, h = size
    if w < 2 or h < 2:
        raise InputError(f"size must be at least 2x2, got {w}x{h}")
    if rotation_metadata not in ROTATIONS:
        raise InputError(f"rotation_metadata must be one of {ROTATIONS}, got {rotation_metadata}")
    if not (np.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be positive, got {fps}")
    k = rotation_metadata // 90
    sw, sh = (h, w) if k % 2 else (w, h)  # stored size
    pix_fmt = "yuv420p" if sw % 2 == 0 and sh % 2 == 0 else "yuv444p"
    path = Path(path)
    with atomic_path(path) as out, tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        inputs = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{sw}x{sh}"]
        inputs += ["-framerate", _rate(fps), "-i", "pipe:0"]
        maps = ["-map", "0:v:0"]
        codecs = ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", pix_fmt]
        if audio is not None:
            wav = write_wav(Path(tmp) / "audio.wav", audio, sr=sr)
            inputs += ["-i", str(wav)]
            maps += ["-map", "1:a:0"]
            codecs += ["-c:a", "aac", "-b:a", "128k"]
        encoded = Path(tmp) / f"encoded{path.suffix}" if k else out
        cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            *inputs,
            *maps,
            *codecs,
            str(encoded),
        ]
        _pipe_frames(cmd, frames, shape=(h, w, 3), k=k, progress=progress)
        if k:
            # Remux only: the input option tags the stream, "-c copy" keeps the pixels.
            run_ffmpeg(
                [
                    "-y",
                    "-display_rotation",
                    str(rotation_metadata),
                    "-i",
                    str(encoded),
                    "-map",
                    "0",
                    "-c",
                    "copy",
                    str(out),
                ]
            )
    return path


def _pipe_frames(
    cmd: list[str],
    frames: Iterable[np.ndarray],
    *,
    shape: tuple[int, int, int],
    k: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Feed frames (H, W, 3), each turned by ``np.rot90(k=-k)``, to ffmpeg's stdin."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        assert proc.stdin is not None
        count = 0
        broken = False
        try:
            for frame in frames:
                if frame.shape != shape or frame.dtype != np.uint8:
                    raise InputError(
                        f"frame {count} is {frame.shape} {frame.dtype}, expected {shape} uint8"
                    )
                stored = np.rot90(frame, k=-k) if k else frame
                try:
                    proc.stdin.write(np.ascontiguousarray(stored).data)
                except BrokenPipeError:
                    broken = True
                    break
                count += 1
                if progress is not None:
                    progress(count)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
        rc = proc.wait()
        if rc != 0 or broken:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
            raise ToolError(f"ffmpeg failed encoding ({rc}): {' | '.join(tail)}")
        if count == 0:
            raise InputError("no frames to encode")


def mux_audio(
    video: Path, out: Path, *, y: np.ndarray, sr: int = SAMPLE_RATE, offset_s: float = 0.0
) -> Path:
    """Copy ``video``'s video stream into ``out`` with ``y`` (S,) as AAC audio.

    ``offset_s`` > 0 delays the sound by that many seconds (zeros are prepended), < 0 drops
    the first ``-offset_s`` seconds of ``y``; either way the audio stream starts at 0, so the
    sound at clip time ``t`` is ``y`` at ``t - offset_s`` exactly. (A container start-time
    offset via ``-itsoffset`` would come back shifted by the AAC encoder delay.) Any audio
    already in ``video`` is dropped.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise InputError(f"audio must be mono (S,), got shape {y.shape}")
    shift = round(offset_s * sr)
    y = np.concatenate([np.zeros(shift, np.float32), y]) if shift >= 0 else y[-shift:]
    out = Path(out)
    with atomic_path(out) as tmp, tempfile.TemporaryDirectory(dir=out.parent) as d:
        wav = write_wav(Path(d) / "audio.wav", y, sr=sr)
        run_ffmpeg(
            [
                "-y",
                "-i",
                str(video),
                "-i",
                str(wav),
                "-map",
                "0:v:0",
                "-map",
                "1:a:0",
                "-c:v",
                "copy",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
                str(tmp),
            ]
        )
    return out
