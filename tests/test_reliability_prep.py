"""Prep-side reliability and the signals of every command (issue 15): damaged caches and
outputs recomputed with a line saying so, an existing dataset never replaced silently,
truncated inputs and too-small faces refused with the fix, ``--set`` typed through one
path for prep, train and animate, SIGINT / SIGTERM / SIGKILL at random moments of prep,
training and animate followed by a rerun that gives exactly the uninterrupted result (or
a clean restart), and no traceback without ``--verbose``. Each case checks the exit code,
the message and the files left.

The model-side rows (bad ``--dataset``, presets on resume, output containers, another
person's dataset, hostile checkpoints) are in test_reliability_models.py.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest

from lsp_prep import cache
from lsp_prep.config import PrepConfig
from lsp_prep.dataset.writer import write_dataset
from lsp_prep.media import run_ffmpeg, sha256_file
from lsp_prep.pipeline import Job
from tests.conftest import synthetic_content
from tests.faults import (
    EXIT_AFTER,
    assert_same_content,
    h5_content,
    kill_chain,
    plan_kills,
    run_lsp,
    timed_run,
    wait_for_orphans,
)
from tests.test_reliability_models import fake_checkpoint, fake_run, flat, snapshot  # noqa: F401


def files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative), sorted; [] when it does not exist."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def one_error(result, *fragments: str) -> str:
    """Exit code 1, exactly one ``error:`` line holding every fragment, no traceback."""
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert text.count("error:") == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in text, text
    return text


@pytest.fixture(scope="module")
def clip(short_clip: Path) -> Path:
    """The short real clip (conftest.short_clip)."""
    return short_clip


# ------------------------------------------------------------ --set: one typed path


@pytest.mark.parametrize(
    ("command", "item", "fragments"),
    [
        ("prep", "crop.nonsense=1", ["'crop.nonsense=1'", "crop has keep_inside, offset_y, scale"]),
        ("prep", "nonsense.x=1", ["the config has camera, candidates, crop, features"]),
        ("prep", "ingest.jpeg_quality=abc", ["ingest.jpeg_quality=abc: expected an int"]),
        ("prep", "crop.scale=0.5", ["crop.scale must be > 1"]),
        ("train", "mouth_train.max_steps=abc", ["mouth_train.max_steps=abc: expected an int"]),
        ("train", "mouth_train.nonsense=1", ["mouth_train has batch_size, checkpoint_every"]),
        ("train", "mouth.delay=1.5", ["mouth.delay=1.5: expected an int"]),
        ("animate", "mouth_amp=big", ["mouth_amp=big: expected a JSON list"]),
        ("animate", "nonsense=1", ["the config has camera_lookahead_s, crf, lle_blend"]),
        ("animate", "crf=99", ["animate.crf must be in [0, 51], got 99"]),
    ],
)
def test_bad_set_refused_before_any_work(
    lsp,
    fake_run,  # noqa: F811 (the fixture imported above)
    clip,
    speech_wav,
    synthetic_dataset,
    tmp_path,
    command,
    item,
    fragments,
):
    """The same parser (lsp_prep.configtree) types every --set: unknown keys list the
    section's valid ones, values say what was expected; nothing is written or loaded
    (animate fails on its weightless checkpoints only after the models load)."""
    out = tmp_path / "out"
    before = snapshot(fake_run)
    if command == "prep":
        result = lsp("prep", clip, "-o", out, "--set", item)
    elif command == "train":
        result = lsp("train", "mouth", "-r", out, "--dataset", synthetic_dataset, "--set", item)
    else:
        args = ["-r", fake_run, "--audio", speech_wav, "--output", out / "x.mp4"]
        result = lsp("animate", *args, "--set", item)
    one_error(result, *fragments)
    assert not out.exists() and snapshot(fake_run) == before  # no animate.json either


# ------------------------------------------------------------ damaged caches


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # one byte inside the array data: the zip's CRC or ours sees it
        i = len(data) // 3
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    else:
        path.write_bytes(b"PK\x03\x04 not a zip any more")


@pytest.mark.parametrize("how", ["truncated", "flipped", "garbage"])
def test_damaged_cache_detected(tmp_path, how):
    arrays = {"mesh": np.arange(3000, dtype=np.float32).reshape(10, 100, 3), "n": np.array(3)}
    path = tmp_path / "track.npz"
    cache.save(path, "k1", arrays)
    got = cache.load(path, "k1")
    assert got is not None and all(np.array_equal(got[k], v) for k, v in arrays.items())
    assert cache.load(path, "k2") is None  # stale: another key, silently recomputed
    _damage(path, how)
    with pytest.raises(cache.Damaged):
        cache.load(path, "k1")


def test_checksum_catches_what_the_zip_does_not(tmp_path):
    """A cache whose arrays were changed but still form a valid zip fails its checksum."""
    path = tmp_path / "geometry.npz"
    cache.save(path, "k", {"x": np.zeros(5)})
    with np.load(path) as z:
        kept = {k: z[k] for k in z.files}
    kept["x"] = np.ones(5)
    np.savez(path, **kept)
    with pytest.raises(cache.Damaged, match="do not match their checksum"):
        cache.load(path, "k")


def test_damaged_cache_recomputed_with_a_note(tmp_path):
    job = Job(Path("clip.mp4"), None, PrepConfig(), tmp_path, "clip", "a" * 64, "")
    job.cache.mkdir(parents=True)
    first, hit = job.cached("track", lambda: {"x": np.arange(4)})
    assert not hit and job.notes == []
    _damage(job.cache / "track.npz", "truncated")
    again, hit = job.cached("track", lambda: {"x": np.arange(4)})
    assert not hit and np.array_equal(again["x"], first["x"])
    assert len(job.notes) == 1 and "damaged stage cache" in job.notes[0]
    assert "recomputing track" in job.notes[0] and str(job.cache / "track.npz") in job.notes[0]
    assert job.cached("track", lambda: {"x": np.zeros(1)})[1]  # the recomputed cache holds


# ------------------------------------------------------------ an existing dataset


def _existing(clip: Path, out: Path, *, key_of: PrepConfig = PrepConfig()) -> Path:
    """``out/clip.h5`` as prep would have written it for ``clip`` with ``key_of``, from the
    synthetic content (so no prep has to run): the real source hash, key and config."""
    job = Job(clip, None, key_of, out, clip.stem, sha256_file(clip), "")
    content = synthetic_content()
    content["attrs"].update(
        prep_key=job.key("pack"),
        source_sha256=job.source_sha,
        config=json.dumps(key_of.to_dict()),
    )
    out.mkdir(parents=True, exist_ok=True)
    return write_dataset(out / f"{clip.stem}.h5", **content)


def test_existing_dataset_with_same_settings_is_reused(lsp, clip, tmp_path):
    out = tmp_path / "out"
    final = _existing(clip, out)
    before = final.read_bytes()
    result = lsp("prep", clip, "-o", out)
    assert result.exit_code == 0, result.output
    assert "reused" in result.output and final.read_bytes() == before
    assert files(out) == ["clip.h5", "manifest.csv"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            ["--set", "ingest.jpeg_quality=70"],
            "other settings (ingest.jpeg_quality: 92 -> 70)",
        ),
        (
            ["--set", "crop.scale=2.0", "--set", "split.val_fraction=0.3"],
            "crop.scale: 2.2 -> 2.0; split.val_fraction: 0.2 -> 0.3",
        ),
        (["--audio", "SPEECH"], "with another speech track (--audio)"),
        (["OTHER"], "from another video than"),
    ],
)
def test_existing_dataset_never_replaced_silently(
    lsp, clip, speech_wav, tmp_path, change, fragment
):
    """Other settings, another speech track or another video of the same name: refused
    before any work, naming what differs; the dataset is left as it was."""
    out = tmp_path / "out"
    final = _existing(clip, out)
    before = final.read_bytes()
    video = clip
    if change == ["OTHER"]:  # dir2/clip.mp4: same name, other bytes
        video = tmp_path / "dir2" / "clip.mp4"
        video.parent.mkdir()
        run_ffmpeg(["-y", "-i", str(clip), "-t", "1.2", "-c", "copy", str(video)])
        change = []
    change = [str(speech_wav) if c == "SPEECH" else c for c in change]
    text = one_error(lsp("prep", video, "-o", out, *change), fragment)
    assert f"error: {final} exists, prepped " in text
    assert "pass --force to replace it, or choose another -o" in text
    assert final.read_bytes() == before and files(out) == ["clip.h5"]


def test_damaged_dataset_found_by_its_manifest_checksum(clip, tmp_path):
    """A dataset that opens and validates but is not the file the manifest recorded (a
    flipped byte in a frame) is damaged: prepped again, with a note."""
    from lsp_prep.dataset.manifest import PrepResult, update_manifest
    from lsp_prep.pipeline import _existing_is_reusable

    out = tmp_path / "out"
    final = _existing(clip, out)
    job = Job(clip, None, PrepConfig(), out, "clip", sha256_file(clip), "")
    update_manifest(out, PrepResult(final, 36, 0.6, 1, 1, 0, job.source_sha, sha256_file(final)))
    assert _existing_is_reusable(job) and job.notes == []
    with h5py.File(final, "a") as f:
        f["frames"][0] = np.frombuffer(bytes(f["frames"][0])[:-1] + b"\x00", np.uint8)
    assert not _existing_is_reusable(job)
    assert job.notes == [
        f"{final}: damaged (its SHA-256 differs from the one in manifest.csv); prepping it again"
    ]


# ------------------------------------------------------------ inputs


def test_truncated_input_refused(lsp, media, tmp_path):
    """An mp4 with its index (moov) at the front, cut in half: it opens and declares its
    full length, but half of its data is missing."""
    whole = tmp_path / "whole.mp4"
    src = str(media["single_face"])
    run_ffmpeg(
        ["-y", "-i", src, "-c:v", "libx264", "-c:a", "aac", "-movflags", "+faststart", str(whole)]
    )
    half = tmp_path / "half.mp4"
    data = whole.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    text = one_error(
        lsp("prep", half, "-o", out),
        f"error: {half}: the file is truncated: its container declares 2.4 s of video but the "
        "data ends at 1.1 s",
        f"`ffmpeg -i {half} -t 1.1 -c copy fixed.mp4`",
    )
    assert "interrupted download or copy" in text and not out.exists()
    # not truncated: the whole file, and a Matroska whose audio outlasts its video by 2.5 s
    from lsp_prep.stages.probe import check_complete

    longer = tmp_path / "longer.mkv"
    speech = str(media["speech"])
    mux = ["-map", "0:v", "-map", "1:a", "-t", "5", "-c:v", "copy", str(longer)]
    run_ffmpeg(["-y", "-i", str(whole), "-i", speech, *mux])
    check_complete(whole)
    check_complete(longer)


@pytest.mark.slow
def test_tiny_face_says_too_small_and_leaves_no_folder(lsp, media, tmp_path):
    """The real clip's face shrunk to 160x90 inside a 1280x720 frame: Face Mesh finds it on
    no frame; the message says it is too small and how to crop, and the output directory
    prep made is gone again. The suggested crop then preps."""
    tiny = tmp_path / "tiny.mp4"
    shrink = "scale=160:90,pad=1280:720:560:315"
    run_ffmpeg(["-y", "-i", str(media["single_face"]), "-t", "1.5", "-vf", shrink, str(tiny)])
    out = tmp_path / "out"
    text = one_error(
        lsp("prep", tiny, "-o", out),
        f"error: {tiny}: the face is too small to track (about ",
        "in 1280x720 frames",
        "film closer, or crop the video around the face",
    )
    assert not out.exists()
    crop = text.split("-vf crop=")[1].split()[0]
    w, h, x, y = (int(v) for v in crop.split(":"))
    assert w == h and 560 - w < x < 560 + 160 and 315 - h < y < 315 + 90  # around the face
    cropped = tmp_path / "cropped.mp4"
    run_ffmpeg(["-y", "-i", str(tiny), "-vf", f"crop={crop}", "-c:a", "copy", str(cropped)])
    assert lsp("prep", cropped, "-o", out).exit_code == 0


def test_features_on_no_frame_warn_with_a_message():
    """The features stage found nothing to measure and measure_clip gave no reason: the
    warning still says what happened (it was ``warning: clip.mp4: `` and nothing else)."""
    from lsp_prep.config import PrepConfig
    from lsp_prep.layout import load_layout
    from lsp_prep.stages.features.stage import refine_clip

    n = 10
    feats = {
        "points2d": np.zeros((n, 0, 2)),
        "points3d": np.zeros((0, 3)),
        "reference": np.array(4),
        "warning": np.array(""),
    }
    cfg = PrepConfig()
    head = object()
    refined = refine_clip(
        head,  # type: ignore[arg-type]
        feats,
        np.zeros((n, 73, 3)),
        np.ones(n, bool),
        frame_size=(640, 360),
        layout=load_layout(),
        camera=cfg.camera,
        geometry=cfg.geometry,
        config=cfg.features,
    )
    assert refined.head is head and refined.n_features.tolist() == [0] * n
    assert refined.warnings == [
        "no texture features found on the upper face of reference frame 4; head poses come "
        "from the landmarks alone (a face with little texture, or a blurred or dark clip: "
        "better light helps)"
    ]


@pytest.mark.slow
def test_mouth_on_a_clip_whose_val_split_is_within_the_look_ahead(tmp_path, one_thread):
    """A clip of a second or so: its val split (16 frames) is shorter than the mouth's 18-
    frame delay. Training warns that no validation error is measured instead of failing on
    an empty array (it was "unexpected ValueError: cannot reshape array of size 0")."""
    import dataclasses

    from lsp_models.config import load_preset
    from lsp_models.train.apc import train_apc
    from lsp_models.train.mouth import train_mouth

    dataset = write_dataset(tmp_path / "short.h5", **synthetic_content(n=80))
    cfg = load_preset("cpu-small", ["mouth.window=32"])
    two = {"max_steps": 2, "checkpoint_every": 2}
    common = {"run_dir": tmp_path / "run", "dataset": dataset, "device": "cpu"}
    with pytest.warns(UserWarning):
        train_apc(model=cfg.apc, config=dataclasses.replace(cfg.apc_train, **two), **common)
    with pytest.warns(UserWarning, match=r"val split has 16 frames, no more than .* \(18\)"):
        result = train_mouth(
            model=cfg.mouth, config=dataclasses.replace(cfg.mouth_train, **two), **common
        )
    assert result.steps == 2 and "val_mm" not in result.metrics
    assert (tmp_path / "run" / "mouth" / "mouth.pt").is_file()


# ------------------------------------------------------------ tracebacks and signals


def test_every_command_has_verbose(lsp):
    commands = [
        ["prep"],
        ["animate"],
        ["eval"],
        ["report"],
        ["convert-run"],
        ["doctor"],
        *(["train", s] for s in ("apc", "mouth", "headpose", "renderer", "all")),
    ]
    for args in commands:
        result = lsp(*args, "--help")
        assert result.exit_code == 0 and "--verbose" in result.output, args


def test_no_traceback_without_verbose(lsp, clip, tmp_path, monkeypatch):
    """An unforeseen failure (a bug) is one line; --verbose shows its traceback."""
    import lsp_prep.pipeline

    def boom(*args, **kwargs):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(lsp_prep.pipeline, "prep_video", boom)
    quiet = lsp("prep", clip, "-o", tmp_path)
    assert quiet.exit_code == 1 and "Traceback" not in quiet.output
    assert flat(quiet.output) == (
        "error: unexpected RuntimeError: something unexpected (run again with --verbose for "
        "the traceback, and please report it)"
    )
    loud = lsp("prep", clip, "-o", tmp_path, "--verbose")
    assert loud.exit_code == 1 and "Traceback" in loud.output and "boom" in loud.output


@pytest.mark.slow
def test_swallowed_sigint_still_stops_prep(lsp, clip, tmp_path, monkeypatch):
    """SIGINT lands where its KeyboardInterrupt is swallowed (as in a finaliser, which only
    prints "Exception ignored in ..."): prep still stops at its next progress step, says
    so, exits 130 and writes no dataset; the rerun resumes."""
    import lsp_prep.pipeline as pipeline

    real = pipeline.check_output_dir

    def interrupted_but_swallowed(out_dir: Path) -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0.05) if hasattr(signal, "sigtimedwait") else None
        except KeyboardInterrupt:
            pass  # what a finaliser does with it
        real(out_dir)

    monkeypatch.setattr(pipeline, "check_output_dir", interrupted_but_swallowed)
    out = tmp_path / "out"
    result = lsp("prep", clip, "-o", out)
    assert result.exit_code == 130, result.output
    assert flat(result.output) == "interrupted (SIGINT): run the same command again to resume"
    assert not (out / "clip.h5").exists()


def test_stale_animate_temporaries_removed(tmp_path):
    """A writer killed by SIGKILL leaves ``.x.tmpPID.mp4``; the next writer of x.mp4 removes
    it (its process is gone) but never a live writer's."""
    from lsp_prep.dataset.writer import remove_stale_temporaries

    dead = 2**22 + 12345  # above the default pid_max of 2^22: no such process
    stale = tmp_path / f".x.tmp{dead}.mp4"
    live = tmp_path / f".x.tmp{os.getppid()}.mp4"
    other = tmp_path / f".y.tmp{dead}.mp4"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path / "x.mp4", name="x", suffix=".mp4") == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def test_animate_estimate_after_measured_frames():
    """The estimate leaves out model loading (measured from the first progress call) and is
    said once: 300 s of audio at 217 ms per frame is 65 minutes, 64 of them left."""
    from cli.animate import with_estimate

    now = [100.0]
    said: list[str] = []
    calls: list[tuple] = []
    update = with_estimate(lambda *a: calls.append(a), say=said.append, clock=lambda: now[0])
    total = 18000
    update("animate", 60, total)  # after loading and the first chunk
    now[0] += 1.0
    update("animate", 65, total)  # under ESTIMATE_AFTER_S: nothing yet
    assert said == []
    now[0] += 0.217 * 60 - 1.0  # 60 frames at 217 ms since the first call
    update("animate", 120, total)
    now[0] += 50
    update("animate", 400, total)
    assert len(calls) == 4 and calls[-1] == ("animate", 400, total)
    assert said == ["estimate: 1 h 4 min left for 17880 of 18000 frames (217 ms per frame so far)"]


