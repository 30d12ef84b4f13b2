"""Each source frame is tracked once (issue 13, item 2).

Prep decodes every video at 60 FPS with ffmpeg's fps filter, which shows a 30 FPS source
frame at two ticks as two exact copies. ``track_faces`` recognises a copy of the previous
frame (``media.is_repeat``) and reuses its result instead of running Face Mesh again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lsp_prep.constants import FPS
from lsp_prep.media import ffmpeg_exe, is_repeat, iter_frames, probe, run_ffmpeg


def source_frames(path: Path) -> int:
    """How many frames the file's video stream holds (decoded by PyAV, not by the fps
    filter)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def new_frames(path: Path, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """(ticks, ticks that are no repeat) of ``path`` decoded on prep's 60 FPS clock."""
    info = probe(path)
    previous, ticks, fresh = None, 0, 0
    for frame in iter_frames(path, fps=FPS, size=(info.width, info.height), out_size=size):
        ticks += 1
        fresh += not is_repeat(frame, previous)
        previous = frame
    return ticks, fresh


def pattern_clip(path: Path, *, rate: str, seconds: float = 1.0) -> Path:
    """ffmpeg's moving test pattern (every frame differs) at ``rate`` frames a second."""
    source = f"testsrc2=size=320x240:rate={rate}:duration={seconds}"
    run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", source, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)]
    )
    return path


@pytest.mark.parametrize(
    ("rate", "ticks"), [("60", 60), ("30", 60), ("24000/1001", 60), ("25", 60)]
)
def test_ticks_that_are_no_repeat_are_the_source_frames(tmp_path, rate, ticks):
    clip = pattern_clip(tmp_path / "clip.mp4", rate=rate)
    got_ticks, fresh = new_frames(clip)
    assert got_ticks == ticks
    assert fresh == source_frames(clip)  # 60, 30, 24 and 25 new frames in one second


def test_variable_rate_video_is_tracked_at_its_own_frames(media, tmp_path):
    """A phone-like variable-rate clip: the real 30 FPS clip with irregular frames dropped
    and the timestamps kept (gaps of 1/30 to 3/30 s)."""
    vfr = tmp_path / "vfr.mp4"
    keep = r"select=not(eq(mod(n\,5)\,2))*not(eq(mod(n\,7)\,3))"
    select = ["-vf", keep, "-fps_mode", "vfr", "-an"]
    encode = ["-c:v", "libx264", "-pix_fmt", "yuv420p", str(vfr)]
    run_ffmpeg(["-y", "-i", str(media["single_face"]), *select, *encode])
    n_source = source_frames(vfr)
    assert 45 <= n_source <= 55  # of 72: the select really dropped frames
    ticks, fresh = new_frames(vfr, size=(320, 180))
    assert ticks >= 2 * n_source
    assert fresh == n_source


@pytest.mark.parametrize(("out_size", "pix_fmt"), [(None, "rgb24"), ((320, 180), "bgr24")])
def test_frames_are_those_of_resampling_after_the_fps_filter(media, out_size, pix_fmt):
    """iter_frames converts and scales before the fps filter (once per source frame); the
    pixels are those of the order prep used before (fps filter first, then scale)."""
    import subprocess

    src = media["single_face"]
    info = probe(src)
    vf = f"fps={FPS}:round=near" + (
        f",scale={out_size[0]}:{out_size[1]}:flags=area" if out_size else ""
    )
    cmd = [ffmpeg_exe(), "-loglevel", "error", "-i", str(src), "-map", "0:v:0", "-an"]
    cmd += ["-vf", vf, "-pix_fmt", pix_fmt, "-f", "rawvideo", "-"]
    before = subprocess.run(cmd, capture_output=True, check=True).stdout
    frames = iter_frames(
        src, fps=FPS, size=(info.width, info.height), out_size=out_size, pix_fmt=pix_fmt
    )
    now = b"".join(f.tobytes() for f in frames)
    assert len(now) == len(before) > 0
    assert now == before


def test_is_repeat_needs_every_pixel_equal():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    assert is_repeat(a.copy(), a)
    b = a.copy()
    b[1, 7, 2] ^= 1  # a row the sparse sample skips
    assert not is_repeat(b, a)
    assert not is_repeat(a, None)
    assert not is_repeat(a[:80], a)


@pytest.mark.slow
def test_30fps_clip_tracks_each_source_frame_once_with_the_same_landmarks(media):
    """single_face is a real 30 FPS clip: Face Mesh runs on half the 60 FPS ticks, and the
    landmarks are those of Face Mesh on every tick within 0.5 px.

    Face Mesh's result depends a little on where its region of interest sits; run on every
    tick, the second copy of each source frame is tracked from a region moved by the first,
    so the old path itself gives two results for one picture. Measured on this clip (Face
    Mesh averaged with its mirror image): new against old 0.19 px mean (median frame 0.14,
    worst 1.46), the old path's two results for one picture 0.25 px mean (median 0.20,
    worst 1.25); carphone 0.16 against 0.18, pexels (24 FPS) 0.60 against 0.69."""
    from lsp_prep.stages.track import TrackConfig, track_faces, tracking_size

    src = media["single_face"]
    info = probe(src)
    size = (info.width, info.height)
    frames = list(iter_frames(src, fps=FPS, size=size, out_size=tracking_size(size, 1280)))
    config = TrackConfig()
    old = track_faces(frames, config=config, reuse_repeats=False)
    new = track_faces(frames, config=config)
    n = len(frames)
    assert old.tracked.all()
    assert new.tracked.sum() == source_frames(src) == n // 2  # 72 of 144
    assert (new.detected == old.detected).all() and new.detected.all()
    repeat = ~new.tracked
    assert np.array_equal(new.mesh[repeat], new.mesh[np.flatnonzero(repeat) - 1])

    def per_frame(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.linalg.norm(x[..., :2] - y[..., :2], axis=-1).mean(-1)

    change = per_frame(new.mesh, old.mesh)
    assert change.mean() <= 0.5 and np.median(change) <= 0.5, (change.mean(), np.median(change))
    # no larger than the old path's own disagreement with itself on one picture
    same_picture = np.flatnonzero(repeat)
    own = per_frame(old.mesh[same_picture], old.mesh[same_picture - 1])
    assert change.mean() <= own.mean() * 1.1, (change.mean(), own.mean())


def test_track_cache_of_an_older_toolkit_reads_as_every_frame_tracked():
    """A track.npz written before the ``tracked`` mask existed (an interrupted prep resumed
    by this version) still loads: every frame counts as tracked."""
    from lsp_prep.stages.track import Tracks

    n = 5
    mesh = np.zeros((n, 478, 3), np.float32)
    old = {"mesh": mesh, "detected": np.ones(n, bool), "frame_size": np.array([640, 360])}
    tracks = Tracks.from_arrays(old)
    assert tracks.tracked.dtype == bool and tracks.tracked.all() and len(tracks.tracked) == n
    assert tracks.frame_size == (640, 360)
    again = Tracks.from_arrays(tracks.to_arrays())
    assert np.array_equal(again.tracked, tracks.tracked)
