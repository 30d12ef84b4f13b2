"""Audio-visual sync (lsp_prep.stages.sync): the offset of speech against the lips.

Truth: a render whose mouth is driven by real speech has exact sync by construction; the
same speech moved by +-100 / +-200 ms must be found within one frame at 60 FPS, and an
unrelated stretch of speech must come out as low confidence, not as an offset.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from lsp_prep.config import IngestConfig, PrepConfig
from lsp_prep.errors import InputError
from lsp_prep.media import MediaInfo, load_audio
from lsp_prep.stages.pack import speech_track
from lsp_prep.stages.sync import (
    AVSync,
    estimate_av_offset,
    lip_opening,
    measure_sync,
    speech_activity,
    sync_warning,
)
from lsp_synth.audio import speech_envelope, write_wav

SR = 16_000
FPS = 60
FRAME_MS = 1000 / FPS
SHIFTS_MS = (-200, -100, 100, 200)
SYNCED_S = (5.0, 15.0)
"""The stretch of the speech sample that drives the mouth (its first 5 s are near silence)."""
UNRELATED_S = (17.0, 27.0)


def delayed(y: np.ndarray, ms: float) -> np.ndarray:
    """``y`` made ``ms`` milliseconds late (negative: early), same length."""
    s = int(round(ms * SR / 1000))
    pad = np.zeros(abs(s), np.float32)
    return np.concatenate([pad, y])[: len(y)] if s >= 0 else np.concatenate([y[-s:], pad])


@pytest.fixture(scope="module")
def speech(media) -> np.ndarray:
    return load_audio(media["speech"], sr=SR)


def stretch(y: np.ndarray, span: tuple[float, float]) -> np.ndarray:
    return y[int(span[0] * SR) : int(span[1] * SR)]


# ----------------------------------------------------------------------- on arrays (fast)


@pytest.mark.parametrize("shift_ms", [0, *SHIFTS_MS])
def test_offset_of_an_envelope_driven_mouth(speech, shift_ms):
    """Lips that open with the speech envelope (as the renders' do) plus measurement noise."""
    y = stretch(speech, SYNCED_S)
    n = int((SYNCED_S[1] - SYNCED_S[0]) * FPS)
    lips = speech_envelope(y, sr=SR, fps=FPS, n_frames=n)
    lips = lips + np.random.default_rng(0).normal(0, 0.15, n)
    act = speech_activity(delayed(y, shift_ms), sr=SR, fps=FPS, n_frames=n)
    sync = estimate_av_offset(lips, act, fps=FPS)
    assert sync.reliable, sync.confidence
    assert abs(sync.offset_ms - shift_ms) < FRAME_MS, sync.offset_ms
    assert sync.curve.shape == sync.lags_ms.shape == (61,)
    assert sync.curve.max() == pytest.approx(sync.correlation)


def test_unrelated_speech_is_low_confidence(speech):
    n = int((SYNCED_S[1] - SYNCED_S[0]) * FPS)
    lips = speech_envelope(stretch(speech, SYNCED_S), sr=SR, fps=FPS, n_frames=n)
    act = speech_activity(stretch(speech, UNRELATED_S), sr=SR, fps=FPS, n_frames=n)
    sync = estimate_av_offset(lips, act, fps=FPS)
    assert not sync.reliable and sync.confidence < 3.0
    assert "pass the right recording with --audio" in (
        sync_warning(sync, config=IngestConfig()) or ""
    )


def test_too_short_or_invalid_is_not_measured():
    sync = estimate_av_offset(np.ones(50), np.ones(50), fps=FPS)
    assert not sync.reliable and np.isnan(sync.offset_ms) and sync.confidence == 0
    lips = np.full(1000, np.nan)
    assert not estimate_av_offset(lips, np.ones(1000), fps=FPS).reliable


def test_lip_opening_is_the_inner_lip_gap():
    pts = np.zeros((2, 73, 3))
    pts[1, [61, 62, 63], 1] = 0.8  # lower inner lip 0.8 cm below the upper one
    pts[0, 58] = np.nan
    got = lip_opening(pts)
    assert np.isnan(got[0]) and got[1] == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("offset_ms", "frames", "expect"),
    [
        (120.0, 7.2, "comes 120 ms (7.2 frames at 60 FPS) after the lips"),
        (-90.0, -5.4, "comes 90 ms (5.4 frames at 60 FPS) before the lips"),
        (20.0, 1.2, None),
    ],
)
def test_warning_names_the_offset_and_the_fix(offset_ms, frames, expect):
    sync = AVSync(offset_ms, frames, 7.0, 0.6, True, np.zeros(1), np.zeros(1))
    got = sync_warning(sync, config=IngestConfig())
    if expect is None:
        assert got is None
    else:
        assert expect in got and f"--set ingest.av_offset_ms={offset_ms:.0f}" in got
    # with a shift already applied, the fix is the total
    if expect is not None:
        again = sync_warning(sync, config=IngestConfig(av_offset_ms=50))
        assert f"ingest.av_offset_ms={50 + offset_ms:.0f}" in again