# ------------------------------------------------------------ fault injection (slow)


def _landed(outcomes, kills) -> int:
    """Kills that hit a running command; each ended it with its signal's exit code, and
    SIGINT or SIGTERM with one line and no traceback."""
    for o, k in zip(outcomes, kills, strict=True):
        if o.killed and o.exit_code != 0:
            assert o.exit_code == EXIT_AFTER[k.signal], (k, o.output)
            if k.signal != signal.SIGKILL:
                assert "Traceback" not in o.output and "interrupted (" in o.output, o.output
    return sum(o.killed and o.exit_code != 0 for o in outcomes)


@pytest.mark.slow
def test_prep_killed_at_random_resumes_to_the_same_dataset(clip, tmp_path):
    """2 seeds x 3 kills (SIGINT, SIGTERM, SIGKILL in a seeded order at seeded moments):
    no killed run leaves a file under the dataset's final name, and after each chain the
    rerun's dataset holds exactly the uninterrupted one's arrays and attributes. Every
    stage runs, the focal searches on fewer frames to keep the test short."""
    fewer = ["camera.n_frames=16", "features.calib_frames=16", "features.every=8"]
    sets = [a for s in fewer for a in ("--set", s)]
    ref, seconds = timed_run(
        ["prep", clip, "-o", tmp_path / "ref", *sets], log=tmp_path / "ref.log"
    )
    assert ref.exit_code == 0, ref.output
    want = h5_content(tmp_path / "ref" / "clip.h5")
    landed = 0
    for seed in range(2):
        out = tmp_path / f"seed{seed}"

        def nothing_final(outcome, out=out):
            if outcome.exit_code != 0:
                assert not (out / "clip.h5").exists() and not (out / "manifest.csv").exists()

        kills = plan_kills(seed, count=3, duration_s=seconds)
        args = ["prep", clip, "-o", out, *sets]
        logs = tmp_path / f"log{seed}"
        outcomes, final = kill_chain(args, kills, logs=logs, after_each=nothing_final)
        landed += _landed(outcomes, kills)
        assert final.exit_code == 0, final.output
        assert_same_content(h5_content(out / "clip.h5"), want)
        assert files(out) == ["clip.h5", "manifest.csv"]
    print(f"prep: {landed} of 6 kills landed")  # shown with pytest -s
    assert landed >= 4, landed


