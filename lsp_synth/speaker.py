"""A speech-driven synthetic speaker: a documented rule from audio to mouth, and blinks.

The ground truth of lip sync (issue 12). :class:`SpeakerRule` turns a waveform into four
mouth parameters per video frame (:data:`MOUTH_PARAMS`) and :meth:`SpeakerRule.deform`
moves a :class:`~lsp_synth.mesh.FaceModel`'s vertices by them, the skull rigid.
:func:`lsp_synth.render3d.render_head_clip` uses it with ``speaker=SpeakerRule()``.

The rule, for the frame at time ``t`` (seconds):

1. **Lead.** The mouth leads the sound, as real speakers' do: the frame is analysed at
   ``t + lead_s`` (default 40 ms), a Hann window of ``win_s`` (32 ms) centred there.
2. **Band levels.** The power in the low band ``low_hz`` (150-900 Hz: the first formant,
   loud on open vowels) and the mid band ``mid_hz`` (900-3500 Hz: second formants,
   fricatives), in dB. Each band's level is measured against its own 95th percentile over
   the clip (a loud-speech reference, so the recording level does not matter):
   ``clip((dB - p95 + range_db) / range_db, 0, 1)``, ``range_db`` = 30 dB.
3. **Jaw** = the low band's level; **lips** (opening beyond what the jaw gives) = the mid
   band's level. Both smoothed in time by a Gaussian of ``smooth_s`` (40 ms).
4. **Width** in [-1, 1] (+1 spread as in "ee", -1 rounded as in "oo"): where the second
   formant sits. The power-weighted mean log-frequency of ``width_hz`` (800-3500 Hz: the
   spectral centroid of the second-formant region, in octaves; about 2300 Hz for "ee",
   1000 for "ah", 850 for "oo") relative to ``centroid_hz`` (1300 Hz), divided by
   ``centroid_octaves`` (0.5), through tanh, times the larger of the two levels (silence
   is neutral), then smoothed as the others. (A centroid over all bands follows the
   first formant, the loudest, and misses the spread of "ee".)
   Every band lies below 4 kHz, so 8 kHz recordings (telephone prompts) drive it fully.
5. **Blink** in [0, 1]: independent of the audio; blinks of ``blink_s`` (0.25 s) start
   at seeded random times ``blink_interval_s`` (4 s) apart on average (at least 1 s),
   each closing the eyelids as ``sin(pi * u) ** 2`` over its duration ``u`` in [0, 1].

The mesh (object cm, y down, z away from the camera; see :mod:`lsp_synth.render3d`):
the jaw moves the lower lip and chin down by ``jaw_cm * jaw`` (the mesh's jaw weights,
:func:`lsp_synth.mesh.jaw_weights`); the lips open by ``lips_cm * lips`` more, the upper
lip up and the lower lip down by half of it each; the mouth widens (width > 0) or narrows
(width < 0) by ``width_cm * width`` at each corner, scaled by the distance from the
mouth's centre line, and rounded lips move ``protrude_cm * max(-width, 0)`` towards the
camera; a blink brings each upper eyelid point down to the lower lid. Every displacement
fades to exactly zero within a few millimetres (a smoothstep), so the skull (nose, eye
corners, forehead, face outline above the jaw) stays rigid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsp_prep.errors import InputError
from lsp_synth.mesh import LIPS_INNER, LIPS_OUTER, LOWER_LIP, UPPER_LIP, FaceModel

MOUTH_PARAMS = ("jaw", "lips", "width", "blink")
"""Columns of the mouth parameters (N, 4): jaw and lips in [0, 1], width in [-1, 1]
(spread minus rounded), blink in [0, 1] (1 = eyes closed)."""

EYELIDS: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = (
    ((246, 161, 160, 159, 158, 157, 173), (7, 163, 144, 145, 153, 154, 155)),
    ((466, 388, 387, 386, 385, 384, 398), (249, 390, 373, 374, 380, 381, 382)),
)
"""MediaPipe (upper lid, lower lid) points of the subject's right and left eye, corners
excluded (the corners, 33/133 and 263/362, never move)."""

INNER_LIP_MIDPOINTS = (13, 14)
"""MediaPipe upper and lower inner-lip midpoints: their distance is the lip opening."""


@dataclass(frozen=True)
class SpeakerRule:
    """The audio -> mouth rule of the synthetic speaker (see the module docstring)."""

    lead_s: float = 0.04
    """The mouth leads the sound by this much: frame ``t`` shows the audio at ``t + lead_s``."""
    win_s: float = 0.032
    """Analysis window (Hann) in seconds."""
    smooth_s: float = 0.04
    """Gaussian sigma (seconds) of the parameters in time."""
    low_hz: tuple[float, float] = (150.0, 900.0)
    """Band whose level opens the jaw (Hz)."""
    mid_hz: tuple[float, float] = (900.0, 3500.0)
    """Band whose level opens the lips beyond the jaw (Hz)."""
    width_hz: tuple[float, float] = (800.0, 3500.0)
    """Band whose spectral centroid sets width against rounding (Hz)."""
    range_db: float = 30.0
    """Levels span this many dB below the band's 95th percentile over the clip."""
    centroid_hz: float = 1300.0
    """Spectral centroid of a neutral mouth width (Hz)."""
    centroid_octaves: float = 0.5
    """Centroid shift (octaves) that gives tanh(1) of spread or rounding."""
    jaw_cm: float = 0.9
    """Lower-lip and chin displacement at jaw = 1 (cm)."""
    lips_cm: float = 0.3
    """Extra lip opening at lips = 1 (cm), half on each lip."""
    width_cm: float = 0.25
    """Corner displacement at width = +-1 (cm), each side."""
    protrude_cm: float = 0.2
    """Forward displacement of the lips at width = -1 (cm)."""
    blink_interval_s: float = 4.0
    """Mean time between blink starts (seconds)."""
    blink_s: float = 0.25
    """Duration of one blink (seconds)."""
    seed: int = 0
    """Seed of the blink times."""

    def __post_init__(self) -> None:
        for name in ("lead_s", "smooth_s", "jaw_cm", "lips_cm", "width_cm", "protrude_cm"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise InputError(f"SpeakerRule.{name} must be >= 0, got {v}")
        for name in ("win_s", "range_db", "centroid_hz", "centroid_octaves", "blink_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"SpeakerRule.{name} must be positive, got {v}")
        if not self.blink_interval_s > 1.0:
            raise InputError(
                f"SpeakerRule.blink_interval_s must exceed 1 s, got {self.blink_interval_s}"
            )
        for name in ("low_hz", "mid_hz", "width_hz"):
            lo, hi = getattr(self, name)
            if not 0 <= lo < hi:
                raise InputError(f"SpeakerRule.{name} must be (low, high) Hz, got {(lo, hi)}")

    def params(self, y: np.ndarray | None, *, sr: int, fps: float, n_frames: int) -> np.ndarray:
        """Mouth parameters (N, 4) (:data:`MOUTH_PARAMS`) of mono audio ``y`` (S,) at
        ``sr`` for video frames ``i / fps``, i < ``n_frames``. Audio beyond ``y`` is
        silence; ``y=None`` gives a closed mouth (blinks still happen)."""
        if n_frames < 1:
            raise InputError(f"n_frames must be >= 1, got {n_frames}")
        out = np.zeros((n_frames, len(MOUTH_PARAMS)))
        out[:, 3] = self.blinks(np.arange(n_frames) / fps)
        if y is None:
            return out
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise InputError(f"audio must be mono (S,), got shape {y.shape}")
        freqs, power = self._spectra(y, sr=sr, fps=fps, n_frames=n_frames)
        if not power.any():
            return out
        low = self._level(_band_db(freqs, power, self.low_hz))
        mid = self._level(_band_db(freqs, power, self.mid_hz))
        band = (freqs >= self.width_hz[0]) & (freqs < self.width_hz[1])
        p = power[:, band] + 1e-12
        octaves = (p * np.log2(freqs[band] / self.centroid_hz)).sum(1) / p.sum(1)
        width = np.tanh(octaves / self.centroid_octaves) * np.maximum(low, mid)
        sigma = self.smooth_s * fps
        for k, v in enumerate((low, mid, width)):
            out[:, k] = _smooth(v, sigma)
        return out

    def blinks(self, times: np.ndarray) -> np.ndarray:
        """Eyelid closure (N,) in [0, 1] at ``times`` (N,) seconds (see the module doc)."""
        t = np.asarray(times, dtype=np.float64)
        end = float(t.max()) if len(t) else 0.0
        rng = np.random.default_rng(self.seed)
        out = np.zeros(len(t))
        start = rng.uniform(0.5, self.blink_interval_s)
        while start <= end:
            u = (t - start) / self.blink_s
            inside = (u >= 0) & (u <= 1)
            out[inside] = np.maximum(out[inside], np.sin(np.pi * u[inside]) ** 2)
            start += 1.0 + rng.exponential(self.blink_interval_s - 1.0)
        return out

    def deform(self, model: FaceModel, params: np.ndarray) -> np.ndarray:
        """Vertices (N, 478, 3), object cm, of ``model`` moved by ``params`` (N, 4)."""
        params = np.asarray(params, dtype=np.float64)
        if params.ndim != 2 or params.shape[1] != len(MOUTH_PARAMS):
            raise InputError(f"params must be (N, {len(MOUTH_PARAMS)}), got {params.shape}")
        jaw, lips, width, blink = params.T
        w = _mouth_weights(model.vertices)
        out = model.deform(self.jaw_cm * jaw)
        half = 0.5 * self.lips_cm * lips[:, None]
        out[:, :, 1] += half * (w["lower"] - w["upper"])
        out[:, :, 0] += self.width_cm * width[:, None] * w["width"]
        out[:, :, 2] -= self.protrude_cm * np.maximum(-width, 0.0)[:, None] * w["lips"]
        out[:, :, 1] += blink[:, None] * _eyelid_gaps(model.vertices)
        return out

    def _spectra(
        self, y: np.ndarray, *, sr: int, fps: float, n_frames: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(freqs (F,), power (N, F))``: Hann-windowed spectra centred at
        ``i / fps + lead_s``; samples outside ``y`` are zeros."""
        win = max(16, int(round(self.win_s * sr)))
        n_fft = 1 << int(np.ceil(np.log2(win)))
        centres = np.round((np.arange(n_frames) / fps + self.lead_s) * sr).astype(np.int64)
        padded = np.pad(y, (win, win + int(np.ceil(self.lead_s * sr)) + 1))
        starts = np.clip(centres - win // 2 + win, 0, len(padded) - win)
        idx = starts[:, None] + np.arange(win)[None, :]
        frames = padded[idx] * np.hanning(win)[None, :]
        spec = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2
        return np.fft.rfftfreq(n_fft, 1.0 / sr), spec

    def _level(self, db: np.ndarray) -> np.ndarray:
        """Band level in dB (N,) -> [0, 1] against its 95th percentile (see the module doc)."""
        ref = np.percentile(db, 95)
        return np.clip((db - ref + self.range_db) / self.range_db, 0.0, 1.0)


def lip_opening_cm(points: np.ndarray) -> np.ndarray:
    """Inner-lip opening (N,) cm of MediaPipe-indexed points (N, 478, 3)."""
    a, b = INNER_LIP_MIDPOINTS
    return np.linalg.norm(points[:, b] - points[:, a], axis=-1)


def _band_db(freqs: np.ndarray, power: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    sel = (freqs >= band[0]) & (freqs < band[1])
    return 10.0 * np.log10(power[:, sel].sum(1) + 1e-10)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x, sigma=sigma, mode="nearest") if sigma > 0 else x


def _fade(d: np.ndarray, radius: float) -> np.ndarray:
    """1 at distance 0, smoothly 0 at and beyond ``radius`` (cm)."""
    t = np.clip(d / radius, 0.0, 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t)


def _nearest(v: np.ndarray, anchors: list[int]) -> np.ndarray:
    """Distance (478,) in x, y from every vertex to the nearest of ``anchors``."""
    d = v[:, None, :2] - v[None, anchors, :2]
    return np.linalg.norm(d, axis=-1).min(axis=1)


def _mouth_weights(v: np.ndarray) -> dict[str, np.ndarray]:
    """Per-vertex weights (478,) of the lip, width and rounding displacements."""
    lips = list(LIPS_OUTER) + list(LIPS_INNER)
    upper, lower = list(UPPER_LIP), list(LOWER_LIP)
    centre_y = v[list(LIPS_INNER), 1].mean()
    corners = [LIPS_OUTER[0], LIPS_OUTER[10]]
    xc = v[corners, 0].mean()
    half_width = 0.5 * abs(v[corners[1], 0] - v[corners[0], 0])
    w_up = _fade(_nearest(v, upper), 0.5) * (v[:, 1] < centre_y)
    w_lo = _fade(_nearest(v, lower), 0.5) * (v[:, 1] > centre_y)
    w_up[upper], w_lo[lower] = 1.0, 1.0
    w_up[lower], w_lo[upper] = 0.0, 0.0
    near = _fade(_nearest(v, lips), 0.6)
    return {
        "upper": w_up,
        "lower": w_lo,
        "width": near * np.clip((v[:, 0] - xc) / half_width, -1.0, 1.0),
        "lips": _fade(_nearest(v, lips), 0.3),
    }


def _eyelid_gaps(v: np.ndarray) -> np.ndarray:
    """Per-vertex y displacement (478,) cm of fully closed eyes: each upper-lid point down
    to the lower lid at its x, the skin just above the lid following with a fade."""
    out = np.zeros(len(v))
    for upper, lower in EYELIDS:
        up, lo = list(upper), list(lower)
        order = np.argsort(v[lo, 0])
        target = np.interp(v[up, 0], v[lo, 0][order], v[lo, 1][order])
        gap = np.maximum(target - v[up, 1], 0.0)
        x0, x1 = v[lo, 0].min(), v[lo, 0].max()
        above = (v[:, 1] < v[up, 1].min()) & (v[:, 0] > x0) & (v[:, 0] < x1)
        out += above * _fade(_nearest(v, up), 0.3) * 0.3 * gap.mean()
        out[up] = gap
    return out
