"""Speaker/channel normalisation of APC's log-mel (lsp_models.melnorm) and the speech
augmentations the mouth model trains on (lsp_models.train.augment)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lsp_models.melnorm import empty_bands, normalise_mel
from lsp_models.nets.apc import APC, APCConfig
from lsp_models.nets.mouth import MouthConfig
from lsp_models.train import augment as aug
from lsp_prep import configtree
from lsp_prep.errors import InputError

N_MELS = 80
CENTRES = aug.band_centres(N_MELS, 90.0, 7600.0)


def speechlike(t: int = 3000, seed: int = 0) -> np.ndarray:
    """Log-mel-like frames (t, 80): band levels around -4 with slow loud/quiet swings."""
    rng = np.random.default_rng(seed)
    envelope = 3.0 * np.sin(np.arange(t) / 17.0)[:, None]
    return (-4.0 + envelope + rng.normal(0.0, 1.0, (t, N_MELS))).astype(np.float32)


def stats(mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return mel.mean(0), mel.std(0) + 1e-5


def test_global_is_the_training_statistics():
    mel = speechlike()
    mean, std = np.full(N_MELS, -3.0), np.full(N_MELS, 2.0)
    x, state = normalise_mel(mel, mean=mean, std=std, how="global")
    np.testing.assert_allclose(x, (mel + 3.0) / 2.0, rtol=1e-6)
    assert x.dtype == np.float32 and state is None


def test_running_frames_follow_the_formula():
    mel = speechlike(50)
    m0, s0 = np.full(N_MELS, -2.0), np.full(N_MELS, 1.5)
    p = 10.0
    x, state = normalise_mel(mel, mean=m0, std=s0, how="running", prior_frames=p)
    for t in (0, 7, 49):
        seen = mel[: t + 1].astype(np.float64)
        mu = (p * m0 + seen.sum(0)) / (p + t + 1)
        var = (p * (s0**2 + m0**2) + (seen**2).sum(0)) / (p + t + 1) - mu**2
        np.testing.assert_allclose(x[t], (mel[t] - mu) / np.sqrt(var), rtol=1e-5, atol=1e-6)
    assert state is not None and state.count == p + 50


def test_running_in_chunks_equals_one_call_exactly():
    mel = speechlike(1000)
    mean, std = stats(speechlike(seed=1))
    whole, _ = normalise_mel(mel, mean=mean, std=std, how="running")
    parts, state, pos = [], None, 0
    for step in (1, 0, 17, 300, 2, 680):
        x, state = normalise_mel(
            mel[pos : pos + step], mean=mean, std=std, how="running", state=state
        )
        parts.append(x)
        pos += step
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_running_removes_a_level_and_a_microphone():
    """The same speech 12 dB louder through a tilted channel: the global normalisation
    shifts every band by its offset, the running one converges to the original's."""
    mel = speechlike(6000)
    mean, std = stats(mel)
    other = aug.tilt(aug.gain(mel, 12.0), 4.0, CENTRES)
    g0, _ = normalise_mel(mel, mean=mean, std=std, how="global")
    g1, _ = normalise_mel(other, mean=mean, std=std, how="global")
    r0, _ = normalise_mel(mel, mean=mean, std=std, how="running")
    r1, _ = normalise_mel(other, mean=mean, std=std, how="running")
    err = np.abs(r1 - r0).mean(1)  # (T,): the prior's pull fades as prior / (prior + t)
    assert np.abs(g1 - g0).mean() > 1.4  # measured 1.44 on every frame
    assert err[:100].mean() > 0.9 and err[1000:2000].mean() < 0.2 and err[5000:].mean() < 0.07
    # a huge prior is the global normalisation
    big, _ = normalise_mel(mel, mean=mean, std=std, how="running", prior_frames=1e12)
    np.testing.assert_allclose(big, g0, atol=1e-4)


@pytest.mark.parametrize("how", ["global", "running"])
def test_bands_the_training_speech_never_filled_are_left_out(how):
    """Training speech band-limited to 4 kHz (the top bands at the log floor): a full-band
    voice's energy there reached APC as ~1e5 (divided by std ~1e-5); left out, it reads 0."""
    train = speechlike(2000)
    top = CENTRES > 4000.0
    train[:, top] = np.log(1e-5)
    mean, std = stats(train)
    voice = speechlike(500, seed=3)
    x, _ = normalise_mel(voice, mean=mean, std=std, how=how)
    kept, _ = normalise_mel(voice, mean=mean, std=std, how=how, min_band_std=0.25)
    if how == "global":
        assert np.abs(x[:, top]).min() > 1e4
    np.testing.assert_array_equal(kept[:, top], 0.0)
    np.testing.assert_array_equal(kept[:, ~top], x[:, ~top])
    np.testing.assert_array_equal(np.flatnonzero(empty_bands(std, 0.25)), np.flatnonzero(top))
    assert not empty_bands(std, 0.0).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"how": "utterance"}, "mel normalisation must be global or running, got 'utterance'"),
        ({"how": "running", "prior_frames": 0.0}, "prior_frames must be positive, got 0.0"),
    ],
)
def test_normalise_refuses(kwargs, message):
    mean, std = np.zeros(N_MELS), np.ones(N_MELS)
    with pytest.raises(InputError, match=message):
        normalise_mel(speechlike(10), mean=mean, std=std, **kwargs)