def _checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_checkpoint(got: dict, want: dict) -> None:
    """The same step, weights and optimizer state, exactly."""
    import torch

    assert got["step"] == want["step"]
    for part in ("model", "optimizer"):
        flat_got, flat_want = _leaves(got[part]), _leaves(want[part])
        assert flat_got.keys() == flat_want.keys(), part
        for key, value in flat_want.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(flat_got[key], value), (part, key)
            else:
                assert flat_got[key] == value, (part, key)


def _leaves(tree: object, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        return {
            k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{prefix}{key}/").items()
        }
    if isinstance(tree, list | tuple):
        return {
            k: v for i, sub in enumerate(tree) for k, v in _leaves(sub, f"{prefix}{i}/").items()
        }
    return {prefix: tree}


def _log_without_times(path: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for line in path.read_text().splitlines()
    ]


@pytest.mark.slow
def test_training_killed_at_random_resumes_to_the_same_weights(single_face_dataset, tmp_path):
    """The APC stage (a small GRU, 18 steps, a checkpoint every 3) killed 5 times in each
    of 3 seeded chains: every checkpoint under the final name loads, and the resumed run ends with
    exactly the uninterrupted run's step, weights, optimizer state and metrics log."""
    sets = [
        "apc.hidden=16",
        "apc.n_layers=1",
        "apc_train.max_steps=18",
        "apc_train.checkpoint_every=3",
        "apc_train.log_every=1",
        "apc_train.batch_size=1",
    ]
    common = ["--dataset", single_face_dataset, "--device", "cpu"]
    common += [a for s in sets for a in ("--set", s)]
    ref, seconds = timed_run(
        ["train", "apc", "-r", tmp_path / "ref", *common], log=tmp_path / "ref.log"
    )
    assert ref.exit_code == 0, ref.output
    want = _checkpoint(tmp_path / "ref" / "apc" / "apc.pt")
    assert want["step"] == 18
    landed = 0
    for seed in range(3):
        run = tmp_path / f"seed{seed}"

        def loads_if_there(outcome, run=run):
            """A checkpoint under the final name is a whole one; only SIGKILL leaves a
            temporary beside it (removed by the next save)."""
            if (run / "apc" / "apc.pt").exists():
                assert _checkpoint(run / "apc" / "apc.pt")["step"] % 3 == 0
            if outcome.exit_code != -signal.SIGKILL:
                assert list((run / "apc").glob(".apc.pt.tmp*")) == []

        kills = plan_kills(100 + seed, count=5, duration_s=seconds)
        args = ["train", "apc", "-r", run, *common]
        logs = tmp_path / f"log{seed}"
        outcomes, final = kill_chain(args, kills, logs=logs, after_each=loads_if_there)
        landed += _landed(outcomes, kills)
        assert final.exit_code == 0, final.output
        _assert_same_checkpoint(_checkpoint(run / "apc" / "apc.pt"), want)
        metrics = run / "apc" / "metrics.jsonl"
        assert _log_without_times(metrics) == _log_without_times(
            tmp_path / "ref" / "apc" / "metrics.jsonl"
        )
    print(f"training: {landed} of 15 kills landed")
    assert landed >= 10, landed


@pytest.mark.slow
def test_animate_killed_at_random_restarts_clean(trained_run, speech_wav, tmp_path):
    """animate killed by each signal: nothing under the output's name (nor its side file);
    SIGINT and SIGTERM remove their temporary file and say that nothing was written and
    animate cannot resume; after SIGKILL the next run removes the stale one. The rerun then
    writes the same number of frames as an uninterrupted run."""
    from lsp_models.infer.animate import side_file
    from tests.conftest import ffmpeg

    audio = tmp_path / "speech.wav"
    ffmpeg("-i", str(speech_wav), "-t", "0.6", str(audio))
    args = ["animate", "-r", trained_run, "--audio", audio, "--device", "cpu", "--fps", "30"]
    # the first run reads torch and the run's files from disk: the reference is the second
    warm = run_lsp([*args, "--output", tmp_path / "warm.mp4"], log=tmp_path / "warm.log")
    assert warm.exit_code == 0, warm.output
    ref, seconds = timed_run([*args, "--output", tmp_path / "ref.mp4"], log=tmp_path / "ref.log")
    assert ref.exit_code == 0, ref.output
    frames = json.loads((tmp_path / "ref.mp4.json").read_text())["frames"]
    out = tmp_path / "out" / "x.mp4"
    out.parent.mkdir()
    # inside the run with a margin at both ends: a run can be faster or slower than the
    # reference by a fifth as the machine's load changes
    kills = plan_kills(7, count=3, duration_s=0.85 * seconds, start_s=0.45 * seconds, chain=False)
    landed = 0
    stale: set[str] = set()
    for i, kill in enumerate(kills):
        outcome = run_lsp(
            [*args, "--output", out],
            log=tmp_path / f"kill{i}.log",
            kill=kill.signal,
            after_s=kill.after_s,
        )
        landed += _landed([outcome], [kill])
        if outcome.exit_code == 0 or out.exists():
            # finished before the signal, or it came while the summary printed: the
            # output is whole (exit 130/143 then says so, or, after the command's own
            # handling ended, just "interrupted")
            assert json.loads(side_file(out, ".json").read_text())["frames"] == frames
            if outcome.exit_code != 0 and "nothing was written" in flat(outcome.output):
                pytest.fail(f"{out} is there but animate said nothing was written")
            out.unlink()
            side_file(out, ".json").unlink()
            continue
        assert not side_file(out, ".json").exists()
        left = {p.name for p in out.parent.iterdir()}
        if kill.signal == signal.SIGKILL:
            # its ffmpeg, orphaned, finishes the temporary on its own (a moment later);
            # the next run that reaches its video writer removes it
            wait_for_orphans(f".x.tmp{outcome.pid}.mp4")
            left = {p.name for p in out.parent.iterdir()}
            assert all(name.startswith(".x.tmp") for name in left), left
            stale = left
        else:
            assert left <= stale, left - stale
            assert f"nothing was written under {out} (animate cannot resume)" in flat(
                outcome.output
            )
            assert "resume" not in flat(outcome.output).replace("cannot resume", "")
    final = run_lsp([*args, "--output", out], log=tmp_path / "final.log")
    assert final.exit_code == 0, final.output
    assert json.loads(side_file(out, ".json").read_text())["frames"] == frames
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.mp4", "x.mp4.json"]
    print(f"animate: {landed} of 3 kills landed")
    assert landed >= 2, landed


def test_output_folder_doc_names_every_column_and_cache():
    """docs/output-folder.md lists every manifest column and every cached stage."""
    from lsp_prep.dataset.manifest import COLUMNS
    from lsp_prep.pipeline import STAGES

    doc = (Path(__file__).parents[1] / "docs" / "output-folder.md").read_text()
    table = [ln.split("|")[1].strip(" `") for ln in doc.splitlines() if ln.startswith("| `")]
    assert [c for c in table if c in COLUMNS] == COLUMNS
    cached = [s.name for s in STAGES if s.cached]
    assert [s for s in cached if f"{s}.npz" in doc] == cached
    assert cache.CACHE_DIR in doc and ".partial" in doc
