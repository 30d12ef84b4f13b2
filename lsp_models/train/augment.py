"""Other voices and channels from the person's own speech: log-mel augmentations.

Each function takes a natural-log mel power spectrogram ``mel`` (T, n_mels) of bands
spaced as :func:`band_centres` and returns one of the same shape, as if the speech had
been recorded differently:

- :func:`gain`: the level, ``db`` dB louder (+ db * ln(10) / 10 on every band);
- :func:`tilt`: a spectral slope, ``db_per_octave`` about 1 kHz (a brighter or duller
  microphone or voice);
- :func:`warp`: vocal-tract length, every formant ``alpha`` times higher (the band at
  frequency f takes the power the original had at f / alpha; the power outside the
  band range is the edge band's);
- :func:`add_noise`: white noise at ``snr_db`` below the mean power of the louder half
  of the frames (powers add: ``log(exp(mel) + noise)``);
- :func:`mask_bands`: ``width`` consecutive bands from ``start`` set to their mean over
  the clip (SpecAugment's frequency mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lsp_prep.errors import InputError

DB = np.log(10.0) / 10.0
"""Natural-log power per decibel."""
TILT_PIVOT_HZ = 1000.0
"""Frequency that :func:`tilt` leaves unchanged."""


@lru_cache(maxsize=8)
def band_centres(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Centre frequencies (n_mels,) Hz of librosa's mel bands (Slaney scale), as prep's
    log-mel (:class:`lsp_prep.stages.audio.MelConfig`) spaces them."""
    import librosa

    return librosa.mel_frequencies(n_mels=n_mels + 2, fmin=fmin, fmax=fmax)[1:-1]


def gain(mel: np.ndarray, db: float) -> np.ndarray:
    return mel + db * DB


def tilt(mel: np.ndarray, db_per_octave: float, centres: np.ndarray) -> np.ndarray:
    return mel + (db_per_octave * DB) * np.log2(centres / TILT_PIVOT_HZ)


def warp(mel: np.ndarray, alpha: float, centres: np.ndarray) -> np.ndarray:
    if not alpha > 0:
        raise InputError(f"warp factor must be positive, got {alpha}")
    # band b takes the original spectrum at centres[b] / alpha, interpolated linearly in
    # band index between the two bands that frequency falls between
    src = np.interp(centres / alpha, centres, np.arange(len(centres), dtype=np.float64))
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, len(centres) - 1)
    t = src - lo
    return mel[:, lo] * (1.0 - t) + mel[:, hi] * t


def add_noise(mel: np.ndarray, snr_db: float) -> np.ndarray:
    power = np.exp(mel.astype(np.float64)).sum(1)  # (T,) total power per frame
    speech = power[power >= np.median(power)].mean()  # the louder half: speech, not pauses
    noise = speech * 10.0 ** (-snr_db / 10.0) / mel.shape[1]  # white: equal power per band
    return np.log(np.exp(mel.astype(np.float64)) + noise).astype(mel.dtype)


def mask_bands(mel: np.ndarray, start: int, width: int) -> np.ndarray:
    out = mel.copy()
    out[:, start : start + width] = mel[:, start : start + width].mean(0)
    return out


@dataclass(frozen=True)
class SpeechAugment:
    """Augmented copies of the person's speech the mouth model trains on beside the
    original (each training window reads one of the copies or the original, at random);
    each copy draws its own settings, uniformly within the ranges below. All zero: none."""

    copies: int = 0
    """Augmented copies of the person's audio (0: train on the original only)."""
    warp: float = 0.0
    """Vocal-tract length: formants scaled by up to 1 +- this (0.1: +-10 %)."""
    tilt_db: float = 0.0
    """Spectral slope up to +- this many dB per octave about 1 kHz."""
    gain_db: float = 0.0
    """Level change up to +- this many dB."""
    snr_db: float = 0.0
    """White noise at a signal-to-noise ratio between this and 10 dB more (0: no noise)."""
    masks: int = 0
    """Frequency masks per copy (SpecAugment), each up to ``mask_bands`` bands wide."""
    mask_bands: int = 8
    """Widest frequency mask, in mel bands."""

    def __post_init__(self) -> None:
        if self.copies < 0 or self.masks < 0 or self.mask_bands < 1:
            raise InputError("mouth.augment: copies and masks must be >= 0, mask_bands >= 1")
        if not 0.0 <= self.warp < 0.5:
            raise InputError(f"mouth.augment.warp must be in [0, 0.5), got {self.warp}")
        if min(self.tilt_db, self.gain_db, self.snr_db) < 0:
            raise InputError("mouth.augment: tilt_db, gain_db and snr_db must be >= 0")


def augment_copy(
    mel: np.ndarray, config: SpeechAugment, *, centres: np.ndarray, seed: int | tuple[int, ...]
) -> np.ndarray:
    """One augmented copy of log-mel ``mel`` (T, n_mels): settings drawn from ``config``'s
    ranges with ``seed``, applied as warp, tilt, gain, noise, masks."""
    rng = np.random.default_rng(seed)
    out = mel.astype(np.float64)
    if config.warp:
        out = warp(out, 1.0 + rng.uniform(-config.warp, config.warp), centres)
    if config.tilt_db:
        out = tilt(out, rng.uniform(-config.tilt_db, config.tilt_db), centres)
    if config.gain_db:
        out = gain(out, rng.uniform(-config.gain_db, config.gain_db))
    if config.snr_db:
        out = add_noise(out, rng.uniform(config.snr_db, config.snr_db + 10.0))
    for _ in range(config.masks):
        width = int(rng.integers(1, config.mask_bands + 1))
        out = mask_bands(out, int(rng.integers(0, out.shape[1] - width + 1)), width)
    return out.astype(np.float32)
