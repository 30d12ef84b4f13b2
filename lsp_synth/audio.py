"""Audio helpers of the renders: WAV writing, and the speech envelope that opens the mouth."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from lsp_prep.constants import SAMPLE_RATE
from lsp_prep.errors import InputError
from lsp_synth.files import atomic_path


def write_wav(path: Path, y: np.ndarray, *, sr: int) -> Path:
    """Write ``y`` (S,) or (C, S) float in [-1, 1] as a 16-bit PCM WAV, atomically."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2 or y.shape[1] == 0:
        raise InputError(f"audio must be (S,) or (C, S) with S > 0, got shape {y.shape}")
    if sr <= 0:
        raise InputError(f"sr must be positive, got {sr}")
    pcm = np.round(np.clip(y, -1.0, 1.0) * 32767).astype("<i2").T  # (S, C) interleaved
    path = Path(path)
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as wf:
        wf.setnchannels(y.shape[0])
        wf.setsampwidth(2)
        wf.setframerate(int(sr))
        wf.writeframes(pcm.tobytes())
    return path


def speech_envelope(
    y: np.ndarray | None,
    *,
    sr: int = SAMPLE_RATE,
    fps: float,
    n_frames: int,
    smooth_s: float = 0.05,
) -> np.ndarray:
    """Mouth-opening envelope (N,) in [0, 1] of mono audio ``y`` (S,) at video frames.

    Frame ``i`` (time ``i / fps``) takes the RMS of the samples within one frame period
    either side, smoothed by a Gaussian of ``smooth_s`` seconds; the result minus its 5th
    percentile is divided by the 95th-minus-5th percentile range and clipped to [0, 1].
    Missing samples count as silence; audio whose level never changes (silence) and
    ``y=None`` give zeros.
    """
    from scipy.ndimage import gaussian_filter1d

    if n_frames < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    if y is None:
        return np.zeros(n_frames)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise InputError(f"audio must be mono (S,), got shape {y.shape}")
    half = max(1, round(sr / fps))
    centres = np.round(np.arange(n_frames) * sr / fps).astype(np.int64)
    power = np.concatenate([[0.0], np.cumsum(y**2)])
    lo = np.clip(centres - half, 0, len(y))
    hi = np.clip(centres + half, 0, len(y))
    rms = np.sqrt((power[hi] - power[lo]) / (2 * half))
    if smooth_s > 0:
        rms = gaussian_filter1d(rms, sigma=smooth_s * fps, mode="nearest")
    floor, peak = np.percentile(rms, [5, 95])
    if peak - floor <= 1e-6:
        return np.zeros(n_frames)
    return np.clip((rms - floor) / (peak - floor), 0.0, 1.0)
