"""Lip sync, measured where the relation between sound and mouth is known (issue 12).

    python benchmarks/lipsync.py [--work DIR] [--seconds 150] [--apc corpus own [multi]]
                                 [--multi-minutes 10] [--delays 18 0] [--renderer]
                                 [--threads 1] [--set key=value ...]

1. **The speaker.** A real photo's head (scikit-image's astronaut) speaks 2.5 minutes of
   real recorded speech of one woman (Debian's asterisk-core-sounds-en-wav prompts, in a
   seeded random order, 0.25 s apart); its jaw, lips, width and rounding follow the audio
   by the rule of :mod:`lsp_synth.speaker` (the mouth 40 ms ahead of the sound) and it
   blinks; the head moves by :class:`lsp_synth.render3d.HeadMotion` (+-20 degrees yaw,
   +-10 pitch, +-5 roll), 960x540 at 30 FPS.
2. ``lsp prep`` of that clip (the voice given as the lossless WAV).
3. ``lsp train`` at ``--preset cpu-small``: APC on the REST of the prompts (about 22 min,
   never rendered; ``--apc own``: on the person's own audio instead, issue 12 item 5;
   ``--apc multi``: on up to ``--multi-minutes`` of each of five speakers, those prompts
   and four more voices in French, Italian and Russian, :data:`MULTI_PACKAGES`),
   the mouth model once per ``--delays`` value (``mouth.delay``), the head-pose model
   (needed to load a run; its numbers are benchmarks/headmotion.py's). The renderer only
   with ``--renderer`` (the mouth numbers do not need it; it adds an ``lsp animate`` video).
4. The motion ``lsp animate`` computes (:func:`lsp_models.infer.predict.predict_motion`,
   which the animate stream equals frame for frame; the recorded head pose replayed) on
   held-out speech of speakers never heard in training (pyannote's sample: two people;
   codec2's test speech: david4 and speech_orig_16k; f5-tts's English references: two
   more), and on 30 s of the training speech.

The table, per APC source and mouth delay: ``val err`` / ``val base``: ``lsp eval``'s mouth
error on the dataset's val split against its tracked targets and the predict-the-mean
baseline (mm); on each speech set, ``err`` / ``base``: the predicted mouth points against
the truth (the rule's mesh for that audio, placed in the dataset's object frame by one
similarity fitted on the rendered frames; both as displacements from their means over the
render, so the baseline is "the mean mouth"), mm; ``r0``: Pearson r of the inner-lip
opening (animate's smoothed mouth) with the truth's at lag 0; ``r*`` and ``lag``: the best
r within +-15 frames (60 FPS) and its lag (positive: the prediction is late). Then, per
APC, how well it predicts each speech clip's log-mel (:func:`apc_prediction`).

Then the variance split of the dataset's mouth targets (``track/mouth_displacement``):
R^2 on the val frames of a linear regression fitted on the train frames, from the truth
mouth parameters (jaw, lips, width), from the true head pose (yaw, pitch, roll), and both;
for all 25 points, the 7 jaw-contour points and the 18 lip points. Then the targets taken
as a prediction of the truth (err/base, and their RMS against the truth's), and the floor
they set: err/base on the val frames of their expected value given the truth's mouth
parameters (a linear fit on the train frames), the best an audio model trained on them can
do; both again for their x and y with the depth left at the mean, what a model trained with
``mouth.depth=false`` (the presets) learns. Last, minutes per training stage. Targets
(issue 12): held-out r >= 0.85 at |lag| <= 1 and error <= 0.5x the baseline; truth
explains >= 60 % of the targets' variance, pose <= 5 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lsp_prep.constants import SAMPLE_RATE
from lsp_synth.mesh import FaceModel
from lsp_synth.speaker import MOUTH_PARAMS, SpeakerRule

console = Console(width=200)

MULTI_PACKAGES = (
    "asterisk_prompts_fr",
    "asterisk_prompts_it",
    "asterisk_prompts_ru",
    "asterisk_prompts_it_menardi",
)
"""The other speakers of ``--apc multi`` (:data:`lsp_synth.samples.PACKAGES`), beside the
English prompts that are not rendered."""
MULTI_MINUTES = 10.0
"""Default of ``--multi-minutes``: at most this much of each speaker in ``--apc multi``."""
MAX_LAG = 15
"""Best-lag search range (60 FPS frames each way)."""
ANIMATE_FPS = 60
"""Frame rate of the animated motion (lsp_prep.constants.FPS)."""


@dataclass(frozen=True)
class SpeakerSetup:
    """The rendered speaker: duration, camera, motion, rule."""

    seconds: float = 150.0
    size: tuple[int, int] = (960, 540)
    focal: float = 1000.0
    fps: float = 30.0
    distance_cm: float = 70.0
    yaw_deg: float = 20.0
    pitch_deg: float = 10.0
    roll_deg: float = 5.0
    motion_seed: int = 2
    gap_s: float = 0.25
    """Silence between consecutive prompts."""
    order_seed: int = 0
    """Seed of the prompts' order (those that fill ``seconds`` are rendered, the rest are
    the APC corpus)."""
    rule: SpeakerRule = field(default_factory=SpeakerRule)


@dataclass
class Speaker:
    """A rendered speaker: the clip, its voice, the APC corpus of the other prompts and the
    truth (mouth parameters (N, 4), Euler angles (N, 3) degrees, LSP mouth points
    (N, 25, 3) object cm, all at the clip's frame rate)."""

    video: Path
    voice: Path
    corpus: Path
    fps: float
    params: np.ndarray
    euler_deg: np.ndarray
    mouth_points: np.ndarray


def prompt_files() -> list[Path]:
    """Every asterisk prompt (one speaker), sorted by path."""
    from lsp_synth.samples import fetch_package

    return sorted(fetch_package("asterisk_prompts").rglob("*.wav"))


def speaker_audio(setup: SpeakerSetup) -> tuple[np.ndarray, list[Path], list[Path]]:
    """``(y (S,) 16 kHz, rendered prompts, corpus prompts)``: prompts in a seeded order,
    ``gap_s`` apart, until ``seconds`` are filled; the rest for APC."""
    from lsp_prep.media import load_audio

    files = prompt_files()
    order = np.random.default_rng(setup.order_seed).permutation(len(files))
    gap = np.zeros(int(setup.gap_s * SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    used: list[Path] = []
    total = int(setup.seconds * SAMPLE_RATE)
    for i in order:
        if sum(map(len, parts)) >= total:
            break
        parts += [load_audio(files[i], sr=SAMPLE_RATE), gap]
        used.append(files[i])
    rest = [f for f in files if f not in set(used)]
    return np.concatenate(parts)[:total], used, rest


def render_speaker(work: Path, setup: SpeakerSetup) -> Speaker:
    """Render the speaker into ``work`` (reused when ``work/truth.npz`` exists)."""
    from lsp_prep.layout import load_layout
    from lsp_synth import render3d
    from lsp_synth.audio import write_wav
    from lsp_synth.pinhole import Camera
    from lsp_synth.samples import fetch_package

    work.mkdir(parents=True, exist_ok=True)
    video, voice, corpus = work / "speaker.mp4", work / "speaker.wav", work / "corpus"
    truth_file = work / "truth.npz"
    if not truth_file.is_file():
        y, _, rest = speaker_audio(setup)
        shutil.rmtree(corpus, ignore_errors=True)
        corpus.mkdir()
        root = fetch_package("asterisk_prompts")
        for f in rest:  # flat names: letters/a.wav and phonetic/a.wav both exist
            (corpus / "_".join(f.relative_to(root).parts)).symlink_to(f)
        write_wav(voice, y, sr=SAMPLE_RATE)
        truth = render3d.render_head_clip(
            video,
            model=speaker_face(),
            camera=Camera(focal=setup.focal, size=setup.size),
            duration_s=setup.seconds,
            fps=setup.fps,
            motion=render3d.HeadMotion(
                yaw_deg=setup.yaw_deg,
                pitch_deg=setup.pitch_deg,
                roll_deg=setup.roll_deg,
                distance_cm=setup.distance_cm,
                seed=setup.motion_seed,
            ),
            audio=y,
            speaker=setup.rule,
        )
        layout = load_layout()
        mouth = truth.points_obj[:, layout.mediapipe_index[layout.mouth]]
        np.savez(
            truth_file,
            params=truth.mouth_params,
            euler_deg=truth.euler_deg,
            mouth_points=mouth,
            fps=truth.fps,
        )
    t = np.load(truth_file)
    return Speaker(
        video, voice, corpus, float(t["fps"]), t["params"], t["euler_deg"], t["mouth_points"]
    )


def wav_seconds(path: Path) -> float:
    """Duration of a PCM WAV file from its header (no decoding)."""
    import wave

    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def multi_corpus(
    folder: Path, speakers: dict[str, list[Path]], *, minutes: float, seed: int = 0
) -> dict[str, float]:
    """Make ``folder`` (anew) a balanced multi-speaker corpus: per speaker of ``speakers``
    (name -> its WAV files), its files in a seeded order, each taken while the speaker's
    total stays within ``minutes``, as symlinks ``NAME_INDEX_FILENAME``. Returns the
    minutes taken per speaker. The folder appears complete or not at all."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    taken: dict[str, float] = {}
    for name, files in speakers.items():
        order = np.random.default_rng(seed).permutation(len(files))
        total = 0.0
        for i in order:
            seconds = wav_seconds(files[i])
            if total + seconds > 60 * minutes:
                continue
            total += seconds
            (partial / f"{name}_{i:04d}_{files[i].name}").symlink_to(files[i].resolve())
        taken[name] = total / 60
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return taken


def multi_speakers(speaker: Speaker) -> dict[str, list[Path]]:
    """The speakers of ``--apc multi``: the prompts not rendered, then :data:`MULTI_PACKAGES`
    (fetched when needed)."""
    from lsp_synth.samples import fetch_package

    out = {"en": sorted(speaker.corpus.iterdir())}
    for name in MULTI_PACKAGES:
        out[name.removeprefix("asterisk_prompts_")] = sorted(fetch_package(name).rglob("*.wav"))
    return out


def prep_speaker(speaker: Speaker, out_dir: Path) -> Path:
    """``lsp prep`` of the rendered clip with its WAV voice; the dataset's path."""
    from lsp_prep.pipeline import prep_video

    return prep_video(speaker.video, out_dir=out_dir, audio=speaker.voice).dataset


def train_run(
    run: Path,
    dataset: Path,
    *,
    corpus: Path | None,
    delays: list[int],
    overrides: list[str],
    headpose_from: Path | None = None,
    renderer: bool = False,
) -> dict[str, float]:
    """APC (on ``corpus``, or the person's audio when None), one mouth model per delay
    (folder ``mouth`` for the first, ``mouth_dD`` for the others), the head-pose model
    (copied from ``headpose_from`` when given) and, with ``renderer``, the renderer.
    Returns training seconds per stage (RUN/lipsync_seconds.json keeps them for reruns;
    a stage trained elsewhere counts 0 s); stages already trained are kept."""

    def stage(name: str, folder: str, sets: list[str], **inputs) -> None:
        train_once(run, dataset, name, folder, [*overrides, *sets], **inputs)

    stage("apc", "apc", [], corpus=corpus)
    for i, d in enumerate(delays):
        name = mouth_folder(d, first=i == 0)
        stage("mouth", name, [f"mouth.delay={d}"])
    if headpose_from is not None and not (run / "headpose").is_dir():
        shutil.copytree(headpose_from, run / "headpose")
    stage("headpose", "headpose", [])
    if renderer:
        stage("renderer", "renderer", [])
    return training_seconds(run)


def training_seconds(run: Path) -> dict[str, float]:
    """Training seconds per folder of ``run`` (RUN/lipsync_seconds.json)."""
    record = run / "lipsync_seconds.json"
    return json.loads(record.read_text()) if record.is_file() else {}


def train_once(
    run: Path, dataset: Path, stage: str, folder: str, overrides: list[str], **inputs
) -> float:
    """Train ``stage`` at cpu-small with ``overrides`` into RUN/``folder`` unless its checkpoint
    is there; its training seconds (kept in RUN/lipsync_seconds.json; 0 when trained
    elsewhere)."""
    from lsp_models.config import load_preset
    from lsp_models.train.runner import RunInputs, train_stage

    seconds = training_seconds(run)
    if (run / folder / f"{stage}.pt").is_file():
        seconds.setdefault(folder, 0.0)
        (run / "lipsync_seconds.json").write_text(json.dumps(seconds))
        return seconds[folder]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = load_preset("cpu-small", overrides)
        t = time.perf_counter()
        args = RunInputs(run_dir=run, dataset=dataset, resume=False, **inputs)
        if stage == "mouth":
            args = dataclasses.replace(args, mouth_name=folder)
        train_stage(stage, config=config, inputs=args)
    seconds[folder] = time.perf_counter() - t
    (run / "lipsync_seconds.json").write_text(json.dumps(seconds))
    return seconds[folder]


def mouth_folder(delay: int, *, first: bool) -> str:
    return "mouth" if first else f"mouth_d{delay}"


def heldout_speech() -> dict[str, np.ndarray]:
    """Speech of speakers the training never heard, 16 kHz: name -> (S,)."""
    from lsp_prep.media import load_audio
    from lsp_synth.samples import fetch, fetch_package

    codec2 = fetch_package("codec2_speech")
    files = {
        "pyannote (2 people)": fetch("speech"),
        "codec2 david4": codec2 / "wav" / "david4.wav",
        "codec2 speech_orig": codec2 / "raw" / "speech_orig_16k.wav",
        "f5 reference_en": fetch("f5_reference_en"),
        "f5 town": fetch("f5_town"),
    }
    return {k: load_audio(p, sr=SAMPLE_RATE) for k, p in files.items()}


@dataclass
class Frame:
    """The rendered truth placed in the dataset's object frame (a similarity fitted on the
    render's valid frames), with both series' means over the render."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    shift: np.ndarray  # (3,)
    truth_mean: np.ndarray  # (25, 3) mean aligned truth mouth over the render
    tracked_mean: np.ndarray  # (25, 3) mean tracked mouth over the render

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.shift


def source_frames(n_dataset: int, fps: float) -> np.ndarray:
    """The rendered frame (at ``fps``) shown in each 60 FPS dataset frame."""
    return np.floor(np.arange(n_dataset) * fps / ANIMATE_FPS + 1e-6).astype(np.int64)


def fit_frame(speaker: Speaker, dataset: Path) -> Frame:
    """Similarity from the truth's object frame to the dataset's (Umeyama, all mouth points
    of all valid frames)."""
    tracked, valid, _, _ = tracked_mouth(dataset)
    src = speaker.mouth_points[
        np.minimum(source_frames(len(valid), speaker.fps), len(speaker.mouth_points) - 1)
    ]
    a = src[valid].reshape(-1, 3)
    b = tracked[valid].reshape(-1, 3)
    ma, mb = a.mean(0), b.mean(0)
    u, s, vt = np.linalg.svd((b - mb).T @ (a - ma))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = float((s * np.diag(d)).sum() / ((a - ma) ** 2).sum())
    shift = mb - scale * rot @ ma
    frame = Frame(scale, rot, shift, np.zeros((25, 3)), tracked[valid].mean(0))
    frame.truth_mean = frame.apply(src[valid]).mean(0)
    return frame


def tracked_mouth(dataset: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mean shape + track/mouth_displacement (N, 25, 3), valid (N,), train, val)``, read
    through the dataset reader (so a change of how prep computes the targets shows)."""
    from lsp_models.train.data import load_person
    from lsp_prep.dataset.reader import DatasetReader
    from lsp_prep.layout import load_layout

    person = load_person(dataset)
    with DatasetReader(dataset) as ds:
        mean = ds.read("track/mean_shape", np.float64)[load_layout().mouth]
    ok = person.valid & np.isfinite(person.mouth).all(axis=(1, 2))
    return mean + person.mouth.astype(np.float64), ok, np.sort(person.train), np.sort(person.val)


@functools.cache
def speaker_face() -> FaceModel:
    """The rendered face (built once per process: Face Mesh on the photo)."""
    from lsp_synth.mesh import face_model
    from lsp_synth.portraits import astronaut_portrait

    return face_model(astronaut_portrait().image)


def truth_mouth(rule: SpeakerRule, y: np.ndarray, n: int) -> np.ndarray:
    """The rule's LSP mouth points (n, 25, 3), truth object cm, for audio ``y`` at 60 FPS."""
    from lsp_prep.layout import load_layout

    layout = load_layout()
    model = speaker_face()
    params = rule.params(y, sr=SAMPLE_RATE, fps=ANIMATE_FPS, n_frames=n)
    return rule.deform(model, params)[:, layout.mediapipe_index[layout.mouth]]


def lip_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip opening (N,) mm of LSP mouth points (N, 25, 3) in cm."""
    from lsp_models.eval.metrics import inner_lip_indices, mouth_opening
    from lsp_prep.layout import load_layout

    return mouth_opening(points, lips=inner_lip_indices(load_layout()))


def lagged_r(pairs: list[tuple[np.ndarray, np.ndarray]], lag: int) -> float:
    """Pearson r of predicted against true series pooled over clips, the prediction shifted
    by ``lag`` frames (positive: prediction[t + lag] against truth[t])."""
    a, b = [], []
    for pred, true in pairs:
        n = len(true)
        if lag >= 0:
            a.append(pred[lag:n]), b.append(true[: n - lag])
        else:
            a.append(pred[: n + lag]), b.append(true[-lag:])
    return float(np.corrcoef(np.concatenate(a), np.concatenate(b))[0, 1])


@dataclass
class SpeechScore:
    error_mm: float
    baseline_mm: float
    r0: float
    r_best: float
    lag: int


def score_speech(
    run: Path,
    dataset: Path,
    frame: Frame,
    rule: SpeakerRule,
    speech: dict[str, np.ndarray],
    *,
    mouth: str = "mouth",
    animate: list[str] | None = None,
) -> SpeechScore:
    """Animate's motion for each clip of ``speech`` against the rule's truth (module doc),
    with ``animate`` overrides of the default animate settings (e.g. ``lle_blend=0.5``)."""
    import torch

    from lsp_models.eval.mouth import swap_mouth
    from lsp_models.infer.config import AnimateConfig
    from lsp_models.infer.loading import load_models, load_person
    from lsp_models.infer.predict import predict_motion

    models = load_models(run, device=torch.device("cpu"), renderer=False)
    if mouth != "mouth":
        models, _ = swap_mouth(run / mouth / "mouth.pt", models)
    person = load_person(dataset)
    idx = person_mouth_index()
    config = AnimateConfig().with_overrides(animate or [])
    pairs, errors, bases = [], [], []
    for y in speech.values():
        motion = predict_motion(models, person, y, config=config, pose_from=dataset)
        n = motion.n_frames
        truth = frame.apply(truth_mouth(rule, y, n))  # (n, 25, 3)
        moved = truth - frame.truth_mean
        raw = person.mean_shape[idx] + motion.mouth_raw - frame.tracked_mean
        errors.append(np.linalg.norm(raw - moved, axis=-1).mean(1))
        bases.append(np.linalg.norm(moved, axis=-1).mean(1))
        pairs.append((lip_opening(motion.geometry["points3d"][:, idx]), lip_opening(truth)))
    rs = {k: lagged_r(pairs, k) for k in range(-MAX_LAG, MAX_LAG + 1)}
    best = max(rs, key=lambda k: rs[k])
    return SpeechScore(
        error_mm=10 * float(np.concatenate(errors).mean()),
        baseline_mm=10 * float(np.concatenate(bases).mean()),
        r0=rs[0],
        r_best=rs[best],
        lag=best,
    )


def apc_prediction(run: Path, speech: dict[str, np.ndarray]) -> dict[str, float]:
    """Per clip of ``speech`` (16 kHz): the L1 of RUN's APC predicting the log-mel ``shift``
    frames ahead (its training loss), over the L1 of copying the frame ``shift`` back, both
    on the input APC reads (normalised, empty bands out). Below 1: APC predicts more of the
    speech than that it goes on as it is."""
    import torch

    from lsp_models.train.apc import apc_input, load_apc
    from lsp_prep.stages.audio import video_log_mel

    net, mean, std = load_apc(run)
    n = net.config.shift
    out = {}
    for name, y in speech.items():
        frames = int(len(y) * ANIMATE_FPS / SAMPLE_RATE)
        mel = video_log_mel(y, sr=SAMPLE_RATE, n_video_frames=frames, fps=ANIMATE_FPS).T
        x = torch.from_numpy(apc_input(net.config, mel, mean, std))[None]  # (1, T, n_mels)
        with torch.no_grad():
            l1 = net.losses(x)["l1"].item()
        out[name] = l1 / (x[:, n:] - x[:, :-n]).abs().mean().item()
    return out


def person_mouth_index() -> np.ndarray:
    from lsp_prep.layout import load_layout

    return load_layout().mouth


def val_scores(
    run: Path, dataset: Path, mouth: str, *, animate: list[str] | None = None
) -> tuple[float, float, float]:
    """``lsp eval``'s mouth numbers on the val split: (error mm, baseline mm, opening r),
    with ``animate`` overrides of the default animate settings."""
    import torch

    from lsp_models.eval.data import read_val
    from lsp_models.eval.mouth import eval_mouth, swap_mouth
    from lsp_models.infer.config import AnimateConfig
    from lsp_models.infer.loading import load_models
    from lsp_models.infer.predict import encode_apc, project_features

    models = load_models(run, device=torch.device("cpu"), renderer=False)
    models, step = swap_mouth(run / mouth / "mouth.pt", models)
    data = read_val(dataset)
    raw, _ = encode_apc(models, data.mel, None)
    feats = {
        "projected": project_features(models, raw, AnimateConfig().with_overrides(animate or [])),
        "raw": raw.cpu().numpy(),
    }
    m = eval_mouth(mouth, models, step, feats, data)
    return m.error_mm, m.baseline_mm, m.opening_corr


def variance_split(speaker: Speaker, dataset: Path) -> dict[str, dict[str, float]]:
    """R^2 (val frames; fitted on train frames) of the dataset's mouth targets from the
    truth mouth parameters, from the true head pose, and both; per point group."""
    from lsp_prep.layout import load_layout

    tracked, valid, train, val = tracked_mouth(dataset)
    src = np.minimum(source_frames(len(valid), speaker.fps), len(speaker.params) - 1)
    params = mouth_params(speaker, src)
    pose = speaker.euler_deg[src]
    mouth = load_layout().mouth
    groups = {
        "all 25": np.arange(len(mouth)),
        "jaw 7": np.flatnonzero((mouth >= 4) & (mouth <= 10)),
        "lips 18": np.flatnonzero(mouth >= 46),
    }
    tr, va = train[valid[train]], val[valid[val]]
    out: dict[str, dict[str, float]] = {}
    for gname, g in groups.items():
        y = tracked[:, g].reshape(len(tracked), -1)
        out[gname] = {
            name: r_squared(x[tr], y[tr], x[va], y[va])
            for name, x in (
                ("truth mouth", params),
                ("head pose", pose),
                ("both", np.concatenate([params, pose], 1)),
            )
        }
    return out


def without_depth(displacements: np.ndarray, depth: bool) -> np.ndarray:
    """Displacements (..., 25, 3) with their z set to 0 unless ``depth``."""
    if depth:
        return displacements
    out = displacements.copy()
    out[..., 2] = 0.0
    return out


def mouth_params(speaker: Speaker, src: np.ndarray) -> np.ndarray:
    """The truth's jaw, lips and width (N, 3) at rendered frames ``src``."""
    return speaker.params[src][:, [MOUTH_PARAMS.index(k) for k in ("jaw", "lips", "width")]]


def linear_fit(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A least-squares linear fit (with intercept) of ``y_fit`` (N, D) on ``x_fit`` (N, K),
    applied to ``x`` (M, K) -> (M, D)."""
    coef, *_ = np.linalg.lstsq(np.column_stack([x_fit, np.ones(len(x_fit))]), y_fit, rcond=None)
    return np.column_stack([x, np.ones(len(x))]) @ coef


def r_squared(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of the total variance of ``y`` (N, D) explained by a linear fit (with
    intercept) of ``y_fit`` on ``x_fit``, applied to ``x``."""
    pred = linear_fit(x_fit, y_fit, x)
    return float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def opening_tracking_r(speaker: Speaker, dataset: Path) -> float:
    """r of the tracked inner-lip opening with the truth's over the dataset's valid frames:
    how much of the signal the targets carry at all."""
    tracked, valid, _, _ = tracked_mouth(dataset)
    src = np.minimum(source_frames(len(valid), speaker.fps), len(speaker.mouth_points) - 1)
    return float(
        np.corrcoef(lip_opening(tracked[valid]), lip_opening(speaker.mouth_points[src][valid]))[
            0, 1
        ]
    )


def targets_error(
    speaker: Speaker, dataset: Path, frame: Frame, *, depth: bool = True
) -> tuple[float, float, float]:
    """The dataset's mouth targets taken as a prediction of the truth on its valid frames:
    ``(error mm, baseline mm, amplitude)``, both as displacements from their means as in
    :func:`score_speech`; ``amplitude``: the RMS of the tracked displacements over the true
    ones (noise included). What a model that reproduced its targets exactly would score;
    without ``depth``, one that reproduced their x and y and left the depth at the mean
    (``mouth.depth=false``)."""
    tracked, valid, _, _ = tracked_mouth(dataset)
    src = np.minimum(source_frames(len(valid), speaker.fps), len(speaker.mouth_points) - 1)
    truth = frame.apply(speaker.mouth_points[src][valid]) - frame.truth_mean
    moved = without_depth(tracked[valid] - frame.tracked_mean, depth)
    amplitude = float(np.sqrt((moved**2).sum() / (truth**2).sum()))
    return (
        10 * float(np.linalg.norm(moved - truth, axis=-1).mean()),
        10 * float(np.linalg.norm(truth, axis=-1).mean()),
        amplitude,
    )


def target_floor(speaker: Speaker, dataset: Path, frame: Frame, *, depth: bool = True) -> float:
    """err/base on the val frames of the best an audio model of these targets can do: the
    expected target given the truth's mouth parameters (jaw, lips, width; a linear fit on
    the train frames), against the truth, both as in :func:`targets_error` (``depth`` as
    there)."""
    tracked, valid, train, val = tracked_mouth(dataset)
    src = np.minimum(source_frames(len(valid), speaker.fps), len(speaker.params) - 1)
    params = mouth_params(speaker, src)
    moved = without_depth(tracked - frame.tracked_mean, depth).reshape(len(tracked), -1)
    tr, va = train[valid[train]], val[valid[val]]
    fit = linear_fit(params[tr], moved[tr], params[va]).reshape(len(va), -1, 3)
    truth = frame.apply(speaker.mouth_points[src][va]) - frame.truth_mean
    return float(
        np.linalg.norm(fit - truth, axis=-1).mean() / np.linalg.norm(truth, axis=-1).mean()
    )


def target_geometry(speaker: Speaker, dataset: Path, frame: Frame) -> dict[str, float]:
    """Why the floor of :func:`target_floor` is where it is, on the val frames (fits on the
    train frames): ``readout``, err/base of the truth's best linear readout from the targets
    (all 75 coordinates and an intercept: how much of the truth they carry, in whatever
    geometry); ``lips_y`` and ``jaw_y``, the RMS of the targets' expected vertical
    displacement given the truth's mouth parameters over the truth's (how far they move
    where the truth moves, the lips' 18 and the jaw's 7 points); ``jaw_z_r``, Pearson r of
    the two in depth on the jaw points (the same sign or not)."""
    tracked, valid, train, val = tracked_mouth(dataset)
    src = np.minimum(source_frames(len(valid), speaker.fps), len(speaker.params) - 1)
    params = mouth_params(speaker, src)
    moved = (tracked - frame.tracked_mean).reshape(len(tracked), -1)
    truth = (frame.apply(speaker.mouth_points[src]) - frame.truth_mean).reshape(len(src), -1)
    tr, va = train[valid[train]], val[valid[val]]

    def fit(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # b's fit on a (train), at va
        return linear_fit(a[tr], b[tr], a[va]).reshape(len(va), 25, 3)

    true = truth[va].reshape(len(va), 25, 3)
    readout = fit(moved, truth)
    expected, true_expected = fit(params, moved), fit(params, truth)
    jaw, lips = np.arange(7), np.arange(7, 25)

    def rms_ratio(idx: np.ndarray, axis: int) -> float:
        a, b = expected[:, idx, axis], true_expected[:, idx, axis]
        return float(np.sqrt((a**2).mean() / (b**2).mean()))

    return {
        "readout": float(
            np.linalg.norm(readout - true, axis=-1).mean() / np.linalg.norm(true, axis=-1).mean()
        ),
        "lips_y": rms_ratio(lips, 1),
        "jaw_y": rms_ratio(jaw, 1),
        "jaw_z_r": float(
            np.corrcoef(expected[:, jaw, 2].ravel(), true_expected[:, jaw, 2].ravel())[0, 1]
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    ap.add_argument("--seconds", type=float, default=150.0, help="rendered speech (s)")
    ap.add_argument(
        "--apc", nargs="+", default=["corpus", "own"], choices=["corpus", "own", "multi"]
    )
    ap.add_argument(
        "--multi-minutes",
        type=float,
        default=MULTI_MINUTES,
        help="--apc multi: at most this many minutes of each speaker",
    )
    ap.add_argument("--delays", type=int, nargs="+", default=[18, 0])
    ap.add_argument("--renderer", action="store_true", help="train the renderer, animate a video")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="preset override")
    # 1, not 2: with other jobs on the 2 cores, 2 torch threads made APC steps ~5x slower
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="lipsync-"))
    setup = SpeakerSetup(seconds=args.seconds)
    clock: dict[str, float] = {}
    t = time.perf_counter()
    console.log(f"render {setup.seconds:g} s into {work}")
    speaker = render_speaker(work / "render", setup)
    clock["render"] = time.perf_counter() - t
    t = time.perf_counter()
    console.log("prep")
    dataset = prep_speaker(speaker, work / "data")
    clock["prep"] = time.perf_counter() - t
    frame = fit_frame(speaker, dataset)
    heldout = heldout_speech()
    y_train = _load_wav(speaker.voice)
    seen = {"training speech": y_train[: 30 * SAMPLE_RATE]}
    corpora: dict[str, Path | None] = {"corpus": speaker.corpus, "own": None}
    if "multi" in args.apc:
        corpora["multi"] = work / "corpus_multi"
        taken = multi_corpus(corpora["multi"], multi_speakers(speaker), minutes=args.multi_minutes)
        console.log(
            "multi-speaker corpus: " + ", ".join(f"{k} {v:.1f} min" for k, v in taken.items()),
            highlight=False,
        )
    rows, trained, prediction = [], {}, {}
    first_run = None
    for source in args.apc:
        run = work / f"run_{source}"
        console.log(f"train {run.name}")
        trained[source] = train_run(
            run,
            dataset,
            corpus=corpora[source],
            delays=args.delays,
            overrides=args.sets,
            headpose_from=None if first_run is None else first_run / "headpose",
            renderer=args.renderer and first_run is None,
        )
        first_run = first_run or run
        prediction[source] = apc_prediction(run, {**heldout, **seen})
        for i, d in enumerate(args.delays):
            folder = mouth_folder(d, first=i == 0)
            console.log(f"score {run.name}/{folder}")
            val = val_scores(run, dataset, folder)
            for label, speech in (("held-out", heldout), ("training", seen)):
                s = score_speech(run, dataset, frame, setup.rule, speech, mouth=folder)
                rows.append((source, d, label, val, s))
    console.print(result_table(rows, dataset, heldout))
    console.print(prediction_table(prediction))
    split = variance_split(speaker, dataset)
    console.print(variance_table(split, opening_tracking_r(speaker, dataset)))
    err, base, amplitude = targets_error(speaker, dataset, frame)
    floor = target_floor(speaker, dataset, frame)
    flat_err, _, _ = targets_error(speaker, dataset, frame, depth=False)
    flat_floor = target_floor(speaker, dataset, frame, depth=False)
    console.print(
        f"the targets as a prediction of the truth: err/base {err / base:.2f} (RMS "
        f"{amplitude:.2f}x the truth's, noise included); the best an audio model of them can "
        f"do (their linear fit on the truth's mouth parameters, val frames): err/base "
        f"{floor:.2f}; their x and y with the depth left at the mean (mouth.depth=false): "
        f"{flat_err / base:.2f} and {flat_floor:.2f}",
        highlight=False,
    )
    geometry = target_geometry(speaker, dataset, frame)
    console.print(
        f"where the floor comes from: a linear readout of the truth from the targets scores "
        f"err/base {geometry['readout']:.2f} (they carry the truth, in another geometry); "
        f"given the truth's parameters the targets move {geometry['lips_y']:.2f}x as far as "
        f"the truth vertically on the lips and {geometry['jaw_y']:.2f}x on the jaw, and the "
        f"jaw's depth goes with r {geometry['jaw_z_r']:.2f}",
        highlight=False,
    )
    console.print(timing_table(clock, trained))
    if args.renderer and first_run is not None:
        from lsp_models.infer.animate import animate

        out = work / "animated_heldout.mp4"
        audio = work / "heldout.wav"
        from lsp_synth.audio import write_wav

        write_wav(audio, next(iter(heldout.values())), sr=SAMPLE_RATE)
        animate(run_dir=first_run, audio=audio, output=out, dataset=dataset, device="cpu")
        console.print(f"animated held-out speech: {out}")
    record = {
        "rows": [
            {"apc": s, "delay": d, "speech": lab, "val": v, "score": sc.__dict__}
            for s, d, lab, v, sc in rows
        ],
        "apc_prediction": prediction,
        "variance": split,
        "targets": {
            "error_mm": err,
            "baseline_mm": base,
            "amplitude": amplitude,
            "floor": floor,
            "error_mm_no_depth": flat_err,
            "floor_no_depth": flat_floor,
            **geometry,
        },
        "seconds": {"clock": clock, "trained": trained},
    }
    (work / "lipsync.json").write_text(json.dumps(record, indent=2))
    console.print(f"work folder {work}; numbers in {work / 'lipsync.json'}", highlight=False)


def _load_wav(path: Path) -> np.ndarray:
    from lsp_prep.media import load_audio

    return load_audio(path, sr=SAMPLE_RATE)


def result_table(rows: list, dataset: Path, heldout: dict[str, np.ndarray]) -> Table:
    secs = sum(len(y) for y in heldout.values()) / SAMPLE_RATE
    t = Table(
        title=f"lip sync: {dataset.name}; held-out: {', '.join(heldout)} ({secs:.0f} s); "
        "training: the first 30 s of the rendered speech",
        title_justify="left",
    )
    for col in ("APC", "delay", "speech", "val err", "val base", "err", "base", "err/base"):
        t.add_column(col, justify="right")
    for col in ("r0", "r*", "lag"):
        t.add_column(col, justify="right")
    for source, d, label, (verr, vbase, _), s in rows:
        t.add_row(
            source,
            str(d),
            label,
            f"{verr:.2f}",
            f"{vbase:.2f}",
            f"{s.error_mm:.2f}",
            f"{s.baseline_mm:.2f}",
            f"{s.error_mm / s.baseline_mm:.2f}",
            f"{s.r0:.2f}",
            f"{s.r_best:.2f}",
            str(s.lag),
        )
    return t


def prediction_table(prediction: dict[str, dict[str, float]]) -> Table:
    t = Table(
        title="APC's L1 predicting the log-mel apc.shift frames ahead over copying the frame "
        "apc.shift back, per clip (below 1: it predicts)",
        title_justify="left",
    )
    t.add_column("APC")
    clips = list(next(iter(prediction.values())))
    for c in clips:
        t.add_column(c, justify="right")
    for source, ratios in prediction.items():
        t.add_row(source, *(f"{ratios[c]:.2f}" for c in clips))
    return t


def variance_table(split: dict[str, dict[str, float]], r_track: float) -> Table:
    t = Table(
        title="variance of track/mouth_displacement explained (R^2, val frames); "
        f"tracked vs true inner-lip opening r = {r_track:.2f}",
        title_justify="left",
    )
    t.add_column("points")
    for col in ("truth mouth", "head pose", "both", "target"):
        t.add_column(col, justify="right")
    for g, v in split.items():
        t.add_row(
            g,
            *(f"{100 * v[k]:.0f} %" for k in ("truth mouth", "head pose", "both")),
            ">= 60 % / <= 5 %" if g == "all 25" else "",
        )
    return t


def timing_table(clock: dict[str, float], trained: dict[str, dict[str, float]]) -> Table:
    t = Table(
        title="minutes (render, prep: 0.00 when reused from the work folder)", title_justify="left"
    )
    t.add_column("step")
    t.add_column("minutes", justify="right")
    for k, v in clock.items():
        t.add_row(k, f"{v / 60:.2f}")
    for source, stages in trained.items():
        for k, v in stages.items():
            t.add_row(f"train {k} (APC: {source})", f"{v / 60:.2f}")
    return t


if __name__ == "__main__":
    main()
