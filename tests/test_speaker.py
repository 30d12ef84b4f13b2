"""The speech-driven synthetic speaker (lsp_synth.speaker): the rule's lead, width against
spectral shape, level invariance, blinks, and a mesh whose skull stays rigid."""

from __future__ import annotations

import numpy as np
import pytest

from lsp_prep.errors import InputError
from lsp_synth import mesh as synth_mesh
from lsp_synth.speaker import EYELIDS, MOUTH_PARAMS, SpeakerRule, lip_opening_cm

SR = 16_000
FPS = 100.0
"""Frames 10 ms apart, so a 40 ms lead is 4 frames."""


def vowel(formants: tuple[float, ...], seconds: float, *, f0: float = 120.0) -> np.ndarray:
    """A voiced sound: harmonics of ``f0`` weighted by resonances at ``formants`` (Hz)."""
    t = np.arange(int(seconds * SR)) / SR
    y = np.zeros_like(t)
    for k in range(1, int(3800 / f0)):
        f = k * f0
        gain = sum(1.0 / (1.0 + ((f - fm) / 80.0) ** 2) for fm in formants)
        y += gain * np.sin(2 * np.pi * f * t)
    return 0.3 * y / np.abs(y).max()


def syllables(seconds: float, seed: int) -> np.ndarray:
    """Random-length vowels and pauses (the rhythm of speech), from a seeded generator."""
    rng = np.random.default_rng(seed)
    parts = []
    while sum(map(len, parts)) < seconds * SR:
        parts.append(rng.uniform(0.3, 1.0) * vowel((700.0, 1200.0), rng.uniform(0.08, 0.3)))
        parts.append(np.zeros(int(rng.uniform(0.05, 0.25) * SR)))
    return np.concatenate(parts)[: int(seconds * SR)]


def test_mouth_leads_the_sound_by_the_documented_lead() -> None:
    y = syllables(8.0, seed=0)
    n = int(8.0 * FPS)
    led = SpeakerRule().params(y, sr=SR, fps=FPS, n_frames=n)[:, 0]
    heard = SpeakerRule(lead_s=0.0).params(y, sr=SR, fps=FPS, n_frames=n)[:, 0]
    lags = np.arange(-10, 11)
    # corr(led[t], heard[t + k]) peaks at k = lead: frame t shows the sound of t + 40 ms
    corr = [np.corrcoef(led[20:-20], np.roll(heard, -k)[20:-20])[0, 1] for k in lags]
    assert lags[int(np.argmax(corr))] == 4
    assert max(corr) > 0.999


def test_width_spreads_on_high_and_rounds_on_low_spectra() -> None:
    n = int(1.0 * FPS)
    rule = SpeakerRule()
    ee = rule.params(vowel((300.0, 2300.0), 1.0), sr=SR, fps=FPS, n_frames=n)
    oo = rule.params(vowel((300.0, 700.0), 1.0), sr=SR, fps=FPS, n_frames=n)
    mid = slice(20, 80)
    assert ee[mid, 2].min() > 0.3  # "ee": spread
    assert oo[mid, 2].max() < -0.3  # "oo": rounded
    # the low band is as loud in both: the jaw does not follow the width
    np.testing.assert_allclose(ee[mid, 0], oo[mid, 0], atol=0.05)


def test_levels_do_not_depend_on_the_recording_level() -> None:
    y = syllables(5.0, seed=1)
    n = int(5.0 * FPS)
    loud = SpeakerRule().params(y, sr=SR, fps=FPS, n_frames=n)
    quiet = SpeakerRule().params(0.05 * y, sr=SR, fps=FPS, n_frames=n)
    np.testing.assert_allclose(loud, quiet, atol=1e-6)
    assert loud[:, 0].max() > 0.95  # loud speech opens the jaw fully
    silent = SpeakerRule().params(np.zeros(SR), sr=SR, fps=FPS, n_frames=n)
    assert not silent[:, :3].any()


def test_blinks_are_seeded_spaced_and_complete() -> None:
    t = np.arange(0, 60.0, 0.01)
    b = SpeakerRule(seed=3).blinks(t)
    np.testing.assert_array_equal(b, SpeakerRule(seed=3).blinks(t))
    assert not np.array_equal(b, SpeakerRule(seed=4).blinks(t))
    starts = t[1:][(b[1:] > 0) & (b[:-1] == 0)]
    assert 8 <= len(starts) <= 25  # one every 4 s on average over a minute
    assert np.diff(starts).min() >= 1.0
    assert b.max() > 0.99 and b.min() == 0.0


@pytest.fixture(scope="module")
def model(portrait) -> synth_mesh.FaceModel:
    return synth_mesh.face_model(portrait.image)


SKULL = (1, 4, 6, 10, 33, 133, 168, 263, 362, 234, 454, 127, 356, 197, 195)
"""MediaPipe points of the rigid skull: nose, forehead, eye corners, temples, cheekbones."""


def test_deformation_keeps_the_skull_rigid_and_moves_what_it_says(model) -> None:
    rule = SpeakerRule()
    rng = np.random.default_rng(0)
    params = np.column_stack(
        [
            rng.uniform(0, 1, 50),
            rng.uniform(0, 1, 50),
            rng.uniform(-1, 1, 50),
            rng.uniform(0, 1, 50),
        ]
    )
    pts = rule.deform(model, params)
    assert pts.shape == (50, 478, 3)
    np.testing.assert_array_equal(
        pts[:, list(SKULL)], np.repeat(model.vertices[None, list(SKULL)], 50, 0)
    )
    rest = lip_opening_cm(model.vertices[None])[0]
    full = rule.deform(model, np.array([[1.0, 1.0, 0.0, 0.0]]))
    assert lip_opening_cm(full)[0] - rest == pytest.approx(rule.jaw_cm + rule.lips_cm, abs=0.05)
    spread = rule.deform(model, np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, -1.0, 0.0]]))
    corners = spread[:, [61, 291], 0]
    assert corners[0, 1] - corners[0, 0] > corners[1, 1] - corners[1, 0] + 3 * rule.width_cm
    assert spread[1, 0, 2] < model.vertices[0, 2] - 0.5 * rule.protrude_cm  # rounded: forward
    closed = rule.deform(model, np.array([[0.0, 0.0, 0.0, 1.0]]))[0]
    for upper, lower in EYELIDS:
        mid_up, mid_lo = upper[3], lower[3]
        assert abs(closed[mid_up, 1] - closed[mid_lo, 1]) < 0.05  # the lid meets the lower lid
        assert model.vertices[mid_lo, 1] - model.vertices[mid_up, 1] > 0.3


def test_bad_rules_and_params_are_refused(model) -> None:
    with pytest.raises(InputError, match="lead_s must be >= 0"):
        SpeakerRule(lead_s=-0.01)
    with pytest.raises(InputError, match=r"low_hz must be \(low, high\)"):
        SpeakerRule(low_hz=(900.0, 150.0))
    with pytest.raises(InputError, match=r"params must be \(N, 4\)"):
        SpeakerRule().deform(model, np.zeros((3, 2)))
    assert len(MOUTH_PARAMS) == 4
