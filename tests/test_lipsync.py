"""A small benchmarks/lipsync.py: a speech-driven synthetic speaker is rendered, prepped and
trained on (cpu-small, short), and the animated mouth follows the speaker's own speech."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.lipsync import (
    SpeakerSetup,
    fit_frame,
    prep_speaker,
    render_speaker,
    score_speech,
    train_run,
    variance_split,
)
from lsp_prep.constants import SAMPLE_RATE
from lsp_prep.media import load_audio

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SETUP = SpeakerSetup(seconds=30.0, size=(640, 360), focal=700.0, distance_cm=55.0)
"""30 s of the speaker, small frames: a minute or two of render and prep on 2 cores."""

TRAINING = ["apc_train.max_steps=50", "mouth_train.max_steps=100", "headpose_train.max_steps=20"]
"""Short training: enough to fit the speaker's own speech (the benchmark trains fully)."""

MIN_TRAINING_R = 0.75
"""Lip-opening r on the training speech (measured 0.89 at lag 0; mouth error 1.15 mm
against a 1.58 mm mean baseline)."""


def test_the_models_learn_the_speakers_lip_sync(tmp_path) -> None:
    speaker = render_speaker(tmp_path / "render", SETUP)
    n = round(SETUP.seconds * SETUP.fps)
    assert speaker.params.shape == (n, 4) and speaker.mouth_points.shape == (n, 25, 3)
    assert len(list(speaker.corpus.iterdir())) > 400  # the prompts not rendered
    dataset = prep_speaker(speaker, tmp_path / "data")
    run = tmp_path / "run"
    seconds = train_run(run, dataset, corpus=None, delays=[18], overrides=TRAINING)
    assert set(seconds) == {"apc", "mouth", "headpose"}
    frame = fit_frame(speaker, dataset)
    assert 0.5 < frame.scale < 2.0  # the dataset's nominal cm against the mesh's cm
    y = load_audio(speaker.voice, sr=SAMPLE_RATE)
    score = score_speech(run, dataset, frame, SETUP.rule, {"training": y})
    assert score.r0 > MIN_TRAINING_R, score
    assert abs(score.lag) <= 3, score
    assert score.error_mm < 0.9 * score.baseline_mm, score
    split = variance_split(speaker, dataset)
    assert split["all 25"]["truth mouth"] > 0.2, split  # measured 0.36 (pose: 0.20)
    assert np.isfinite([v for g in split.values() for v in g.values()]).all()
