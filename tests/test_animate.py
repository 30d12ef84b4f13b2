"""lsp animate: offline motion, streaming == offline, the mp4 and its timing, bad inputs."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from lsp_models.infer import animate as animate_module
from lsp_models.infer import video as video_module
from lsp_models.infer.animate import animate
from lsp_models.infer.config import AnimateConfig
from lsp_models.infer.loading import find_dataset, load_models, load_person, pose_history
from lsp_models.infer.motion import StreamSmoother, pingpong, smooth
from lsp_models.infer.predict import (
    feature_maps,
    n_frames,
    predict_motion,
    predict_mouth,
    render,
    resized_candidates,
    sample_poses,
    speech_features,
)
from lsp_models.infer.stream import AnimationStream, MelStream
from lsp_prep.errors import CheckpointError, InputError, ToolError
from lsp_prep.layout import load_layout
from lsp_prep.media import ffmpeg_exe, load_audio
from lsp_prep.stages.audio import video_log_mel

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000


@pytest.fixture(scope="module")
def speech(speech_wav) -> np.ndarray:
    """1.5 s of the real speech recording (16 kHz mono)."""
    y = load_audio(speech_wav, sr=SR)
    return y[SR : SR + 24000]


@pytest.fixture(scope="module")
def speech_file(speech, tmp_path_factory) -> Path:
    """That excerpt as a 44.1 kHz stereo mp3 (any format, rate and channel count)."""
    from lsp_prep.media import run_ffmpeg

    folder = tmp_path_factory.mktemp("speech")
    raw = folder / "cut.f32"
    raw.write_bytes(speech.astype("<f4").tobytes())
    out = folder / "speech.mp3"
    run_ffmpeg(
        [
            "-y",
            "-f",
            "f32le",
            "-ar",
            str(SR),
            "-ac",
            "1",
            "-i",
            str(raw),
            "-ar",
            "44100",
            "-ac",
            "2",
            str(out),
        ]
    )
    return out


@pytest.fixture(scope="module")
def loaded(trained_run, single_face_dataset):
    models = load_models(trained_run, device=torch.device("cpu"))
    return models, load_person(single_face_dataset)


def video_info(path: Path) -> dict:
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        n = sum(1 for _ in c.decode(video=0))
        return {
            "frames": n,
            "fps": float(v.average_rate),
            "video_s": n / float(v.average_rate),
            "audio_s": float(a.duration * a.time_base),
            "audio": a.codec_context.name,
            "video": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
        }


# --------------------------------------------------------------------- pure pieces


def test_smoothing_matches_scipy_and_streams():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3)).cumsum(0)
    np.testing.assert_allclose(
        smooth(x, 5.0), gaussian_filter1d(x, 5.0, axis=0, mode="nearest"), atol=1e-12
    )
    for ahead in (None, 7):
        sm = StreamSmoother(5.0, ahead=ahead)
        parts, pos = [], 0
        while pos < len(x):
            step = int(rng.integers(1, 9))
            parts.append(sm.push(x[pos : pos + step]))
            pos += step
        parts.append(sm.finish())
        np.testing.assert_allclose(np.concatenate(parts), smooth(x, 5.0, ahead=ahead), atol=1e-12)
    assert pingpong(np.arange(8), 10, 3).tolist() == [10, 11, 12, 11, 10, 11, 12, 11]


def test_streaming_mel_equals_prep_log_mel(speech):
    ms, parts, pos = MelStream(), [], 0
    while pos < len(speech):
        parts.append(ms.push(speech[pos : pos + 571]))
        pos += 571
    n = n_frames(len(speech))
    parts.append(ms.finish(2 * n))
    want = video_log_mel(speech, sr=SR, n_video_frames=n).T
    np.testing.assert_allclose(np.concatenate(parts), want, atol=1e-4)


def test_mouth_is_aligned_and_full_length(loaded, speech):
    models, _ = loaded
    cfg = AnimateConfig()
    n = n_frames(len(speech))
    feats = speech_features(models, speech, n=n + models.delay, config=cfg)
    dv = predict_mouth(models, feats[:n], lookahead=feats[n:])
    assert dv.shape == (n, 25, 3) == (90, 25, 3)
    with torch.no_grad():
        out, _ = models.mouth(torch.from_numpy(feats)[None])
    # frame i comes from the model's step i + delay: shifted, nothing dropped at the end
    np.testing.assert_allclose(dv[-1].ravel(), out[0, -1].numpy() + models.target_mean, atol=1e-6)


# ------------------------------------------------------------------------ motion


def mouth_opening(geometry_points: np.ndarray) -> np.ndarray:
    """Inner-lip gap (object y) per frame: lower inner lip 58-60 minus upper 61-63."""
    return geometry_points[:, [58, 59, 60], 1].mean(1) - geometry_points[:, [61, 62, 63], 1].mean(1)


def test_silence_still_mouth_speech_moves(loaded, speech):
    models, person = loaded
    cfg = AnimateConfig()
    talk = predict_motion(models, person, speech, config=cfg, seed=0)
    quiet = predict_motion(models, person, np.zeros_like(speech), config=cfg, seed=0)
    assert talk.n_frames == quiet.n_frames == 90
    moving = mouth_opening(talk.geometry["points3d"]).std()
    still = mouth_opening(quiet.geometry["points3d"][30:]).std()  # after the LSTM settles
    assert still < 0.2 * moving, (still, moving)
    # the rest of the face is replayed from the real track (blinks come from real data)
    eyes = list(load_layout().sets["eyes"])
    replay = person.replay_points(np.arange(90))
    np.testing.assert_allclose(talk.geometry["points3d"][:, eyes], replay[:, eyes])


def test_manifold_projection_equals_brute_force_and_chunks():
    """Animate's projection (norms precomputed, one matmul) against brute-force distances,
    on a low-rank database like APC features; chunked calls equal one call."""
    from lsp_models.infer.manifold import Manifold, project

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(8, 64, generator=g, dtype=torch.float64)
    db = torch.randn(3000, 8, generator=g, dtype=torch.float64) @ basis
    db = db + 0.05 * torch.randn(db.shape, generator=g, dtype=torch.float64)
    x = torch.randn(40, 8, generator=g, dtype=torch.float64) @ basis
    x = torch.cat([db[7:9], x])  # two features that are database entries
    m = Manifold(db)
    proj, w, idx = m.project(x, k=10)
    dist = torch.cdist(x, db, compute_mode="donot_use_mm_for_euclid_dist")
    want = dist.topk(10, largest=False).indices  # nearest first
    assert torch.equal(idx, want)
    assert torch.equal(idx[:2, 0], torch.tensor([7, 8]))
    torch.testing.assert_close(proj[:2], db[7:9], atol=0, rtol=0)
    torch.testing.assert_close(w.sum(-1), torch.ones(42, dtype=torch.float64))
    for t in range(2, len(x)):  # the documented weights, one feature at a time
        diff = db[want[t]] - x[t]  # (k, D)
        gram = diff @ diff.T
        gram = gram + 1e-3 * gram.trace() * torch.eye(10, dtype=torch.float64)
        ref = torch.linalg.solve(gram, torch.ones(10, dtype=torch.float64))
        torch.testing.assert_close(w[t], ref / ref.sum(), atol=1e-9, rtol=0)
        torch.testing.assert_close(proj[t], w[t] @ db[want[t]], atol=1e-9, rtol=0)
    p1, _, i1 = m.project(x, k=10, chunk=7)
    torch.testing.assert_close(p1, proj, atol=1e-12, rtol=0)
    assert torch.equal(i1, idx)
    p2, w2, i2 = project(x, db, k=10, blend=0.5)
    torch.testing.assert_close(p2, 0.5 * proj + 0.5 * x, atol=1e-12, rtol=0)
    assert torch.equal(i2, idx) and torch.equal(w2, w)
    with pytest.raises(InputError, match="project needs"):
        m.project(x[:, :5], k=10)
    with pytest.raises(InputError, match="k must be in"):
        m.project(x, k=3001)


def test_seed_and_temperature(loaded, speech):
    models, person = loaded
    cfg = AnimateConfig()
    feats = speech_features(models, speech, n=90, config=cfg)
    hist = pose_history(models, person.path)
    a = sample_poses(models, feats, history=hist, temperature=0.3, seed=1)
    b = sample_poses(models, feats, history=hist, temperature=0.3, seed=1)
    c = sample_poses(models, feats, history=hist, temperature=0.3, seed=2)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4
    z1 = sample_poses(models, feats, history=hist, temperature=0.0, seed=1)
    z2 = sample_poses(models, feats, history=hist, temperature=0.0, seed=2)
    np.testing.assert_array_equal(z1, z2)


def test_pose_from_replays_recorded_poses_and_prep_framing(loaded, single_face_dataset):
    import h5py

    models, person = loaded
    with h5py.File(single_face_dataset) as f:
        wav, boxes = f["audio/waveform"][:], f["crop/boxes"][:]
    mo = predict_motion(models, person, wav, config=AnimateConfig(), pose_from=single_face_dataset)
    assert mo.n_frames == len(boxes)
    np.testing.assert_allclose(mo.geometry["translation"], person.translation, atol=1e-5)
    from scipy.spatial.transform import Rotation

    rel = Rotation.from_rotvec(mo.geometry["rotation"]).inv() * Rotation.from_rotvec(
        person.rotation
    )
    assert np.degrees(rel.magnitude()).max() < 1e-3
    # the animated camera frames the recorded head the way prep cropped it
    assert np.abs(mo.geometry["boxes"] - boxes).max() < 4.0


@pytest.mark.parametrize("max_lookahead_s", [None, 0.3])
def test_streaming_equals_offline(loaded, speech, max_lookahead_s):
    """Offline and streaming agree frame for frame, with the official symmetric smoothing
    (look-ahead ~1 s) and in low-latency mode (no frame waits for more than the mouth
    model's 300 ms plus the mel window)."""
    models, person = loaded
    cfg = AnimateConfig(max_lookahead_s=max_lookahead_s)
    offline = predict_motion(models, person, speech, config=cfg, seed=5, temperature=0.3)
    stream = AnimationStream(models, person, config=cfg, seed=5, temperature=0.3)
    rng = np.random.default_rng(0)
    frames, pos, latency = [], 0, []
    while pos < len(speech):
        step = int(rng.integers(320, 1600))  # 20-100 ms
        pos += step
        got = stream.push(speech[pos - step : pos])
        latency += [pos / SR - (f.source + 1) / 60 for f in got]
        frames += got
    frames += stream.finish()
    assert [f.index for f in frames] == list(range(90))
    for key in ("face2d", "shoulders2d", "points3d", "boxes"):
        got = np.stack([f.geometry[key] for f in frames])
        np.testing.assert_allclose(got, offline.geometry[key], atol=1e-4, err_msg=key)
    maps = feature_maps(
        offline.geometry["face2d"], offline.geometry["shoulders2d"], size=models.image_size
    )
    fm = np.stack([f.feature_map for f in frames])
    assert (np.abs(fm.astype(int) - maps).max(axis=(1, 2)) <= 1).mean() > 0.95
    cand = torch.from_numpy(resized_candidates(person, models.image_size))
    # rendered from its own maps: where a map differs (an anti-aliased pixel of a line whose
    # end moved 1e-5 px flips, 2 of 90 frames with the residual head pose) so may the image
    want = render(models, fm, cand, config=cfg)
    got = np.stack([f.image for f in frames])
    assert np.abs(got.astype(int) - want).max() <= 1
    # every frame waited for no more audio than the declared look-ahead
    assert max(latency) <= stream.lookahead_s + 0.1 + 1e-9
    if max_lookahead_s is not None:
        assert stream.lookahead_s <= max_lookahead_s + 0.02  # + the analysis window
    else:
        assert stream.lookahead_s > 0.9  # sigma 10 frames x 4 on translation, then camera
    print(
        f"streaming look-ahead {stream.lookahead_s * 1e3:.0f} ms, measured max "
        f"{max(latency) * 1e3:.0f} ms of audio beyond the frame"
    )


# ---------------------------------------------------------------------------- mp4


@pytest.mark.parametrize("fps", [60, 30])
def test_animate_mp4(trained_run, single_face_dataset, speech_file, tmp_path, fps):
    out = tmp_path / "sub" / "talk.mp4"
    start = time.perf_counter()
    result = animate(
        run_dir=trained_run,
        audio=speech_file,
        output=out,
        dataset=single_face_dataset,
        fps=fps,
        save_intermediates=fps == 60,
        device="cpu",
        seed=1,
    )
    info = video_info(out)
    seconds = result.seconds
    assert abs(seconds - 1.5) < 0.03  # mp3 padding aside
    assert info["frames"] == result.frames == int(np.ceil(seconds * fps - 1e-9))
    assert info["video"] == "h264" and info["audio"] == "aac" and info["pix_fmt"] == "yuv420p"
    assert abs(info["video_s"] - info["audio_s"]) <= 1 / fps + 0.03
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["config"]["mouth_amp"] == [1.5, 1.5, 1.5] and side["frames"] == result.frames
    assert set(result.timings) >= {
        "mel",
        "apc",
        "projection",
        "mouth",
        "headpose",
        "renderer",
        "encoding",
    }
    assert 0 < sum(result.timings.values()) <= time.perf_counter() - start
    assert (trained_run / "animate.json").is_file()
    if fps == 60:
        z = np.load(out.with_name("talk.mp4.npz"))
        assert z["face2d"].shape == (result.frames, 73, 2)
        assert video_info(out.with_name("talk.mp4.features.mp4"))["frames"] == result.frames
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_cli_animate_and_bad_inputs(lsp, trained_run, single_face_dataset, speech_file, tmp_path):
    out = tmp_path / "cli.mp4"
    base = ["animate", "-r", str(trained_run), "--dataset", str(single_face_dataset)]
    r = lsp(
        *base,
        "--audio",
        str(speech_file),
        "--output",
        str(out),
        "--fps",
        "30",
        "--stream",
        "--set",
        "mouth_amp=[2,2,2]",
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    assert "renderer" in r.output and video_info(out)["frames"] == 45

    def fails(args: list[str], message: str) -> None:
        r = lsp(*args)
        assert r.exit_code == 1 and message in " ".join(r.output.split()), r.output

    tiny = tmp_path / "tiny.wav"
    _wav(tiny, np.zeros(100, np.float32))
    fails([*base, "--audio", str(tiny), "--output", str(out)], "shorter than one video frame")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF" + b"\x00" * 50)
    fails([*base, "--audio", str(junk), "--output", str(out)], "not a video or audio file")
    fails([*base, "--audio", str(tmp_path / "none.wav"), "--output", str(out)], "no such file")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fails(
        [*base, "--audio", str(speech_file), "--output", str(blocker / "o.mp4")], "not a writable"
    )
    empty_run = tmp_path / "run2"
    shutil.copytree(trained_run, empty_run)
    shutil.rmtree(empty_run / "headpose")
    fails(
        [
            "animate",
            "-r",
            str(empty_run),
            "--dataset",
            str(single_face_dataset),
            "--audio",
            str(speech_file),
            "--output",
            str(out),
        ],
        "run `lsp train headpose` first",
    )
    fails(
        [*base, "--audio", str(speech_file), "--output", str(out), "--set", "bogus=1"], "bad --set"
    )
    fails([*base, "--audio", str(speech_file), "--output", str(out), "--fps", "25"], "60 or 30")
    old = tmp_path / "old.h5"
    shutil.copy(single_face_dataset, old)
    import h5py

    with h5py.File(old, "a") as f:
        f.attrs["schema_version"] = 1
    fails(
        [
            "animate",
            "-r",
            str(trained_run),
            "--dataset",
            str(old),
            "--audio",
            str(speech_file),
            "--output",
            str(out),
        ],
        "schema version 1",
    )


def test_silent_audio_animates(trained_run, single_face_dataset, tmp_path):
    quiet = tmp_path / "quiet.wav"
    _wav(quiet, np.zeros(SR // 2, np.float32))
    out = tmp_path / "quiet.mp4"
    result = animate(
        run_dir=trained_run,
        audio=quiet,
        output=out,
        dataset=single_face_dataset,
        device="cpu",
        fps=30,
    )
    assert video_info(out)["frames"] == result.frames == 15


def test_ffmpeg_failure_leaves_nothing(
    trained_run, single_face_dataset, speech_file, tmp_path, monkeypatch
):
    fake = tmp_path / "ffmpeg-broken"
    fake.write_text("#!/bin/sh\necho 'Unknown encoder libx264' >&2\nexit 1\n")
    fake.chmod(0o755)
    real = ffmpeg_exe()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.setattr(animate_module, "iter_audio", _decode_with(real))
    monkeypatch.setattr(video_module, "ffmpeg_exe", lambda: str(fake))
    with pytest.raises(ToolError, match="Unknown encoder libx264"):
        animate(
            run_dir=trained_run,
            audio=speech_file,
            output=out_dir / "x.mp4",
            dataset=single_face_dataset,
            device="cpu",
        )
    assert list(out_dir.iterdir()) == []


def test_missing_checkpoint_and_dataset(tmp_path, trained_run):
    with pytest.raises(CheckpointError, match="run `lsp train apc` first"):
        load_models(tmp_path, device=torch.device("cpu"))
    with pytest.raises(InputError, match="--dataset"):
        find_dataset(tmp_path)


def _decode_with(exe: str):
    def decode(path, *, chunk, sr=SR):
        from lsp_prep.media import load_audio

        y = load_audio(path, sr=sr)
        for s in range(0, len(y), chunk):
            yield y[s : s + chunk]

    return decode


def _wav(path: Path, y: np.ndarray) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(y, -1, 1) * 32767).astype("<i2").tobytes())
