"""`lsp prep` end to end on real clips, through the CLI, including every bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from lsp_prep import cache
from lsp_prep.config import PrepConfig
from lsp_prep.dataset import reader, schema
from lsp_prep.errors import InputError
from lsp_prep.media import sha256_file
from lsp_prep.pipeline import prep_video
from lsp_prep.stages import track as track_stage


def assert_clean_failure(result, out_dir, *fragments: str):
    """Exit code 1, one error line naming the problem, no dataset left behind."""
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    for frag in fragments:
        assert frag in " ".join(result.output.split()), result.output
    if out_dir.exists():
        leftovers = [p.name for p in out_dir.rglob("*") if p.is_file()]
        assert leftovers == [], leftovers


# ---------------------------------------------------------------- real clips


def test_single_face_dataset_validates_and_is_sane(single_face_dataset):
    dims = schema.validate(single_face_dataset)
    with h5py.File(single_face_dataset) as f:
        n = f.attrs["n_frames"]
        # 2.42 s at 30 fps resampled to 60 fps by timestamps
        assert n == dims["N"] and 143 <= n <= 146
        assert f.attrs["fps"] == 60 and f.attrs["sample_rate"] == 16000
        assert f.attrs["image_size"] == 512
        assert f["audio/mel"].shape == (2 * n, 80)
        assert f["audio/waveform"].shape == (round(n * 16000 / 60),)
        assert f["landmarks/valid"][:].mean() > 0.95
        lsp = f["landmarks/lsp73"][:]
        assert np.nanmin(lsp) > 0 and np.nanmax(lsp) < 512  # the face is inside the crop
        # frames decode to 512x512 and the face sits near the crop centre
        import cv2

        img = cv2.imdecode(f["frames"][n // 2], cv2.IMREAD_COLOR)
        assert img.shape == (512, 512, 3)
        centre = np.nanmean(lsp[:, :, :], axis=(0, 1))
        assert np.all(np.abs(centre - 256) < 80)
        # the (quiet, -33 dBFS peak) speech is there: not silent, and the mel has dynamics
        assert np.abs(f["audio/waveform"][:]).max() > 0.01
        assert np.ptp(f["audio/mel"][:]) > 5
        boxes = f["crop/boxes"][:]
        assert np.ptp(boxes[:, 2] - boxes[:, 0]) < 1e-6  # one crop size per clip


def test_landmarks_in_crop_map_back_to_the_original_video(single_face_dataset, media):
    """lsp73 in crop pixels, mapped through crop/boxes, lands on the face in the original
    frame: compare with an independent Face Mesh run on that original frame."""
    import mediapipe as mp

    from lsp_prep.camera import to_original
    from lsp_prep.layout import load_layout
    from lsp_prep.media import iter_frames, probe

    info = probe(media["single_face"])
    i = 90
    frame = next(
        x
        for k, x in enumerate(
            iter_frames(media["single_face"], fps=60, size=(info.width, info.height))
        )
        if k == i
    )
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as fm:
        lm = fm.process(frame).multi_face_landmarks[0].landmark
    ref = np.array([(p.x * info.width - 0.5, p.y * info.height - 0.5) for p in lm])
    ref73 = load_layout().from_mesh(np.pad(ref, ((0, 0), (0, 1))))[:, :2]
    with h5py.File(single_face_dataset) as f:
        ours = to_original(f["landmarks/lsp73"][i][None], f["crop/boxes"][i : i + 1], 512)[0]
    iod = np.linalg.norm(ref73[27] - ref73[33])
    err = np.linalg.norm(ours - ref73, axis=1)
    assert np.median(err) < 0.05 * iod, np.median(err) / iod


def test_manifest_lists_the_clip(single_face_dataset):
    df = pd.read_csv(single_face_dataset.parent / "manifest.csv")
    row = df[df["clip"] == "single_face"].iloc[0]
    assert row["path"] == "single_face.h5" and row["frames"] > 100 and 2.3 < row["duration_s"] < 2.5
    assert 0.95 < row["valid_fraction"] <= 1 and len(row["source_sha256"]) == 64
    assert row["dataset_sha256"] == sha256_file(single_face_dataset)


@pytest.mark.slow
def test_carphone_with_separate_audio(lsp, media, tmp_path):
    out = tmp_path / "out"
    r = lsp("prep", media["carphone"], "-o", out, "--audio", media["speech"])
    assert r.exit_code == 0, r.output
    dataset = out / f"{media['carphone'].stem}.h5"
    dims = schema.validate(dataset)
    assert 238 <= dims["N"] <= 242  # 4.0 s at 29.97 fps -> 60 fps
    with h5py.File(dataset) as f:
        assert f.attrs["audio_sha256"] == sha256_file(media["speech"])
        assert f["landmarks/valid"][:].mean() > 0.9


@pytest.mark.slow
def test_second_run_reuses_and_force_recomputes(lsp, media, tmp_path, cut_clip):
    clip = cut_clip(media["single_face"], 1.5)
    out = tmp_path / "out"
    first = prep_video(clip, out_dir=out)
    mtime = first.dataset.stat().st_mtime_ns
    r = lsp("prep", clip, "-o", out)
    assert r.exit_code == 0 and "reused" in r.output
    assert first.dataset.stat().st_mtime_ns == mtime
    r = lsp("prep", clip, "-o", out, "--force")
    assert r.exit_code == 0 and "written" in r.output
    assert first.dataset.stat().st_mtime_ns != mtime
    # a changed setting is refused (naming it) until --force replaces the dataset
    r = lsp("prep", clip, "-o", out, "--set", "ingest.jpeg_quality=70")
    assert r.exit_code == 1 and "ingest.jpeg_quality: 92 -> 70" in " ".join(r.output.split())
    r = lsp("prep", clip, "-o", out, "--set", "ingest.jpeg_quality=70", "--force")
    assert r.exit_code == 0 and "written" in r.output
    assert len(pd.read_csv(out / "manifest.csv")) == 1


@pytest.mark.slow
def test_interrupted_prep_resumes_without_redoing_tracking(media, tmp_path, cut_clip, monkeypatch):
    clip = cut_clip(media["single_face"], 1.5)
    out = tmp_path / "out"

    def interrupt(stage, done, total):
        if stage == "frames" and done >= 64:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prep_video(clip, out_dir=out, progress=interrupt)
    assert not (out / "cut.h5").exists()  # nothing looks finished
    assert (out / "cut.h5.partial").exists()

    def no_tracking(*a, **k):
        raise AssertionError("tracking ran again although it was cached")

    monkeypatch.setattr(track_stage, "track_faces", no_tracking)
    result = prep_video(clip, out_dir=out)
    schema.validate(result.dataset)
    assert not (out / "cut.h5.partial").exists() and not (out / cache.CACHE_DIR).exists()


@pytest.mark.slow
def test_rotation_metadata_is_honoured(media, tmp_path, cut_clip):
    """A phone video stored landscape with a 90 degree display rotation is prepped upright."""
    from lsp_prep.media import probe, run_ffmpeg

    clip = cut_clip(media["single_face"], 1.5)
    rotated = tmp_path / "rotated.mp4"
    # store the pixels rotated, and metadata that rotates them back for display
    run_ffmpeg(
        [
            "-y",
            "-i",
            str(clip),
            "-vf",
            "transpose=2",
            "-c:v",
            "libx264",
            "-c:a",
            "copy",
            str(tmp_path / "stored.mp4"),
        ]
    )
    run_ffmpeg(
        [
            "-y",
            "-display_rotation",
            "-90",
            "-i",
            str(tmp_path / "stored.mp4"),
            "-c",
            "copy",
            str(rotated),
        ]
    )
    info = probe(rotated)
    assert info.rotation in (90, 270) and (info.width, info.height) == (640, 360)
    result = prep_video(rotated, out_dir=tmp_path / "out")
    with h5py.File(result.dataset) as f:
        p = np.nanmedian(f["landmarks/lsp73"][:], axis=0)
    assert p[28, 1] < p[49, 1] < p[7, 1]  # upright: eyes above mouth above chin
    assert result.valid_fraction > 0.9


# ---------------------------------------------------------------- bad input


def test_missing_file(lsp, tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(lsp("prep", tmp_path / "nope.mp4", "-o", out), out, "no such file")


def test_not_a_video(lsp, tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n" * 50)
    out = tmp_path / "out"
    assert_clean_failure(lsp("prep", bogus, "-o", out), out, "not a video")


def test_image_is_not_a_video(lsp, media, tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(lsp("prep", media["astronaut"], "-o", out), out, "no video stream")


def test_audio_only_file_has_no_video_stream(lsp, speech_wav, tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(lsp("prep", speech_wav, "-o", out), out, "no video stream")


def test_no_audio_stream_suggests_audio_option(lsp, media, tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(
        lsp("prep", media["carphone"], "-o", out), out, "no audio stream", "--audio"
    )


@pytest.mark.slow
def test_no_face_anywhere(lsp, media, tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(lsp("prep", media["no_face"], "-o", out), out, "no face found")


def test_too_short(lsp, media, tmp_path, cut_clip):
    clip = cut_clip(media["single_face"], 0.5)
    out = tmp_path / "out"
    assert_clean_failure(lsp("prep", clip, "-o", out), out, "at least 1 s")


def test_output_dir_not_writable(lsp, media, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "sub"
    r = lsp("prep", media["single_face"], "-o", out)
    assert r.exit_code == 1 and "not writable" in r.output and "choose another -o" in r.output


def test_bad_override(lsp, media, tmp_path):
    r = lsp("prep", media["single_face"], "-o", tmp_path, "--set", "crop.zoom=3")
    assert r.exit_code == 1 and "bad override 'crop.zoom=3'" in r.output
    r = lsp("prep", media["single_face"], "-o", tmp_path, "--set", "crop.scale=0.5")
    assert r.exit_code == 1 and "crop.scale must be > 1" in r.output


def test_library_raises_instead_of_exiting(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        prep_video(tmp_path / "missing.mp4", out_dir=tmp_path)


def test_help_for_every_command(lsp):
    for args in (["--help"], ["prep", "--help"]):
        r = lsp(*args)
        assert r.exit_code == 0 and "Usage" in r.output
    assert "--force" in lsp("prep", "--help").output


def _speech(media, seconds: float) -> np.ndarray:
    from lsp_prep.media import load_audio

    return load_audio(media["speech"], sr=16000)[: int(seconds * 16000)]


@pytest.mark.slow
def test_several_faces_locks_on_the_largest_central_one(media, tmp_path):
    """Two people move in the frame: every tracked frame follows the target, never the other."""
    from lsp_prep.camera import to_original
    from lsp_prep.stages.crop import face_extent
    from lsp_synth.render2d import two_faces_clip

    truth = two_faces_clip(tmp_path / "two.mp4", duration_s=4.0, fps=30, audio=_speech(media, 4.0))
    result = prep_video(tmp_path / "two.mp4", out_dir=tmp_path / "out")
    with h5py.File(result.dataset) as f:
        valid = f["landmarks/valid"][:]
        pts = to_original(f["landmarks/lsp73"][:], f["crop/boxes"][:], 512)
    centres, _ = face_extent(pts)
    t60 = np.arange(len(valid)) / 60
    native = np.clip(np.round(t60 * 30).astype(int), 0, truth.target.n_frames - 1)

    def box_centre(boxes):
        return (boxes[native, :2] + boxes[native, 2:]) / 2

    tc, dc = box_centre(truth.target_box), box_centre(truth.distractor_box)
    size = (truth.target_box[:, 2] - truth.target_box[:, 0]).mean()
    d_target = np.linalg.norm(centres - tc, axis=1)[valid]
    d_other = np.linalg.norm(centres - dc, axis=1)[valid]
    assert valid.mean() > 0.9
    assert (d_target < 0.25 * size).all(), d_target.max() / size
    assert (d_other > d_target).all()


@pytest.mark.slow
def test_face_in_too_few_frames(lsp, media, tmp_path):
    """2.4 s with a face followed by 4 s without one: refused, nothing written."""
    from lsp_prep.media import run_ffmpeg

    clip = tmp_path / "mostly_empty.mp4"
    run_ffmpeg(
        [
            "-y",
            "-i",
            str(media["single_face"]),
            "-i",
            str(media["no_face"]),
            "-filter_complex",
            "[0:v]scale=640:360,setsar=1,fps=30[a];[1:v]scale=640:360,setsar=1,fps=30[b];"
            "[0:a]aresample=44100[x];[1:a]aresample=44100[y];"
            "[a][x][b][y]concat=n=2:v=1:a=1[v][au]",
            "-map",
            "[v]",
            "-map",
            "[au]",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            str(clip),
        ]
    )
    out = tmp_path / "out"
    assert_clean_failure(lsp("prep", clip, "-o", out), out, "face usable in only", "cut the clip")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fps", "size", "container"),
    [(25, (641, 361), "mkv"), (30, (640, 360), "mov"), (60, (480, 272), "mp4")],
)
def test_resampled_to_60_fps_by_timestamps(media, portrait, tmp_path, fps, size, container):
    """A synthetic clip with known, fast head motion at 25/30/60 fps and odd sizes: frame i
    of the dataset shows the source frame on screen at i/60 s, in any container."""
    from lsp_prep.camera import to_original
    from lsp_prep.stages.crop import face_extent
    from lsp_synth.render2d import Motion, render_talking_clip

    motion = Motion(shift_px=(50.0, 25.0), shift_hz=(0.6, 0.45), roll_deg=4.0, scale=0.03)
    clip = tmp_path / f"moving.{container}"
    truth = render_talking_clip(
        clip,
        image=portrait.image,
        duration_s=3.0,
        fps=fps,
        size=size,
        motion=motion,
        audio=_speech(media, 3.0),
        face_scale=0.8,
    )
    result = prep_video(clip, out_dir=tmp_path / "out")
    assert abs(result.n_frames - 180) <= 1
    with h5py.File(result.dataset) as f:
        valid = f["landmarks/valid"][:]
        pts = to_original(f["landmarks/lsp73"][:], f["crop/boxes"][:], 512)
    ours, _ = face_extent(pts)
    # the source frames around i / 60 s: the one shown then, or (timestamps rounded to the
    # container's time base) its neighbour at an exact tie
    centre = truth.map_points(portrait.face_centre[None])[:, 0]
    t = np.arange(result.n_frames) / 60 * fps
    lo = np.clip(np.floor(t).astype(int), 0, truth.n_frames - 1)
    hi = np.clip(lo + 1, 0, truth.n_frames - 1)
    offset = np.median(
        (ours - centre[np.clip(np.round(t).astype(int), 0, truth.n_frames - 1)])[valid], 0
    )
    err = np.minimum(
        np.linalg.norm(ours - offset - centre[lo], axis=1),
        np.linalg.norm(ours - offset - centre[hi], axis=1),
    )[valid]
    assert valid.mean() > 0.9
    assert np.percentile(err, 95) < 2.5, np.percentile(err, 95)


def test_shoulder_override_outside_the_image(lsp, media, tmp_path, cut_clip):
    clip = cut_clip(media["single_face"], 1.5)
    out = tmp_path / "out"
    r = lsp("prep", clip, "-o", out, "--set", "shoulders.points=[[100, 400], [600, 450]]")
    assert_clean_failure(r, out, "outside", "512")


@pytest.mark.slow
def test_shoulder_override_is_used(media, tmp_path, cut_clip):
    clip = cut_clip(media["single_face"], 1.5)
    result = prep_video(
        clip,
        out_dir=tmp_path / "out",
        config=PrepConfig().with_overrides(["shoulders.points=[[120, 460], [400, 470]]"]),
    )
    with h5py.File(result.dataset) as f:
        np.testing.assert_allclose(f["shoulders/points2d"][0], [[120, 460], [400, 470]], atol=1e-3)
        assert f["shoulders"].attrs["source"] == "user"


def test_dataset_of_the_previous_schema_is_refused(synthetic_copy):
    with h5py.File(synthetic_copy, "a") as f:
        f.attrs["schema_version"] = 1
    with pytest.raises(schema.SchemaError, match="re-run `lsp prep`"):
        reader.open_dataset(synthetic_copy)


def test_stage_table_owns_every_config_section_once():
    """Each config section belongs to one stage; a stage's key covers its upstream."""
    import dataclasses

    from lsp_prep.pipeline import STAGES, stage_sections

    owned = [s for stage in STAGES for s in stage.sections]
    assert sorted(owned) == sorted(f.name for f in dataclasses.fields(PrepConfig))
    assert set(stage_sections("pack")) == set(owned)
    assert stage_sections("geometry") == ("camera", "geometry", "ingest", "track")
    assert "crop" not in stage_sections("geometry")  # a new crop keeps the head track
