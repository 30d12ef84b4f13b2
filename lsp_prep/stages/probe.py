"""The probe stage of prep: look at the inputs and refuse what prep cannot use, early,
with a message saying what to do."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lsp_prep.config import PrepConfig
from lsp_prep.errors import InputError
from lsp_prep.media import MediaInfo, probe, video_data_end


def check_output_dir(out_dir: Path) -> None:
    """Create ``out_dir`` if needed; raise InputError if it cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".lsp-write-test-"):
            pass
    except OSError as exc:
        raise InputError(
            f"output directory {out_dir} is not writable ({exc.strerror}): choose another -o"
        ) from None


def check_input(video: Path, *, audio: Path | None, config: PrepConfig) -> MediaInfo:
    """Probe the inputs and refuse what prep cannot use, with a message saying what to do."""
    size = config.ingest.image_size
    for x, y in config.shoulders.points or ():
        if not (0 <= x <= size - 1 and 0 <= y <= size - 1):
            raise InputError(
                f"shoulder point ({x:g}, {y:g}) is outside the {size}x{size} crop: give "
                f"shoulders.points in crop pixels, 0..{size - 1}"
            )
    info = probe(video)
    if not info.has_video:
        raise InputError(f"{video}: has no video stream (is it an audio file or an image?)")
    if audio is not None:
        ainfo = probe(audio)
        if not ainfo.has_audio:
            raise InputError(f"{audio}: has no audio stream to use as the speech track")
    elif not info.has_audio:
        raise InputError(
            f"{video}: has no audio stream; pass the speech recording with --audio FILE"
        )
    if info.duration_s and info.duration_s < config.ingest.min_duration_s:
        raise InputError(
            f"{video}: clip is {info.duration_s:.2f} s long; prep needs at least "
            f"{config.ingest.min_duration_s:g} s (3-5 minutes makes a good person model)"
        )
    check_complete(video)
    return info


TRUNCATED_S = 0.5
"""A video whose packets end more than this (and 5 % of its length) before the duration
its container declares is refused as truncated."""


def check_complete(video: Path) -> None:
    """Refuse a video cut short: its container's index declares more than its data holds."""
    declared, present = video_data_end(video)
    if declared and declared - present > max(TRUNCATED_S, 0.05 * declared):
        raise InputError(
            f"{video}: the file is truncated: its container declares {declared:.1f} s of "
            f"video but the data ends at {present:.1f} s (an interrupted download or copy?); "
            "use the complete file, or make a clean copy of the part that is there with "
            f"`ffmpeg -i {video} -t {present:.1f} -c copy fixed.mp4`"
        )


def check_length(video: Path, n: int, *, config: PrepConfig) -> None:
    """Refuse a clip whose first decoding pass gave too few frames."""
    fps = config.ingest.fps
    if n < config.ingest.min_duration_s * fps:
        raise InputError(
            f"{video}: decoded only {n} frames ({n / fps:.2f} s); prep needs at least "
            f"{config.ingest.min_duration_s:g} s"
        )