def test_av_offset_ms_moves_the_speech_earlier(tmp_path):
    y = np.zeros(SR, np.float32)
    y[8000] = 0.9  # a click at 0.5 s
    wav = write_wav(tmp_path / "click.wav", y, sr=SR)
    info = MediaInfo(tmp_path / "v.mp4", 1.0, True, False)
    base = speech_track(tmp_path / "v.mp4", wav, info, n=60, config=IngestConfig())
    moved = speech_track(tmp_path / "v.mp4", wav, info, n=60, config=IngestConfig(av_offset_ms=100))
    assert len(base) == len(moved) == SR
    assert int(np.argmax(base)) == 8000 and int(np.argmax(moved)) == 8000 - 1600


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("ingest.av_offset_ms=20000", "av_offset_ms must be within"),
        ("ingest.av_max_lag_ms=0", "av_max_lag_ms must be in"),
        ("ingest.av_warn_frames=-1", "must be >= 0"),
    ],
)
def test_bad_sync_settings(item, message):
    with pytest.raises(InputError, match=message):
        PrepConfig().with_overrides([item])


# ------------------------------------------------------------- a rendered clip, prepped


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, portrait, speech) -> tuple[Path, np.ndarray]:
    """A 10 s 60 FPS render whose mouth follows real speech, and that speech."""
    from lsp_synth import mesh, pinhole, render3d

    out = tmp_path_factory.mktemp("sync")
    y = stretch(speech, SYNCED_S)
    motion = render3d.HeadMotion(
        yaw_deg=8.0, pitch_deg=5.0, roll_deg=3.0, shift_cm=(1.5, 1.0, 2.0), seed=1
    )
    render3d.render_head_clip(
        out / "talk.mp4",
        model=mesh.face_model(portrait.image),
        camera=pinhole.Camera(focal=500.0, size=(640, 360)),
        duration_s=SYNCED_S[1] - SYNCED_S[0],
        fps=FPS,
        motion=motion,
        audio=y,
    )
    return out / "talk.mp4", y


@pytest.mark.slow
def test_prep_finds_late_speech_and_the_setting_fixes_it(rendered, speech, tmp_path, lsp):
    video, y = rendered
    late = write_wav(tmp_path / "late.wav", delayed(y, 100), sr=SR)
    r = lsp("prep", video, "-o", tmp_path / "a", "--audio", late, "--no-progress")
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "after the lips" in out and "--set ingest.av_offset_ms=" in out
    with h5py.File(tmp_path / "a" / "talk.h5") as f:
        a = dict(f["audio"].attrs)
        points3d = np.where(f["landmarks/valid"][:][:, None, None], f["track/points3d"][:], np.nan)
        assert any("after the lips" in w for w in json.loads(f.attrs["warnings"]))
    assert a["av_reliable"] and a["av_confidence"] >= IngestConfig().av_min_confidence
    assert abs(a["av_offset_ms"] - 100) < FRAME_MS, a["av_offset_ms"]
    assert a["av_applied_offset_ms"] == 0
    assert a["av_curve"].shape == a["av_lags_ms"].shape

    # every shift, measured on the tracked lips of the render; unrelated speech flagged
    n = len(points3d)
    for shift_ms in (0, *SHIFTS_MS):
        sync = measure_sync(points3d, delayed(y, shift_ms), sr=SR, fps=FPS)
        assert sync.reliable, (shift_ms, sync.confidence)
        assert abs(sync.offset_ms - shift_ms) < FRAME_MS, (shift_ms, sync.offset_ms)
    other = stretch(speech, UNRELATED_S)[: n * SR // FPS]
    sync = measure_sync(points3d, other, sr=SR, fps=FPS)
    assert not sync.reliable and sync.confidence < IngestConfig().av_min_confidence

    # the printed fix, applied, leaves the clip in sync and quiet
    fix = round(a["av_offset_ms"])
    fixed = ("--set", f"ingest.av_offset_ms={fix}")
    r = lsp("prep", video, "-o", tmp_path / "b", "--audio", late, *fixed, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "lips" not in r.output
    with h5py.File(tmp_path / "b" / "talk.h5") as f:
        b = dict(f["audio"].attrs)
    assert abs(b["av_offset_ms"]) < FRAME_MS and b["av_applied_offset_ms"] == fix
