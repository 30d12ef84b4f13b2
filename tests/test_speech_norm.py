"""APC's input (lsp_models.train.apc.apc_input: the bands the training speech never filled
left out) and the speech augmentations the mouth model trains on
(lsp_models.train.augment)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lsp_models.nets.apc import APC, APCConfig
from lsp_models.nets.mouth import MouthConfig
from lsp_models.train import augment as aug
from lsp_models.train.apc import apc_input, empty_bands
from lsp_prep import configtree
from lsp_prep.errors import CheckpointError, InputError

N_MELS = 80
CENTRES = aug.band_centres(N_MELS, 90.0, 7600.0)


def speechlike(t: int = 3000, seed: int = 0) -> np.ndarray:
    """Log-mel-like frames (t, 80): band levels around -4 with slow loud/quiet swings."""
    rng = np.random.default_rng(seed)
    envelope = 3.0 * np.sin(np.arange(t) / 17.0)[:, None]
    return (-4.0 + envelope + rng.normal(0.0, 1.0, (t, N_MELS))).astype(np.float32)


def stats(mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return mel.mean(0), mel.std(0) + 1e-5


def band_limited() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, std, top)``: statistics of training speech band-limited to 4 kHz (the
    bands above at the log floor, as the 8 kHz asterisk prompts give) and those bands."""
    train = speechlike(2000)
    top = CENTRES > 4000.0
    train[:, top] = np.log(1e-5)
    return (*stats(train), top)


def test_bands_the_training_speech_never_filled_are_left_out():
    """A full-band voice's energy above 4 kHz reached APC as ~1e5 (divided by a std of
    ~1e-5); left out, it reads 0, and every other band is as before."""
    mean, std, top = band_limited()
    voice = speechlike(500, seed=3)
    old = apc_input(APCConfig(), voice, mean, std)
    np.testing.assert_allclose(old, (voice - mean) / std, rtol=1e-6)  # every band, as before
    assert np.abs(old[:, top]).min() > 1e4
    new = apc_input(APCConfig(min_band_std=0.25), voice, mean, std)
    assert new.dtype == np.float32
    np.testing.assert_array_equal(new[:, top], 0.0)
    np.testing.assert_array_equal(new[:, ~top], old[:, ~top])
    np.testing.assert_array_equal(np.flatnonzero(empty_bands(std, 0.25)), np.flatnonzero(top))
    assert not empty_bands(std, 0.0).any()


def test_animate_and_training_read_the_same_bands():
    """encode_apc (animate, eval, the stream) and apc_features (training, the feature
    database) give the same features; streaming in chunks equals one call."""
    from lsp_models.infer.predict import encode_apc
    from lsp_models.train.apc import apc_features

    mean, std, _ = band_limited()
    torch.manual_seed(0)
    apc = APC(APCConfig(hidden=16, n_layers=2, min_band_std=0.25)).eval()
    models = SimpleNamespace(apc=apc, mel_mean=mean, mel_std=std, device=torch.device("cpu"))
    mel = speechlike(400, seed=4)
    whole, _ = encode_apc(models, mel, None)
    np.testing.assert_allclose(apc_features(apc, mel, mean, std), whole.reshape(200, -1), atol=1e-6)
    a, state = encode_apc(models, mel[:138], None)
    b, _ = encode_apc(models, mel[138:], state)
    torch.testing.assert_close(torch.cat([a, b]), whole, atol=1e-5, rtol=1e-5)


def test_old_checkpoints_keep_their_behaviour():
    """Configs written before these options existed load with them off."""
    apc = configtree.from_data(APCConfig, {"n_mels": 80, "hidden": 64, "n_layers": 3, "shift": 3})
    assert apc.min_band_std == 0.0
    mouth = configtree.from_data(MouthConfig, {"hidden": 64, "delay": 18, "depth": False})
    assert mouth.augment == aug.SpeechAugment() and mouth.augment.copies == 0
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
    rest = np.r_[0:10, 15:N_MELS]
    np.testing.assert_array_equal(out[:, rest], mel[:, rest])


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


def test_an_older_run_resumes_with_the_settings_it_was_trained_with(tmp_path):
    """A checkpoint written before min_band_std existed reads as 0 (every band): resuming
    it with 0 is allowed, with the presets' 0.25 refused, naming the setting."""
    from lsp_models.train.checkpoint import check_resume, save_plain

    old = {"n_mels": 80, "hidden": 64, "n_layers": 3, "shift": 3, "dropout": 0.0}
    path = save_plain(
        tmp_path / "apc.pt",
        {
            "checkpoint_version": 1,
            "stage": "apc",
            "step": 3,
            "extra": {},
            "model": {},
            "model_config": old,
        },
    )
    check_resume(path, stage="apc", model_config=APCConfig(hidden=64))
    with pytest.raises(CheckpointError, match=r"\(min_band_std: 0.0 -> 0.25\)"):
        check_resume(path, stage="apc", model_config=APCConfig(hidden=64, min_band_std=0.25))
