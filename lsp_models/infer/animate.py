"""``lsp animate``: any speech recording -> a talking-head mp4 of the trained person.

The pipeline, per 60 FPS video frame ``i`` (mel frames ``2i``, ``2i + 1``):

    audio -> log-mel (prep's) -> APC -> manifold projection -> mouth dv_m (LSTM, 18-frame
    look-ahead) and head pose (autoregressive sampler) -> Gaussian smoothing + per-person
    amplification -> 73 landmarks (mouth = mean shape + dv_m, the rest replayed from the
    training track) -> camera (crop boxes placed by prep's policy) -> shoulders -> feature
    map -> renderer -> frames -> mp4 (H.264 yuv420p + AAC)

Two ways in, one set of numbers. :func:`lsp_models.infer.predict.predict_motion` runs the
motion on whole arrays (what ``lsp eval`` reuses); :class:`lsp_models.infer.stream.AnimationStream`
computes the same frames from audio pushed in chunks of any size; :func:`animate` (here)
feeds a file through the stream into ffmpeg, so memory stays flat in the audio's length.

The package, in the order a frame is made: ``config`` (AnimateConfig, RUN/animate.json),
``loading`` (models from the run directory, the person from the dataset), ``motion``
(smoothing, replay, camera maths on arrays), ``predict`` (the networks on whole arrays),
``stream`` (the same, incrementally), ``video`` (ffmpeg in and out), ``animate`` (the driver).

Frame count: audio of ``S`` samples at ``sr`` gives ``N = ceil(S * 60 / sr)`` frames at 60
FPS (the last one may cover a partial frame of audio; the audio is padded with silence for
the analysis) and ``ceil(S * 30 / sr)`` at 30 FPS (frames 0, 2, 4, ... of the 60 FPS
sequence). The video therefore starts with the audio and ends less than one frame after it.
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lsp_models.constants import SAMPLING_TEMPERATURE
from lsp_models.infer.config import AnimateConfig, resolve_config, write_json
from lsp_models.infer.loading import (
    check_dataset,
    check_person,
    find_dataset,
    load_models,
    load_person,
    require_run,
)
from lsp_models.infer.stream import AnimatedFrame, AnimationStream
from lsp_models.infer.video import (
    VideoWriter,
    check_audio,
    check_output,
    container,
    iter_audio,
)
from lsp_prep.constants import FPS, SAMPLE_RATE
from lsp_prep.dataset.writer import atomic_output
from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn


@dataclass
class AnimateResult:
    """What :func:`animate` produced, for the CLI's summary."""

    output: Path
    frames: int
    fps: int
    seconds: float
    """Audio duration in seconds."""
    dataset: Path
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage (load, mel, apc, projection, mouth, headpose, postprocess,
    drawing, renderer, encoding)."""
    lookahead_s: float = 0.0
    """The stream's look-ahead: the latency of a live run, compute excluded."""
    intermediates: list[Path] = field(default_factory=list)
    config: AnimateConfig = field(default_factory=AnimateConfig)


def animate(
    *,
    run_dir: Path,
    audio: Path,
    output: Path,
    dataset: Path | None = None,
    fps: int = FPS,
    pose_from: Path | None = None,
    temperature: float = SAMPLING_TEMPERATURE,
    seed: int = 0,
    save_intermediates: bool = False,
    device: str = "auto",
    config: AnimateConfig | None = None,
    overrides: list[str] | None = None,
    chunk_s: float = 1.0,
    progress: ProgressFn | None = None,
) -> AnimateResult:
    """Animate ``audio`` with the person trained in ``run_dir`` into ``output`` (mp4, mov or
    mkv, as its extension says; side files are named after its full name, OUTPUT.json for
    x.mov is x.mov.json).

    The audio is decoded in chunks of ``chunk_s`` seconds and pushed through an
    :class:`AnimationStream` whose frames go straight into ffmpeg: memory is flat in the
    audio's length. ``pose_from`` replays that dataset's recorded head motion instead of
    sampling. ``save_intermediates`` writes OUTPUT.npz (per-frame landmarks, poses, camera)
    and OUTPUT.features.mp4 (the feature maps). OUTPUT.json records the inputs, the
    resolved config and the timings.
    """
    from lsp_models.train.device import pick_device

    t0 = time.perf_counter()
    output, audio = Path(output), Path(audio)
    duration = _check_inputs(
        fps=fps, audio=audio, output=output, pose_from=pose_from, run_dir=run_dir, dataset=dataset
    )
    if config is None:
        resolve_config(run_dir, overrides, write_defaults=False)  # a bad --set: nothing made
        check_output(output)
        config = resolve_config(run_dir, overrides)
    else:
        check_output(output)
    dev = pick_device(device)
    models = load_models(run_dir, device=dev)
    dataset = Path(dataset) if dataset is not None else find_dataset(run_dir)
    person = load_person(dataset)
    stream = AnimationStream(
        models,
        person,
        config=config,
        seed=seed,
        temperature=temperature,
        fps=fps,
        pose_from=pose_from,
    )
    timings = {"load": time.perf_counter() - t0}
    writers: list[VideoWriter] = []
    try:
        result = _animate_into(
            writers,
            stream,
            audio,
            output,
            fps=fps,
            config=config,
            save_intermediates=save_intermediates,
            chunk=max(1, int(chunk_s * SAMPLE_RATE)),
            total=math.ceil(duration * fps) if duration else None,
            progress=progress,
            timings=timings,
            dataset=dataset,
            record={
                "run_dir": run_dir,
                "audio": audio,
                "pose_from": pose_from,
                "seed": seed,
                "temperature": temperature,
                "device": str(dev),
            },
        )
    except BaseException:
        # an interrupt after a video was renamed into place: the set is not complete
        # (nothing under the output's name unless all of it is there)
        committed = any(w.closed for w in writers)
        for w in writers:
            w.abort()
        if committed:
            for suffix in (".npz", ".json"):
                side_file(output, suffix).unlink(missing_ok=True)
        raise
    return result


