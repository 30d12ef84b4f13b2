"""Audio-visual sync: how late the speech is against the lips, and how sure that is.

A phone or screen recording whose sound is offset from its picture by 100-300 ms, or a
video paired with the wrong ``--audio``, wrecks lip sync silently. Prep measures it: the
lip opening (:func:`lip_opening`, from the object-space landmarks, so head motion does
not enter) is correlated with the speech's band energy (:func:`speech_activity`) at every
lag within ``max_lag_ms``; the lag of the highest correlation is the offset
(:func:`estimate_av_offset`).

Its confidence is a z-score: how far that peak stands above the correlations of the same
two signals with the audio moved by whole seconds (circular shifts of at least
``null_min_s``), which have the clip's own autocorrelation and no sync. Measured on a
render driven by real speech (exact sync by construction) and on the same render with an
unrelated stretch of the same speaker: see ``tests/test_av_sync.py``.

Sign: a positive offset means the speech comes *after* the lips (audio late);
``--set ingest.av_offset_ms=<that number>`` moves the audio earlier by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lsp_prep.constants import SAMPLE_RATE
from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout

if TYPE_CHECKING:
    from lsp_prep.config import IngestConfig


@dataclass(frozen=True)
class AVSync:
    """The measured audio-visual offset of a clip."""

    offset_ms: float
    """Speech time minus lip time at the best lag (ms); positive: the audio is late.
    NaN when nothing could be measured."""
    offset_frames: float
    """The same in video frames (sub-frame, from a parabola through the peak)."""
    confidence: float
    """z-score of the peak against the correlations at lags of whole seconds; 0 when
    nothing could be measured."""
    correlation: float
    """Pearson correlation of lip opening and speech activity at the best lag."""
    reliable: bool
    """``confidence >= min_confidence`` and the peak lies inside the searched lags."""
    lags_ms: np.ndarray
    """(L,) the lags searched (ms)."""
    curve: np.ndarray
    """(L,) Pearson correlation at each lag."""

    def attrs(self, *, applied_ms: float) -> dict[str, float | bool | np.ndarray]:
        """The ``audio`` group attributes of the dataset (docs/dataset.md)."""
        return {
            "av_offset_ms": float(self.offset_ms),
            "av_offset_frames": float(self.offset_frames),
            "av_confidence": float(self.confidence),
            "av_correlation": float(self.correlation),
            "av_reliable": bool(self.reliable),
            "av_applied_offset_ms": float(applied_ms),
            "av_lags_ms": self.lags_ms.astype(np.float32),
            "av_curve": self.curve.astype(np.float32),
        }


def lip_opening(points3d: np.ndarray) -> np.ndarray:
    """Lip opening (N,) in the landmarks' units (cm for ``track/points3d``): the mean
    distance between the three upper and the three lower inner-lip points of the LSP-73
    layout (``lips_inner``: 58-60 upper right -> left, 61-63 lower left -> right) of
    landmarks (N, 73, D); NaN stays NaN."""
    inner = list(load_layout().groups["lips_inner"])
    if points3d.ndim != 3 or points3d.shape[1] <= max(inner):
        raise InputError(f"lip_opening expects (N, 73, D) landmarks, got {points3d.shape}")
    upper, lower = points3d[:, inner[:3]], points3d[:, inner[3:][::-1]]
    return np.linalg.norm(upper - lower, axis=-1).mean(axis=1)


def speech_activity(
    y: np.ndarray,
    *,
    sr: int = SAMPLE_RATE,
    fps: float,
    n_frames: int,
    fmin: float = 300.0,
    fmax: float = 3000.0,
    floor_db: float = -60.0,
) -> np.ndarray:
    """Speech activity (N,) in dB: the energy of ``y`` (S,) between ``fmin`` and ``fmax``
    Hz over one frame period either side of each frame's start ``i / fps``, floored at
    ``floor_db`` below the loudest frame. Samples beyond ``y`` count as silence."""
    if n_frames < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    y = np.asarray(y, np.float64)
    if y.ndim != 1:
        raise InputError(f"speech_activity expects mono audio (S,), got {y.shape}")
    if not 0 < fmin < fmax < sr / 2:
        raise InputError(f"speech_activity needs 0 < fmin < fmax < sr / 2, got {fmin}, {fmax}")
    if len(y):  # band-pass in the frequency domain: zero-phase, and no scipy.signal import
        spec = np.fft.rfft(y)
        freqs = np.fft.rfftfreq(len(y), 1 / sr)
        spec[(freqs < fmin) | (freqs > fmax)] = 0
        y = np.fft.irfft(spec, len(y))
    half = max(1, round(sr / fps))
    centres = np.round(np.arange(n_frames) * sr / fps).astype(np.int64)
    power = np.concatenate([[0.0], np.cumsum(y**2)])
    lo, hi = np.clip(centres - half, 0, len(y)), np.clip(centres + half, 0, len(y))
    energy = (power[hi] - power[lo]) / (2 * half)
    db = 10 * np.log10(np.maximum(energy, 1e-20))
    return np.maximum(db, db.max() + floor_db)


def detrended(x: np.ndarray, ok: np.ndarray, *, fps: float, detrend_s: float = 0.5) -> np.ndarray:
    """``x`` minus its Gaussian trend (sigma ``detrend_s``), scaled to unit variance over
    ``ok`` frames; 0 elsewhere."""
    from scipy.ndimage import gaussian_filter1d

    x = np.where(ok, x, 0.0)
    w = ok.astype(np.float64)
    sigma = detrend_s * fps
    trend = gaussian_filter1d(x, sigma, mode="nearest") / np.maximum(
        gaussian_filter1d(w, sigma, mode="nearest"), 1e-9
    )
    x = np.where(ok, x - trend, 0.0)
    sd = float(np.sqrt((x**2).sum() / max(1.0, w.sum())))
    return x / sd if sd > 0 else x


def estimate_av_offset(
    lips: np.ndarray,
    activity: np.ndarray,
    *,
    fps: float,
    max_lag_ms: float = 500.0,
    null_min_s: float = 1.0,
    detrend_s: float = 0.5,
    min_confidence: float = 4.0,
) -> AVSync:
    """The lag (audio after lips) that maximises the correlation of ``lips`` (N,) and
    ``activity`` (N,), both per video frame at ``fps``, within ``max_lag_ms``.

    Both signals lose their slow trend (Gaussian, ``detrend_s``) and are standardised over
    the frames where ``lips`` is finite. The correlation at every lag is one circular
    cross-correlation (FFT, zero padding of ``max_lag_ms`` so the searched lags do not
    wrap); lags of at least ``null_min_s`` seconds from zero are the null distribution
    of the confidence. Clips too short for a null give confidence 0, not reliable.
    """
    lips, activity = np.asarray(lips, np.float64), np.asarray(activity, np.float64)
    if lips.shape != activity.shape or lips.ndim != 1:
        raise InputError(
            f"lips and activity must be (N,) of one length, got {lips.shape}, {activity.shape}"
        )
    n, k = len(lips), int(round(max_lag_ms * fps / 1000))
    lags = np.arange(-k, k + 1)
    lags_ms = lags * 1000.0 / fps
    ok = np.isfinite(lips)
    if ok.sum() < 3 * (2 * k + 1) or n < 2 * int(np.ceil(null_min_s * fps)) + 2 * k + 8:
        return AVSync(np.nan, np.nan, 0.0, np.nan, False, lags_ms, np.zeros(len(lags)))
    a = detrended(lips, ok, fps=fps, detrend_s=detrend_s)
    b = detrended(activity, ok, fps=fps, detrend_s=detrend_s)
    m = n + k
    fa, fb = np.fft.rfft(a, m), np.fft.rfft(b, m)
    circ = np.fft.irfft(np.conj(fa) * fb, m)  # circ[L] = sum_t a[t] b[t + L]
    overlap = np.fft.irfft(np.conj(np.fft.rfft(ok, m)) * np.fft.rfft(ok, m), m)
    r = circ / np.maximum(np.round(overlap), 1.0)
    curve = r[lags % m]
    far = np.arange(int(np.ceil(null_min_s * fps)), m - int(np.ceil(null_min_s * fps)))
    null = r[far]
    best = int(np.argmax(curve))
    peak = float(curve[best])
    sub = 0.0
    if 0 < best < len(curve) - 1:
        y0, y1, y2 = curve[best - 1 : best + 2]
        denom = y0 - 2 * y1 + y2
        sub = float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5)) if denom < 0 else 0.0
    frames = float(lags[best]) + sub
    z = (peak - float(null.mean())) / max(float(null.std()), 1e-9)
    inside = 0 < best < len(curve) - 1
    return AVSync(
        offset_ms=frames * 1000.0 / fps,
        offset_frames=frames,
        confidence=float(z),
        correlation=peak,
        reliable=bool(z >= min_confidence and inside),
        lags_ms=lags_ms,
        curve=curve,
    )


def measure_sync(
    points3d: np.ndarray,
    y: np.ndarray,
    *,
    sr: int,
    fps: float,
    max_lag_ms: float = 500.0,
    min_confidence: float = 4.0,
) -> AVSync:
    """:func:`estimate_av_offset` of a clip: its landmarks (N, 73, 3) in object space
    (NaN where not valid) and its speech ``y`` (S,) on the video clock."""
    lips = lip_opening(points3d)
    act = speech_activity(y, sr=sr, fps=fps, n_frames=len(points3d))
    return estimate_av_offset(
        lips, act, fps=fps, max_lag_ms=max_lag_ms, min_confidence=min_confidence
    )


def clip_sync(
    points3d: np.ndarray, valid: np.ndarray, y: np.ndarray, *, config: IngestConfig
) -> AVSync:
    """Prep's sync check: :func:`measure_sync` of a clip's object-space landmarks
    (N, 73, 3), its ``landmarks/valid`` mask (N,) and its speech on the video clock."""
    pts = np.where(np.asarray(valid, bool)[:, None, None], points3d, np.nan)
    return measure_sync(
        pts,
        y,
        sr=config.sample_rate,
        fps=config.fps,
        max_lag_ms=config.av_max_lag_ms,
        min_confidence=config.av_min_confidence,
    )


def sync_warning(sync: AVSync, *, config: IngestConfig) -> str | None:
    """The warning prep prints for ``sync``, or None: an offset beyond
    ``config.av_warn_frames`` frames with the setting that fixes it, or a low confidence
    (the wrong audio?)."""
    if not sync.reliable:
        return (
            f"the speech does not follow the lips (sync confidence {sync.confidence:.1f}, "
            f"under {config.av_min_confidence:g}; correlation {sync.correlation:.2f}): if "
            "this audio is not this video's speech, pass the right recording with --audio"
        )
    if abs(sync.offset_frames) <= config.av_warn_frames:
        return None
    late = "after" if sync.offset_ms > 0 else "before"
    fix = config.av_offset_ms + sync.offset_ms
    return (
        f"the speech comes {abs(sync.offset_ms):.0f} ms ({abs(sync.offset_frames):.1f} "
        f"frames at {config.fps:g} FPS) {late} the lips (sync confidence "
        f"{sync.confidence:.1f}): re-run prep with --set ingest.av_offset_ms={fix:.0f}"
    )
