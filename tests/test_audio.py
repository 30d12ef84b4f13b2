"""Log-mel on the video clock: lengths line up for any clip, values match librosa."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from lsp_prep.errors import InputError
from lsp_prep.stages.audio import (
    MelConfig,
    align_waveform,
    log_mel,
    n_mel_frames,
    n_video_samples,
    video_log_mel,
)


@pytest.mark.parametrize("n_frames", [1, 2, 17, 59, 60, 61, 601, 18_001])
def test_two_mel_frames_per_video_frame_for_any_length(n_frames):
    sr, fps = 16_000, 60
    y = np.random.default_rng(n_frames).standard_normal(n_video_samples(n_frames)).astype("f4")
    mel = video_log_mel(y, sr=sr, n_video_frames=n_frames, fps=fps)
    assert mel.shape == (80, 2 * n_frames) == (80, n_mel_frames(n_frames))
    # the last mel frame is centred inside the clip: no drift over long clips
    last_centre_s = (mel.shape[1] - 1) / (2 * fps)
    assert last_centre_s < n_frames / fps


def test_frame_centres_follow_the_video_clock():
    """A click at the start of video frame i shows up in mel frame 2i, not 2i +- 1."""
    sr, fps, n = 16_000, 60, 36_000  # ten minutes: an integer hop of 133 would drift 90 frames
    clicks = [0, 1_000, 20_000, 35_990]
    y = np.zeros(n_video_samples(n), np.float32)
    for i in clicks:
        s = round(i * sr / fps)
        y[s : s + 8] = 1.0
    mel = video_log_mel(y, sr=sr, n_video_frames=n, fps=fps)
    energy = mel.mean(axis=0)
    for i in clicks:
        window = energy[2 * i - 2 : 2 * i + 3] if i else energy[:3]
        assert np.argmax(window) == (2 if i else 0), f"click at frame {i} misplaced"


def test_matches_librosa_where_the_hop_is_an_integer():
    sr = 16_000
    y = np.random.default_rng(0).standard_normal(sr).astype("f4")
    hop, n_fft, win = 160, 512, 400
    n = 1 + len(y) // hop
    ours = log_mel(
        y,
        sr=sr,
        n_frames=n,
        hop_length=hop,
        n_fft=n_fft,
        win_length=win,
        n_mels=80,
        fmin=90,
        fmax=7600,
    )
    ref = librosa.feature.melspectrogram(
        y=y,
        sr=sr,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        n_mels=80,
        fmin=90,
        fmax=7600,
        center=True,
        pad_mode="constant",
        power=2.0,
    )
    ref = np.log(np.maximum(ref, 1e-5))
    np.testing.assert_allclose(ours, ref[:, :n], atol=2e-3)


def test_defaults_are_the_papers():
    c = MelConfig()
    assert (c.n_mels, c.n_fft, c.fmin, c.fmax) == (80, 512, 90.0, 7600.0)
    assert c.win_s == pytest.approx(1 / 60)


def test_align_pads_and_trims_to_the_video_length():
    y = np.arange(1, 1001, dtype=np.float32)
    late = align_waveform(y, sr=1000, offset_s=0.1, n_video_frames=60, fps=60)
    assert len(late) == 1000 and late[99] == 0 and late[100] == 1
    early = align_waveform(y, sr=1000, offset_s=-0.1, n_video_frames=30, fps=60)
    assert len(early) == 500 and early[0] == 101


def test_bad_audio_shapes_and_configs():
    with pytest.raises(InputError, match="mono"):
        log_mel(np.zeros((2, 100)), n_frames=2, hop_length=50)
    with pytest.raises(InputError, match="fmin < fmax"):
        MelConfig(fmin=8000, fmax=7600)