def _animate_into(
    writers: list[VideoWriter],
    stream: AnimationStream,
    audio: Path,
    output: Path,
    *,
    fps: int,
    config: AnimateConfig,
    save_intermediates: bool,
    chunk: int,
    total: int | None,
    progress: ProgressFn | None,
    timings: dict[str, float],
    dataset: Path,
    record: dict[str, Any],
) -> AnimateResult:
    """Encode (:func:`_encode`, which adds its video writers to ``writers`` for the caller
    to abort) and write OUTPUT.json."""
    done = _encode(
        writers,
        stream,
        audio,
        output,
        fps=fps,
        config=config,
        save_intermediates=save_intermediates,
        chunk=chunk,
        total=total,
        progress=progress,
    )
    timings.update(stream.timings)
    timings["encoding"] = done.encoding_s
    result = AnimateResult(
        output=output,
        frames=done.frames,
        fps=fps,
        seconds=done.samples / SAMPLE_RATE,
        dataset=dataset,
        timings=timings,
        lookahead_s=stream.lookahead_s,
        intermediates=done.paths[1:],
        config=config,
    )
    _write_record(side_file(output, ".json"), result, **record)
    return result


def side_file(output: Path, suffix: str) -> Path:
    """A file written beside ``output``, named after its full name: x.mov -> x.mov.json (so
    that x.mp4 and x.mov never share one)."""
    return output.with_name(output.name + suffix)


def _check_inputs(
    *,
    fps: int,
    audio: Path,
    output: Path,
    pose_from: Path | None,
    run_dir: Path,
    dataset: Path | None,
) -> float:
    """InputError, CheckpointError or SchemaError before anything loads or is written;
    returns the audio's duration in seconds (0 if unknown)."""
    if fps not in (30, 60):
        raise InputError(f"--fps must be 60 or 30, got {fps}")
    require_run(run_dir)
    if dataset is not None:
        check_dataset(dataset)
        check_person(run_dir, dataset)
    if pose_from is not None:
        check_dataset(pose_from, option="--pose-from")
    duration = check_audio(audio)
    container(output)  # its folder is made by check_output once the --set items pass
    return duration


def _write_record(
    path: Path,
    result: AnimateResult,
    *,
    run_dir: Path,
    audio: Path,
    pose_from: Path | None,
    seed: int,
    temperature: float,
    device: str,
) -> None:
    """OUTPUT.json: the inputs, the resolved config and the timings of one animation."""
    record = {
        "run_dir": str(run_dir),
        "audio": str(audio),
        "dataset": str(result.dataset),
        "pose_from": None if pose_from is None else str(pose_from),
        "fps": result.fps,
        "seed": seed,
        "temperature": temperature,
        "frames": result.frames,
        "seconds": result.seconds,
        "device": device,
        "config": dataclasses.asdict(result.config),
        "timings": result.timings,
    }
    write_json(path, record)


class _Encoded(NamedTuple):
    frames: int
    samples: int
    paths: list[Path]
    """The mp4, then the intermediates written."""
    encoding_s: float


def _encode(
    writers: list[VideoWriter],
    stream: AnimationStream,
    audio: Path,
    output: Path,
    *,
    fps: int,
    config: AnimateConfig,
    save_intermediates: bool,
    chunk: int,
    total: int | None,
    progress: ProgressFn | None,
) -> _Encoded:
    """Push ``audio`` through ``stream`` in chunks of ``chunk`` samples into ffmpeg; with
    ``save_intermediates`` also the feature maps (OUTPUT.features.mp4) and the per-frame
    geometry (OUTPUT.npz). Nothing is left behind when it fails."""
    size = stream.size

    def writer(path: Path, *, gray: bool) -> VideoWriter:
        return VideoWriter(
            path, fps=fps, size=size, audio=audio, gray=gray, crf=config.crf, preset=config.preset
        )

    saved: dict[str, list[np.ndarray]] = {}
    count = n_samples = 0

    def emit(frames: list[AnimatedFrame]) -> None:
        nonlocal count
        if not frames:
            return
        writers[0].write(np.stack([typing.cast(np.ndarray, f.image) for f in frames]))
        if save_intermediates:
            writers[1].write(np.stack([f.feature_map for f in frames]))
            for f in frames:
                for k, v in f.geometry.items():
                    saved.setdefault(k, []).append(v)
        count += len(frames)
        if progress is not None:
            progress("animate", count, max(total or 0, count))

    try:
        writers.append(writer(output, gray=False))
        if save_intermediates:
            writers.append(writer(side_file(output, ".features.mp4"), gray=True))
        for y in iter_audio(audio, chunk=chunk):
            n_samples += len(y)
            emit(stream.push(y))
        emit(stream.finish())
        paths = [w.close() for w in writers]
    except BaseException:
        for w in writers:
            w.abort()
        raise
    if save_intermediates:
        npz = side_file(output, ".npz")
        with atomic_output(npz) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{k: np.stack(v) for k, v in saved.items()})
        paths.append(npz)
    return _Encoded(count, n_samples, paths, sum(w.seconds for w in writers))
