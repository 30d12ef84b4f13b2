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
    target_geometry,
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

MIN_TRAINING_R = 0.8
"""Lip-opening r on the training speech (schema-5 targets, two training seeds: 0.90 and
0.86, both at lag 0; mouth error 1.11 and 1.14 mm against a 1.58 mm mean baseline)."""

MAX_ERROR_RATIO = 0.8
"""Mouth error against the mean baseline on the training speech (measured 0.71 and 0.73)."""


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
    assert abs(score.lag) <= 1, score  # the target; measured 0
    assert score.error_mm < MAX_ERROR_RATIO * score.baseline_mm, score
    split = variance_split(speaker, dataset)
    # the targets are >= 60 % and <= 5 %; measured 56 % and -12 % (nothing) here
    assert split["all 25"]["truth mouth"] > 0.45, split
    assert split["all 25"]["head pose"] < 0.05, split
    assert np.isfinite([v for g in split.values() for v in g.values()]).all()
    geometry = target_geometry(speaker, dataset, frame)
    # the targets carry the truth (a linear readout of it from them), in another geometry:
    # the lips open less far than the truth's (180 s render: readout 0.18, lips 0.70x)
    assert geometry["readout"] < 0.4, geometry
    assert 0.4 < geometry["lips_y"] < 0.95, geometry
