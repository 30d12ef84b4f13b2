"""Speaker and channel normalisation of the log-mel before APC.

APC reads the log-mel normalised per band: ``(mel - mean) / std``. With one mean and std
fitted on the training speech (``global``, how every run before :attr:`APCConfig.normalise`
existed computes it), a new voice, microphone or recording level shifts every band by an
amount the models never saw. ``running`` replaces them by a causal running estimate per
band over the audio heard so far, started from the training statistics as if they had
been heard for ``prior_frames`` frames: frame ``t`` is normalised by

    mean_t = (p * m0 + sum_{i <= t} x_i) / (p + t + 1)
    var_t  = (p * (s0^2 + m0^2) + sum_{i <= t} x_i^2) / (p + t + 1) - mean_t^2

(``p`` = ``prior_frames``, ``m0``, ``s0`` the training statistics). It reads no frame
after ``t``, so streaming in chunks equals one call on the whole (:class:`NormState`
carries the sums; they are accumulated in the same order either way, so the two agree
exactly), and animate's look-ahead is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsp_prep.errors import InputError

MIN_STD = 1e-5
"""Floor of a band's standard deviation (a constant band, e.g. silence at the log floor)."""


@dataclass
class NormState:
    """Running sums of :func:`normalise_mel` over the frames seen so far: per band sum and
    sum of squares (float64, the prior included) and the count (prior frames included)."""

    s1: np.ndarray  # (n_mels,)
    s2: np.ndarray  # (n_mels,)
    count: float


def prior_state(mean: np.ndarray, std: np.ndarray, prior_frames: float) -> NormState:
    """The state before any frame: the training statistics, weighted as ``prior_frames``."""
    m = np.asarray(mean, np.float64)
    s = np.asarray(std, np.float64)
    return NormState(prior_frames * m, prior_frames * (s * s + m * m), float(prior_frames))


def normalise_mel(
    mel: np.ndarray,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    how: str = "global",
    prior_frames: float = 240.0,
    min_band_std: float = 0.0,
    state: NormState | None = None,
) -> tuple[np.ndarray, NormState | None]:
    """APC's input: log-mel ``mel`` (T, n_mels) normalised per band, float32 (T, n_mels),
    and the state to continue the same audio from (None for ``global``).

    ``how``: ``global`` (``(mel - mean) / std``) or ``running`` (module doc); ``mean``,
    ``std`` (n_mels,): the training statistics; bands whose ``std`` is below
    ``min_band_std`` times the median band's are 0 (:func:`empty_bands`); ``state``: None
    to start.
    """
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] != len(mean):
        raise InputError(f"mel must be (T, {len(mean)}), got {mel.shape}")
    out, state = _normalise(mel, mean, std, how, prior_frames, state)
    out[:, empty_bands(std, min_band_std)] = 0.0
    return out, state


def empty_bands(std: np.ndarray, fraction: float) -> np.ndarray:
    """Bands (n_mels,) bool whose training ``std`` is below ``fraction`` of the median
    band's: the training speech never filled them (none when ``fraction`` is 0)."""
    std = np.asarray(std)
    return std < fraction * np.median(std)


def _normalise(
    mel: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    how: str,
    prior_frames: float,
    state: NormState | None,
) -> tuple[np.ndarray, NormState | None]:
    if how == "global":
        return ((mel - mean) / std).astype(np.float32), None
    if how != "running":
        raise InputError(f"mel normalisation must be global or running, got {how!r}")
    if not prior_frames > 0:
        raise InputError(f"prior_frames must be positive, got {prior_frames}")
    if state is None:
        state = prior_state(mean, std, prior_frames)
    x = mel.astype(np.float64)
    # the state's sums first, so the running sums add frames in one order however the
    # audio is chunked (chunked calls equal one call exactly)
    s1 = np.cumsum(np.concatenate([state.s1[None], x]), axis=0)[1:]
    s2 = np.cumsum(np.concatenate([state.s2[None], x * x]), axis=0)[1:]
    count = state.count + np.arange(1, len(x) + 1, dtype=np.float64)[:, None]
    mu = s1 / count
    var = np.maximum(s2 / count - mu * mu, MIN_STD**2)
    out = ((x - mu) / np.sqrt(var)).astype(np.float32)
    if len(x):
        state = NormState(s1[-1].copy(), s2[-1].copy(), float(count[-1, 0]))
    return out, state
