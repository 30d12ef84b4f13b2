"""Audio features in librosa's vocabulary: ``y, sr``, keyword-only parameters, time last.

The one relation between audio and video time lives here: :func:`n_mel_frames` and
:func:`align_waveform`. Mel frame ``k`` is centred at ``k / (fps * MELS_PER_FRAME)`` seconds,
so video frame ``i`` owns mel frames ``2i`` and ``2i + 1`` exactly, for any clip length. The
hop (1/120 s = 133.33 samples at 16 kHz) is not a whole number of samples, so frames are
taken at rounded fractional centres instead of librosa's integer hop, which would drift by
one video frame every 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lsp_prep.constants import FPS, MELS_PER_FRAME, N_MELS, SAMPLE_RATE
from lsp_prep.errors import InputError


@dataclass(frozen=True)
class MelConfig:
    """Log-mel spectrogram parameters (the paper's values are the defaults)."""

    n_mels: int = N_MELS
    """Number of mel bands."""
    n_fft: int = 512
    """FFT size in samples; the window is zero-padded to it."""
    win_s: float = 1 / 60
    """Window length in seconds (267 samples at 16 kHz)."""
    fmin: float = 90.0
    """Lowest band edge (Hz)."""
    fmax: float = 7600.0
    """Highest band edge (Hz)."""
    log_floor: float = 1e-5
    """Mel power is clipped to this before the natural log."""

    def __post_init__(self) -> None:
        if self.n_mels < 1:
            raise InputError(f"mel.n_mels must be >= 1, got {self.n_mels}")
        if not 0 <= self.fmin < self.fmax:
            raise InputError(f"mel needs 0 <= fmin < fmax, got {self.fmin}, {self.fmax}")
        if self.win_s <= 0 or self.log_floor <= 0:
            raise InputError("mel.win_s and mel.log_floor must be positive")


def n_mel_frames(n_video_frames: int) -> int:
    """Mel frames that belong to ``n_video_frames`` video frames (always exactly twice)."""
    return int(n_video_frames) * MELS_PER_FRAME


def n_video_samples(n_video_frames: int, *, sr: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Audio samples spanned by ``n_video_frames`` frames at ``fps``."""
    return int(round(n_video_frames * sr / fps))


def align_waveform(
    y: np.ndarray, *, sr: int, offset_s: float, n_video_frames: int, fps: int = FPS
) -> np.ndarray:
    """Place audio on the video clock: sample 0 is the start of video frame 0.

    ``offset_s`` is the audio stream's start minus the video stream's start; a positive
    offset pads silence in front, a negative one drops leading samples. The result is
    padded with silence or trimmed to exactly the video's length.
    """
    shift = int(round(offset_s * sr))
    y = np.concatenate([np.zeros(shift, y.dtype), y]) if shift > 0 else y[-shift:]
    n = n_video_samples(n_video_frames, sr=sr, fps=fps)
    if len(y) < n:
        y = np.concatenate([y, np.zeros(n - len(y), y.dtype)])
    return np.ascontiguousarray(y[:n], dtype=np.float32)


@lru_cache(maxsize=8)
def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's mel filter bank (n_mels, n_fft // 2 + 1), cached: the one :func:`log_mel`
    and any incremental log-mel (``lsp_models.infer.stream.MelStream``) must share."""
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


@lru_cache(maxsize=8)
def analysis_window(n_fft: int, win_length: int) -> np.ndarray:
    """Periodic Hann window of ``win_length`` samples centred in ``n_fft`` zeros, (n_fft,)
    float64, cached: the window of :func:`log_mel` (frame ``k`` reads samples
    ``centre - n_fft // 2 ..`` of which only this window's non-zero part matters)."""
    from scipy.signal import get_window

    w = np.zeros(n_fft, np.float64)
    start = (n_fft - win_length) // 2
    w[start : start + win_length] = get_window("hann", win_length, fftbins=True)
    return w


def log_mel(
    y: np.ndarray,
    *,
    sr: int = SAMPLE_RATE,
    n_frames: int,
    hop_length: float,
    n_fft: int = 512,
    win_length: int | None = None,
    n_mels: int = N_MELS,
    fmin: float = 90.0,
    fmax: float = 7600.0,
    log_floor: float = 1e-5,
    block: int = 4096,
) -> np.ndarray:
    """Natural-log mel power spectrogram, shape (n_mels, n_frames).

    Frame ``k`` is a Hann window of ``win_length`` samples centred on sample
    ``round(k * hop_length)`` (``hop_length`` may be fractional), zero-padded to ``n_fft``;
    samples outside ``y`` are zeros. Vectorised over frames, in blocks of ``block`` frames so
    memory stays flat for long audio.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise InputError(f"log_mel expects mono audio of shape (S,), got {y.shape}")
    win_length = n_fft if win_length is None else int(win_length)
    if not 0 < win_length <= n_fft:
        raise InputError(f"win_length must be in (0, n_fft={n_fft}], got {win_length}")
    half = n_fft // 2
    centres = np.rint(np.arange(n_frames) * hop_length).astype(np.int64)
    last = int(centres[-1]) if n_frames else 0
    y_pad = np.zeros(last + n_fft + 1, np.float32)
    n_copy = min(len(y), len(y_pad) - half)
    y_pad[half : half + n_copy] = y[:n_copy]
    windows = np.lib.stride_tricks.sliding_window_view(y_pad, n_fft)
    window = analysis_window(n_fft, win_length).astype(np.float32)
    basis = mel_basis(sr, n_fft, n_mels, float(fmin), float(fmax)).astype(np.float32)
    out = np.empty((n_mels, n_frames), np.float32)
    for s in range(0, n_frames, block):
        frames = windows[centres[s : s + block]] * window  # (B, n_fft)
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2  # (B, n_fft // 2 + 1)
        out[:, s : s + block] = np.log(np.maximum(basis @ power.T.astype(np.float32), log_floor))
    return out


def video_log_mel(
    y: np.ndarray, *, sr: int, n_video_frames: int, fps: int = FPS, config: MelConfig = MelConfig()
) -> np.ndarray:
    """The dataset's log-mel: two frames per video frame, shape (n_mels, 2 * n_video_frames)."""
    return log_mel(
        y,
        sr=sr,
        n_frames=n_mel_frames(n_video_frames),
        hop_length=sr / (fps * MELS_PER_FRAME),
        n_fft=config.n_fft,
        win_length=int(round(config.win_s * sr)),
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
        log_floor=config.log_floor,
    )