def test_encode_apc_streams_with_the_running_normalisation():
    from lsp_models.infer.predict import encode_apc

    torch.manual_seed(0)
    apc = APC(APCConfig(hidden=16, n_layers=2, normalise="running", prior_s=0.5)).eval()
    mel = speechlike(400)
    mean, std = stats(speechlike(seed=2))
    models = SimpleNamespace(apc=apc, mel_mean=mean, mel_std=std, device=torch.device("cpu"))
    whole, _ = encode_apc(models, mel, None)
    a, state = encode_apc(models, mel[:138], None)
    b, _ = encode_apc(models, mel[138:], state)
    torch.testing.assert_close(torch.cat([a, b]), whole, atol=1e-5, rtol=1e-5)
    glob = SimpleNamespace(**{**vars(models), "apc": APC(APCConfig(hidden=16, n_layers=2))})
    glob.apc.load_state_dict(apc.state_dict())
    assert not torch.allclose(encode_apc(glob, mel, None)[0], whole, atol=1e-3)


def test_old_checkpoints_keep_their_behaviour():
    """Configs written before these options existed load with them off."""
    apc = configtree.from_data(APCConfig, {"n_mels": 80, "hidden": 64, "n_layers": 3, "shift": 3})
    assert apc.normalise == "global" and apc.min_band_std == 0.0
    mouth = configtree.from_data(MouthConfig, {"hidden": 64, "delay": 18, "depth": False})
    assert mouth.augment == aug.SpeechAugment() and mouth.augment.copies == 0
    with pytest.raises(InputError, match="apc.normalise must be global or running"):
        APCConfig(normalise="utterance")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"apc.min_band_std must be in \[0, 1\), got 1.0"):
        APCConfig(min_band_std=1.0)


# ---------------------------------------------------------------------------- augmentation


def test_gain_and_tilt_values():
    mel = speechlike(20)
    np.testing.assert_allclose(aug.gain(mel, 10.0), mel + np.log(10.0), rtol=1e-6)
    tilted = aug.tilt(mel, 6.0, CENTRES) - mel  # (20, 80), the same on every frame
    octaves = np.log2(CENTRES / 1000.0)
    np.testing.assert_allclose(tilted[3], 6.0 * aug.DB * octaves, rtol=1e-5, atol=1e-6)
    assert np.abs(tilted[0, np.argmin(np.abs(octaves))]) < 0.03  # the band nearest 1 kHz


def test_warp_moves_a_formant():
    band = int(np.argmin(np.abs(CENTRES - 1000.0)))
    mel = np.full((1, N_MELS), -10.0)
    mel[0, band] = 0.0  # a peak at ~1 kHz
    np.testing.assert_array_equal(aug.warp(mel, 1.0, CENTRES), mel)
    up = aug.warp(mel, 1.2, CENTRES)
    peak = CENTRES[np.argmax(up[0])]
    assert abs(peak / CENTRES[band] - 1.2) < 0.05, peak
    with pytest.raises(InputError, match="warp factor must be positive, got 0"):
        aug.warp(mel, 0.0, CENTRES)


def test_noise_at_its_snr():
    mel = np.full((10, N_MELS), -3.0)  # every frame as loud: each band gains 1 % power at 20 dB
    np.testing.assert_allclose(aug.add_noise(mel, 20.0), -3.0 + np.log(1.01), rtol=1e-9)
    speech = speechlike(400)
    quiet = aug.add_noise(speech, 30.0) - speech
    loud = aug.add_noise(speech, 10.0) - speech
    assert (quiet >= 0).all() and (loud > quiet).all()


def test_mask_bands_flattens_only_its_bands():
    mel = speechlike(30)
    out = aug.mask_bands(mel, 10, 5)
    np.testing.assert_allclose(out[:, 10:15], np.broadcast_to(mel[:, 10:15].mean(0), (30, 5)))
    np.testing.assert_array_equal(np.delete(out, range(10, 15), 1), np.delete(mel, range(10, 15), 1))


def test_augment_copy_is_seeded_and_off_by_default():
    mel = speechlike(200)
    config = aug.SpeechAugment(copies=2, warp=0.1, tilt_db=3, gain_db=6, snr_db=20, masks=2)
    a = aug.augment_copy(mel, config, centres=CENTRES, seed=(0, 1))
    np.testing.assert_array_equal(a, aug.augment_copy(mel, config, centres=CENTRES, seed=(0, 1)))
    b = aug.augment_copy(mel, config, centres=CENTRES, seed=(0, 2))
    assert np.abs(a - b).mean() > 0.1
    none = aug.augment_copy(mel, aug.SpeechAugment(), centres=CENTRES, seed=0)
    np.testing.assert_array_equal(none, mel)
    with pytest.raises(InputError, match=r"mouth.augment.warp must be in \[0, 0.5\), got 0.6"):
        aug.SpeechAugment(warp=0.6)
